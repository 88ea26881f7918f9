"""A1111 host follow-ups: library cache in the webui's cache folder, ``list_hidden_files``, refresh reports on the
console, embedded covers and "Replace preview" in our tab, low-VRAM moves restored, and ``networks.load_networks``
for extensions that call the built-in (A1111_CONTRACT §1.3, §8.4, §9.2, §12)."""

from __future__ import annotations

import base64
import io
import json
import sys
from types import SimpleNamespace

import pytest
import torch
from fake_webui.harness import Webui, fake_modules, lora_host
from fake_webui.lora_fixtures import (
    expected_state,
    install,
    move_everything,
    same_state,
    sd1_webui,
    state,
    write_lora,
)
from PIL import Image


def png_bytes(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


COVER = png_bytes((0, 180, 20))


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("followup_loras")
    cover = json.dumps([base64.b64encode(COVER).decode()])
    return {
        "x": write_lora(folder, "x", "sd1", seed=1),
        "y": write_lora(folder, "y", "sd1", seed=2),
        "covered": write_lora(folder, "covered", "sd1", seed=3, metadata={"ssmd_cover_images": cover}),
    }


@pytest.fixture
def webui(tmp_path, store):
    with sd1_webui(tmp_path, {"x": store["x"], "y": store["y"]}) as w:
        yield w


def test_library_cache_lives_in_the_webui_cache_folder(webui):
    webui.txt2img("a photo <lora:x:1>")
    assert (webui.root / "cache" / "lora_ext" / "library.json").is_file()
    assert not list(webui.lora_dir.glob(".lora_ext*"))  # nothing written into the user's LoRA folder


@pytest.mark.parametrize("listed", [True, False])
def test_list_hidden_files_option_decides_whether_dot_folders_are_scanned(tmp_path, store, listed):
    with fake_modules():
        from modules import shared

        w = Webui(tmp_path).start()
        try:
            w.load_model("sd1")
            w.txt2img("a photo <lora:x:1>")  # the library exists before the option changes
            shared.opts.set("list_hidden_files", listed)
            install(store["x"], w.lora_dir / ".private", "hidden_x")
            processed, _ = w.txt2img("a photo <lora:hidden_x:1>")
            assert ("Lora not found: hidden_x" in processed.comments) is not listed
        finally:
            w.stop()


def test_refresh_prints_duplicates_and_problems_to_the_console(webui, store, capsys):
    webui.txt2img("a photo <lora:x:1>")  # the library is built on first use
    install(store["y"], webui.lora_dir / "sub", "x")  # a second "x" in a subfolder
    (webui.lora_dir / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    capsys.readouterr()
    lora_host().refresh()
    out = capsys.readouterr().out
    assert "duplicate name(s)" in out and "duplicate:" in out
    assert "broken.safetensors" in out


def test_embedded_cover_is_served_to_the_tab_and_files_use_the_webui_thumbnail_route(webui, store):
    from lora_ext.hosts.a1111.tab import tab_host

    install(store["covered"], webui.lora_dir, "covered")
    host = lora_host()
    host.refresh()
    th = tab_host(host)
    covered = next(e for e in host.library.entries() if e.name == "covered")
    url = th.preview_url(covered)
    assert url is not None
    response = webui.client().get("/" + url.lstrip("./"))
    assert response.status_code == 200 and response.content == COVER

    plain = next(e for e in host.library.entries() if e.name == "x")
    assert th.preview_url(plain) is None  # no preview at all: the placeholder
    Image.new("RGB", (8, 8)).save(webui.lora_dir / "x.png")
    host.refresh()
    plain = next(e for e in host.library.entries() if e.name == "x")
    assert th.preview_url(plain).startswith("./sd_extra_networks/thumb?filename=")


def test_last_generated_image_reaches_the_tab_for_replace_preview(webui):
    from modules import scripts

    from lora_ext.hosts.a1111.tab import tab_host

    host = lora_host()
    assert tab_host(host).last_image() is None
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    ours = [s for s in scripts.scripts_txt2img.alwayson_scripts if s.title() == "lora_ext"]
    assert ours, [s.title() for s in scripts.scripts_txt2img.alwayson_scripts]
    ours[0].postprocess(SimpleNamespace(), SimpleNamespace(images=[torch.zeros(1), image]))
    assert tab_host(host).last_image() is image


def test_low_vram_moves_are_restored_not_forgotten(webui, store):
    webui.model.lowvram = True
    seen = {}

    def probe(p, name):
        seen[name] = state(webui.model)
        move_everything(webui.model)  # the webui moved the patched modules while sampling

    webui.txt2img("a photo <lora:x:0.8:hr=0.4>", enable_hr=True, sampling_probe=probe)
    assert same_state(seen["first"], expected_state("sd1", [(store["x"], 0.8, 0.8)])) == []
    assert same_state(seen["hires"], expected_state("sd1", [(store["x"], 0.4, 0.4)])) == []
    assert same_state(state(webui.model), webui.original) == []


def test_networks_load_networks_patches_through_lora_ext(webui, store):
    networks = sys.modules["networks"]
    assert getattr(networks, "__lora_ext_compat__", False)
    networks.load_networks(["x", "y"], te_multipliers=[0.5, 1.0], unet_multipliers=[0.25, 1.0])
    expected = expected_state("sd1", [(store["x"], 0.5, 0.25), (store["y"], 1.0, 1.0)])
    assert same_state(state(webui.model), expected) == []
    assert [(n.name, n.te_multiplier, n.unet_multiplier) for n in networks.loaded_networks] == [
        ("x", 0.5, 0.25),
        ("y", 1.0, 1.0),
    ]
    networks.load_networks([])
    assert same_state(state(webui.model), webui.original) == []
    assert networks.loaded_networks == []


def test_extra_networks_page_with_an_embedded_cover_renders_and_serves_it(webui, store):
    """The webui json.loads ``metadata["ssmd_cover_images"]`` (A1111_CONTRACT §4.2, §12): the page must hand it a
    JSON string. A list made every Extra Networks page fail to refresh in the real webui."""
    from modules import ui_extra_networks

    install(store["covered"], webui.lora_dir, "covered")
    lora_host().refresh()
    page = next(p for p in ui_extra_networks.extra_pages if p.name == "lora")
    page.refresh()
    assert "data-name='covered'" in page.create_html("txt2img")
    item = page.items["covered"]
    assert item["preview"] == "./sd_extra_networks/cover-images?page=lora&item=covered"
    assert isinstance(page.metadata["covered"]["ssmd_cover_images"], str)
    image, mime = ui_extra_networks.fetch_cover_images("lora", "covered", 0)
    assert image == COVER and mime == "image/png"
    assert ui_extra_networks.fetch_cover_images("lora", "covered", 1) is None
    assert json.loads(
        ui_extra_networks.get_metadata("lora", "covered")["metadata"]
    )  # covers stripped, rest kept
    assert "ssmd_cover_images" not in ui_extra_networks.get_metadata("lora", "covered")["metadata"]


def test_tab_and_preview_route_follow_the_library_rebuilt_after_list_hidden_files(webui, store):
    """Objects built once at startup (our tab, the preview route) must not keep the library of before the change."""
    from modules import shared

    from lora_ext.hosts.a1111.tab import tab_host

    install(store["covered"], webui.lora_dir / ".private", "hidden_covered")
    shared.opts.set("list_hidden_files", False)
    th = tab_host(lora_host())
    assert "hidden_covered" not in {e.name for e in th.library.entries()}
    shared.opts.set("list_hidden_files", True)
    assert "hidden_covered" in {e.name for e in th.library.entries()}
    hidden = next(e for e in lora_host().library.entries() if e.name == "hidden_covered")
    response = webui.client().get("/lora_ext/preview", params={"path": hidden.path})
    assert response.status_code == 200 and response.content == COVER


def test_known_duplicates_are_not_printed_again_at_every_rescan(webui, store, capsys):
    """A tag naming no file rescans the folders at every activation (each batch and hires pass); duplicates and
    problems already reported must not fill the console again each time, only when they change."""
    install(store["y"], webui.lora_dir / "sub", "x")
    lora_host().refresh()
    assert "duplicate:" in capsys.readouterr().out
    webui.txt2img("a photo <lora:missing:1>", n_iter=2, enable_hr=True)
    assert "duplicate:" not in capsys.readouterr().out
    install(store["y"], webui.lora_dir / "other", "y")  # a new duplicate: said again
    lora_host().refresh()
    out = capsys.readouterr().out
    assert "duplicate:" in out and "1 new" in out
