"""Boot the fake webui the way AUTOMATIC1111 v1.10.1 boots, with lora_ext installed as a user extension.

``Webui`` reproduces ``initialize_rest`` + ``webui.py`` (A1111_CONTRACT §2): list extensions (built-ins first),
``scripts.load_scripts()`` (our ``scripts/lora_ext_script.py`` imported by path, root on ``sys.path`` only during the
import, §1.2), wipe and re-create the page and network registries, ``before_ui`` callbacks, script runners. A fake
built-in ``Lora`` extension lives in a temporary ``extensions-builtin/Lora``; its one script registers a marker
``lora`` network in ``on_before_ui`` like the real one, so tests see who wins the tag.

``fake_modules()`` puts ``tests/fake_webui`` on ``sys.path`` and, on exit, removes every ``modules*`` entry and every
bare name it added from ``sys.modules`` so other tests are unaffected.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FAKE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = FAKE_ROOT.parent.parent

#: Bare module names the built-in Lora extension owns once imported (A1111_CONTRACT §1.3).
BUILTIN_MODULE_NAMES = ("network", "networks", "lora", "lora_patches", "lora_logger", "extra_networks_lora")

FAKE_BUILTIN_SCRIPT = """
from modules import extra_networks, script_callbacks


class BuiltinLoraNetwork(extra_networks.ExtraNetwork):
    calls = []

    def __init__(self):
        super().__init__("lora")

    def activate(self, p, params_list):
        BuiltinLoraNetwork.calls.append([list(x.items) for x in params_list])

    def deactivate(self, p):
        pass


def before_ui():
    net = BuiltinLoraNetwork()
    extra_networks.register_extra_network(net)
    extra_networks.register_extra_network_alias(net, "lyco")


script_callbacks.on_before_ui(before_ui)
"""


@contextlib.contextmanager
def fake_modules() -> Iterator[None]:
    """Make ``import modules`` find the fake; undo everything on exit."""
    before = set(sys.modules)
    saved_path = list(sys.path)
    sys.path.insert(0, str(FAKE_ROOT))
    try:
        yield
    finally:
        for name in list(sys.modules):
            if name == "modules" or name.startswith("modules."):
                del sys.modules[name]
            elif name in BUILTIN_MODULE_NAMES and name not in before:
                del sys.modules[name]
        sys.path[:] = saved_path


class Webui:
    """A booted fake webui in ``root`` (a temporary folder) with lora_ext as a user extension.

    builtin_enabled: whether the built-in Lora extension is active (else it is listed in ``disabled_extensions``).
    """

    def __init__(self, root: Path, builtin_enabled: bool = False) -> None:
        self.root = Path(root)
        self.builtin_enabled = builtin_enabled
        self.lora_dir = self.root / "models" / "Lora"
        self.lyco_dir = self.root / "models" / "LyCORIS"
        self.builtin_dir = self.root / "extensions-builtin" / "Lora"
        self.started = False

    def start(self) -> Webui:
        from modules import (
            cache,
            extensions,
            extra_networks,
            paths,
            script_callbacks,
            scripts,
            shared,
            ui_extra_networks,
        )

        paths.data_path = str(
            self.root
        )  # the webui's data folder; modules.cache keeps its cache_dir under it
        cache.cache_dir = str(self.root / "cache")

        (self.builtin_dir / "scripts").mkdir(parents=True, exist_ok=True)
        (self.builtin_dir / "scripts" / "lora_script.py").write_text(FAKE_BUILTIN_SCRIPT)
        self.lora_dir.mkdir(parents=True, exist_ok=True)
        shared.cmd_opts.lora_dir = str(self.lora_dir)
        shared.cmd_opts.lyco_dir_backcompat = str(self.lyco_dir)
        if not self.builtin_enabled:
            shared.opts.disabled_extensions = ["Lora"]
        extensions.list_extensions(builtin_dirs=[str(self.builtin_dir)], extra_dirs=[str(REPO_ROOT)])
        scripts.load_scripts()  # §2 step 2
        ui_extra_networks.initialize()  # §2 step 4
        ui_extra_networks.register_default_pages()
        extra_networks.initialize()  # §2 step 5
        extra_networks.register_default_extra_networks()
        script_callbacks.before_ui_callback()  # webui.py
        scripts.create_script_runners()
        self.started = True
        return self

    def stop(self) -> None:
        """UI reload / shutdown: ``script_unloaded`` callbacks (§2)."""
        if self.started:
            from modules import script_callbacks

            script_callbacks.script_unloaded_callback()
            self.started = False

    # -- models -----------------------------------------------------------------------------------------------------

    def load_model(self, family: str = "sd1", seed: int = 0) -> Any:
        """Load a fresh tiny A1111-shaped model (startup load: fires ``model_loaded``)."""
        from modules import sd_models

        model = tiny_model(family, seed)
        sd_models.set_model(model)
        return model

    # -- generation -------------------------------------------------------------------------------------------------

    def txt2img(self, prompt: str, **kwargs: Any) -> tuple[Any, Any]:
        """Run ``process_images`` on a txt2img ``p``; returns (Processed, p)."""
        from modules import processing, scripts

        p = processing.StableDiffusionProcessingTxt2Img(
            prompt=prompt, scripts=scripts.scripts_txt2img, **kwargs
        )
        return processing.process_images(p), p

    def client(self) -> Any:
        """A FastAPI TestClient after ``app_started`` callbacks registered their routes."""
        from fastapi import FastAPI
        from fastapi.testclient import TestClient
        from modules import script_callbacks

        app = FastAPI()
        script_callbacks.app_started_callback(None, app)
        return TestClient(app)

    def paste(self, infotext: str) -> dict:
        from modules import infotext_utils

        return infotext_utils.paste_infotext(infotext)


_PRISTINE: dict[tuple[str, int], Any] = {}


def tiny_model(family: str = "sd1", seed: int = 0) -> Any:
    """A fresh copy of the tiny A1111 model of ``family``/``seed`` (built once per process, then deep-copied)."""
    import copy

    from tiny_models import a1111_model

    key = (family, seed)
    if key not in _PRISTINE:
        _PRISTINE[key] = a1111_model(family, seed)
    return copy.deepcopy(_PRISTINE[key])


def lora_host() -> Any:
    """The ``A1111Host`` created by the last script load."""
    from lora_ext.hosts.a1111 import wiring

    return wiring.current_host
