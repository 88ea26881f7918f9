"""The extension loads in the fake webui exactly as the webui loads it (A1111_CONTRACT §1.2–1.4, §2, §7), with the
built-in's bare module names present, and behaves correctly with the built-in enabled or disabled."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
from fake_webui.harness import BUILTIN_MODULE_NAMES, REPO_ROOT, Webui, fake_modules, lora_host

BUILTIN_KEYS = (
    "sd_lora",
    "lora_preferred_name",
    "lora_add_hashes_to_infotext",
    "lora_bundled_ti_to_infotext",
    "lora_show_all",
    "lora_hide_unknown_for_versions",
    "lora_in_memory_limit",
    "lora_not_found_warning_console",
    "lora_not_found_gradio_warning",
    "lora_functional",
)


@pytest.fixture
def booted(tmp_path, request):
    builtin_enabled = getattr(request, "param", False)
    with fake_modules():
        webui = Webui(tmp_path, builtin_enabled=builtin_enabled)
        try:
            yield webui
        finally:
            webui.stop()


def test_script_file_loads_by_path_and_registers_only_our_script(booted):
    import os

    from modules import scripts

    path_before = list(sys.path)
    booted.start()
    ours = [d for d in scripts.scripts_data if d.path.startswith(str(REPO_ROOT))]
    assert len(ours) == 1
    assert ours[0].script_class is not scripts.Script  # the base class was not imported into the namespace
    assert ours[0].module.__name__ == "lora_ext_script.py"  # spec_from_file_location(basename)
    assert "lora_ext_script.py" not in sys.modules and "lora_ext_script" not in sys.modules
    assert sys.path == path_before  # the extension root was on sys.path only during the import
    runner = scripts.scripts_txt2img
    assert [type(s).__name__ for s in runner.alwayson_scripts] == ["LoraExtScript"]
    assert runner.alwayson_scripts[0].title() == "lora_ext"
    assert os.path.basename(os.path.dirname(ours[0].path)) == "scripts"


def test_nothing_collides_with_the_builtins_bare_module_names(booted):
    planted = {}
    for name in BUILTIN_MODULE_NAMES:
        planted[name] = types.ModuleType(name)
        sys.modules[name] = planted[name]
    booted.start()
    for name, module in planted.items():
        assert sys.modules[name] is module  # ours never replaced a name someone else owns
    top_level = {p.stem for p in REPO_ROOT.glob("*.py")} | {p.name for p in REPO_ROOT.iterdir() if p.is_dir()}
    assert not top_level & set(BUILTIN_MODULE_NAMES)


def test_before_ui_registers_network_alias_and_one_word_page(booted):
    from modules import extra_networks, ui_extra_networks

    booted.start()
    network = extra_networks.extra_network_registry["lora"]
    assert type(network).__name__ == "ExtraNetworkLoraExt"
    assert extra_networks.extra_network_aliases["lyco"] is network
    titles = [p.title for p in ui_extra_networks.extra_pages]
    assert titles == ["Lora"]
    page = ui_extra_networks.extra_pages[0]
    assert page.name == page.extra_networks_tabname == "lora"
    assert str(booted.lora_dir) in ui_extra_networks.allowed_dirs


def test_builtin_setting_keys_registered_with_same_defaults(booted):
    from modules import shared

    booted.start()
    for key in BUILTIN_KEYS:
        assert key in shared.opts.data_labels, key
    assert shared.opts.lora_preferred_name == "Alias from file"
    assert shared.opts.lora_add_hashes_to_infotext is True
    assert shared.opts.lora_hide_unknown_for_versions == []
    assert shared.opts.data_labels["sd_lora"].section == ("extra_networks", "Extra Networks")
    assert shared.opts.data_labels["lora_ext_hide_incompatible"].section == (
        "extra_networks",
        "Extra Networks",
    )


def test_in_memory_limit_setting_drives_the_loader_cache(booted):
    from modules import shared

    booted.start()
    shared.opts.set("lora_in_memory_limit", 9)
    assert lora_host().loader.max_cached == 9


def test_patch_strategy_setting_reaches_the_patcher(booted):
    """Issue 3: the backup strategy is a setting (auto by default)."""
    from modules import shared

    booted.start()
    booted.load_model("sd1")
    host = lora_host()
    assert host.patch_strategy == "auto"
    state = host.state_for(shared.sd_model)
    shared.opts.set("lora_ext_patch_strategy", "copy")
    assert host.patch_strategy == "copy" and state.patcher.strategy == "copy"
    shared.opts.set("lora_ext_patch_strategy", "nonsense")
    assert host.patch_strategy == "auto"


@pytest.mark.parametrize("booted", [True], indirect=True)
def test_builtin_enabled_we_do_not_fight_for_the_tag(booted, capsys):
    from modules import extra_networks, shared, ui_extra_networks

    booted.start()
    out = capsys.readouterr().out
    assert out.count("built-in Lora extension is still enabled") == 1
    assert "[lora_ext] The webui's built-in" in out  # one prefix, not "[lora_ext] lora_ext: …"
    assert type(extra_networks.extra_network_registry["lora"]).__name__ == "BuiltinLoraNetwork"
    assert type(extra_networks.extra_network_aliases["lyco"]).__name__ == "BuiltinLoraNetwork"
    assert [p.title for p in ui_extra_networks.extra_pages] == []
    assert "lora_preferred_name" not in shared.opts.data_labels  # the built-in registers its own keys
    assert "lora_ext_hide_incompatible" in shared.opts.data_labels
    assert "networks" not in sys.modules or not getattr(sys.modules["networks"], "__lora_ext_compat__", False)

    from lora_ext.hosts.a1111 import builtin

    message = builtin.disable_builtin()
    assert "restart" in message.lower()
    assert "Lora" in shared.opts.disabled_extensions


@pytest.mark.parametrize("booted", [True], indirect=True)
def test_builtin_enabled_tab_shows_how_to_disable(booted):
    from modules import script_callbacks

    booted.start()
    tabs = script_callbacks.ui_tabs_callback()
    block, title, elem_id = tabs[0]
    assert (title, elem_id) == ("LoRA", "lora_ext_tab")
    config = block.get_config_file()
    texts = [c.get("props", {}).get("value") for c in config["components"]]
    assert any(isinstance(t, str) and "built-in Lora extension is still enabled" in t for t in texts)


def test_compat_modules_mirror_active_loras(booted, tmp_path):
    from fake_webui.lora_fixtures import write_lora

    booted.start()
    import lora
    import networks

    write_lora(booted.lora_dir, "x", "sd1", seed=1)
    networks.list_available_networks()
    assert "x" in networks.available_networks and "x" in lora.available_loras
    model = booted.load_model("sd1")
    seen = []
    booted.txt2img(
        "a <lora:x:0.7>",
        sampling_probe=lambda p, n: seen.append(
            [(n.name, n.te_multiplier) for n in networks.loaded_networks]
        ),
    )
    assert seen == [[("x", 0.7)]]
    assert networks.loaded_networks == [] and lora.loaded_loras == []
    assert model is not None
    booted.stop()
    assert "networks" not in sys.modules and "lora" not in sys.modules


def test_reload_restores_and_recreates_the_host(booted, tmp_path):
    from modules import scripts

    booted.start()
    first = lora_host()
    booted.stop()  # script_unloaded
    scripts.load_scripts()
    assert lora_host() is not first


def test_install_py_installs_nothing_and_says_so():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "install.py")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "nothing to install" in result.stdout


def test_lora_tab_builds_with_builtin_disabled(booted, tmp_path):
    from modules import script_callbacks

    booted.start()
    booted.load_model("sd1")
    tabs = script_callbacks.ui_tabs_callback()
    assert [(title, elem_id) for _, title, elem_id in tabs] == [("LoRA", "lora_ext_tab")]
    config = tabs[0][0].get_config_file()
    texts = [c.get("props", {}).get("value") for c in config["components"]]
    assert not any(isinstance(t, str) and "still enabled" in t for t in texts)


def test_host_package_imports_webui_modules_only_inside_functions():
    """CONTRACT §1.3 / architecture: ``modules.*`` is imported at call time, never at module level."""
    import ast

    def webui_imports(nodes) -> list[str]:
        names = []
        for node in nodes:
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.append(node.module or "")
        return [n for n in names if n == "modules" or n.startswith("modules.")]

    package = REPO_ROOT / "lora_ext" / "hosts" / "a1111"
    for path in sorted(package.glob("*.py")) + [REPO_ROOT / "scripts" / "lora_ext_script.py"]:
        assert webui_imports(ast.parse(path.read_text()).body) == [], path  # module level only
    for path in (REPO_ROOT / "lora_ext").rglob("*.py"):
        if "a1111" not in path.parts:
            assert webui_imports(ast.walk(ast.parse(path.read_text()))) == [], path  # nowhere else at all


def test_ui_reload_lets_the_old_host_go(booted, tmp_path):
    """A UI reload re-imports the script and builds a new host; nothing the webui keeps (option handlers such as
    ``list_hidden_files``'s, which outlive ``clear_callbacks``) may keep the old one and its parsed LoRAs alive."""
    import gc
    import weakref

    from modules import shared

    booted.start()
    first = weakref.ref(lora_host())
    for _ in range(2):
        booted.stop()  # script_unloaded
        booted.start()  # initialize_rest(reload_script_modules=True)
    gc.collect()
    assert first() is None
    shared.opts.set("list_hidden_files", False)  # the handler still reaches the current host
    assert lora_host()._library is None
