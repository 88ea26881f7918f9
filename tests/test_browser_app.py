"""The standalone app in real chromium: cards, previews, search, sort, click-to-insert/toggle, negative text,
generation with coverage info, inspector, favourites; and the same card page in a layout with A1111's prompt ids.

Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser_helpers import browser_page, screenshot, serve_blocks, write_peft_lora

TAGS = json.dumps({"5_ink": {"mountain": 7, "river": 3}})


def make_library(folder: Path) -> Path:
    """style (preview, activation + negative text, dataset tags), sub/slider (preferred weight -0.5), zeta (none)."""
    from PIL import Image

    (folder / "sub").mkdir(parents=True)
    write_peft_lora(folder, "style", seed=1, metadata={"ss_tag_frequency": TAGS})
    write_peft_lora(folder / "sub", "slider", seed=2)
    write_peft_lora(folder, "zeta", seed=3)
    Image.new("RGB", (24, 24), (200, 30, 30)).save(folder / "style.png")
    (folder / "style.json").write_text(
        json.dumps({"activation text": "inkwash style", "negative text": "blurry"})
    )
    (folder / "sub" / "slider.json").write_text(json.dumps({"preferred weight": -0.5, "notes": "keep me"}))
    return folder


@pytest.fixture
def runtime(tmp_path):
    from lora_ext.ui.runtime import open_runtime

    rt = open_runtime(None, [str(make_library(tmp_path / "loras"))])
    assert not hasattr(rt, "message"), rt
    return rt


def card_names(page) -> list[str]:
    return page.eval_on_selector_all(".lora-ext-grid .lora-ext-card", "els => els.map(e => e.dataset.name)")


def wait_cards(page, names: list[str]) -> None:
    page.wait_for_function(
        "want => JSON.stringify([...document.querySelectorAll('.lora-ext-grid .lora-ext-card')]"
        ".map(e => e.dataset.name)) === JSON.stringify(want)",
        arg=names,
    )


def wait_value(page, selector: str, value: str) -> None:
    try:
        page.wait_for_function(
            "([sel, want]) => { const el = document.querySelector(sel); return el && el.value === want; }",
            arg=[selector, value],
        )
    except Exception as exc:  # name what the box held instead, so a failure says what happened
        actual = page.evaluate(
            "(sel) => { const el = document.querySelector(sel); return el && el.value; }", selector
        )
        raise AssertionError(f"{selector} never held {value!r}; it holds {actual!r}") from exc


def wait_file(path: Path, predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            data = json.loads(path.read_text())
            if predicate(data):
                return data
        time.sleep(0.1)
    raise AssertionError(f"{path} never satisfied the condition")


def gallery_image(page, url: str, previous: str | None = None) -> tuple[str, bytes]:
    page.wait_for_function(
        "prev => { const img = document.querySelector('#lora_ext_app_gallery img');"
        " return img && img.src && img.src !== prev; }",
        arg=previous or "",
    )
    src = page.eval_on_selector("#lora_ext_app_gallery img", "img => img.src")
    with urllib.request.urlopen(src) as r:
        return src, r.read()


def test_standalone_app_cards_insert_generate_inspect(runtime):
    from lora_ext.ui.app import build_app

    prompt, neg = "#lora_ext_app_prompt textarea", "#lora_ext_app_neg_prompt textarea"
    with serve_blocks(build_app(runtime), library=runtime.library) as url, browser_page() as page:
        page.goto(url)
        wait_cards(page, ["style", "sub/slider", "zeta"])

        # previews: the file preview is served and loads; no preview -> placeholder
        page.wait_for_function(
            "() => { const i = document.querySelector(\".lora-ext-card[data-name='style'] img\");"
            " return i.complete && i.naturalWidth === 24; }"
        )
        assert page.get_attribute(".lora-ext-card[data-name='zeta'] img", "class").endswith("placeholder")
        assert "SD1" in page.inner_text(".lora-ext-card[data-name='style'] .lora-ext-arch")

        # search narrows (activation text, folder), then clears
        page.fill(".lora-ext-search", "inkwash")
        wait_cards(page, ["style"])
        page.fill(".lora-ext-search", "sub")
        wait_cards(page, ["sub/slider"])
        page.fill(".lora-ext-search", "")
        wait_cards(page, ["style", "sub/slider", "zeta"])

        # sort by name, then descending; the choice survives a reload
        page.select_option(".lora-ext-sort", "name")
        wait_cards(page, ["sub/slider", "style", "zeta"])
        page.click(".lora-ext-order")
        wait_cards(page, ["zeta", "style", "sub/slider"])
        page.reload()
        wait_cards(page, ["zeta", "style", "sub/slider"])
        assert page.input_value(".lora-ext-sort") == "name"
        page.click(".lora-ext-order")
        page.select_option(".lora-ext-sort", "path")
        wait_cards(page, ["style", "sub/slider", "zeta"])

        # refresh picks up a file added on disk
        folder = Path(runtime.lora_dirs[0])
        (folder / "sub" / "added.safetensors").write_bytes((folder / "zeta.safetensors").read_bytes())
        page.click("#lora_ext_refresh")
        wait_cards(page, ["style", "sub/added", "sub/slider", "zeta"])
        page.wait_for_function(
            "() => document.querySelector('#lora_ext_status').innerText.includes('4 LoRAs')"
        )
        (folder / "sub" / "added.safetensors").unlink()
        page.click("#lora_ext_refresh")
        wait_cards(page, ["style", "sub/slider", "zeta"])

        # click inserts tag + activation text, negative text goes to the negative prompt; click again removes
        page.click(".lora-ext-card[data-name='style']")
        wait_value(page, prompt, "<lora:style:1> inkwash style")
        wait_value(page, neg, "blurry")
        page.click(".lora-ext-card[data-name='style'] .lora-ext-name")
        wait_value(page, prompt, "")
        wait_value(page, neg, "")

        # preferred negative weight, then edited by hand (other sign, exponent, extra argument): still removed
        page.fill(prompt, "a cat")
        page.click(".lora-ext-card[data-name='sub/slider']")
        wait_value(page, prompt, "a cat <lora:slider:-0.5>")
        page.fill(prompt, "a cat <lora:slider:-1.25e0:0.5>")
        page.click(".lora-ext-card[data-name='sub/slider']")
        wait_value(page, prompt, "a cat")
        screenshot(page, "app_cards")

        # card settings of the standalone app: default weight and "refer to LoRA by"
        page.click("#lora_ext_app_settings")
        page.fill("#lora_ext_app_settings input[type=number]", "0.7")
        page.press("#lora_ext_app_settings input[type=number]", "Enter")
        page.fill(prompt, "")
        page.wait_for_function(
            "() => { const d = document.querySelector('#lora_ext_data .lora-ext-data');"
            " return JSON.parse(d.textContent).default_multiplier === 0.7; }"
        )
        # ... and the tab's script has taken that data in and drawn the cards from it (it scans 50 ms after a
        # DOM change), so the click below uses the new default weight.
        page.wait_for_function(
            "() => { const t = loraExtState.tabs['lora_ext']; return t && t.data && t.data.default_multiplier === 0.7"
            " && document.querySelector(\".lora-ext-card[data-name='zeta']\") !== null; }"
        )
        page.click(".lora-ext-card[data-name='zeta']")
        wait_value(page, prompt, "<lora:zeta:0.7>")
        page.click(".lora-ext-card[data-name='zeta']")
        wait_value(page, prompt, "")

        # generation: with the tag the image differs from without it, and the info shows the coverage
        page.fill(prompt, "a cat <lora:style:1>")
        page.click("#lora_ext_app_generate")
        page.wait_for_function(
            "() => document.querySelector('#lora_ext_app_info').innerText.includes('matched')"
        )
        info = page.inner_text("#lora_ext_app_info")
        assert "style" in info and "matched" in info
        src1, tagged = gallery_image(page, url)
        page.fill(prompt, "a cat")
        page.click("#lora_ext_app_generate")
        page.wait_for_function(
            "() => document.querySelector('#lora_ext_app_info').innerText.includes('No LoRA')"
        )
        _, plain = gallery_image(page, url, previous=src1)
        assert tagged != plain
        screenshot(page, "app_generated")

        # replace preview: the last generated image becomes zeta's preview file and its card shows it
        page.click(".lora-ext-card[data-name='zeta'] .lora-ext-info")
        wait_value(page, "#lora_ext_insp_activation textarea", "")
        page.click("#lora_ext_insp_preview")
        page.wait_for_function(
            "() => { const i = document.querySelector(\".lora-ext-card[data-name='zeta'] img\");"
            " return !i.classList.contains('lora-ext-placeholder') && i.complete && i.naturalWidth === 64; }"
        )
        assert (Path(runtime.lora_dirs[0]) / "zeta.png").is_file()

        # favourite: stored in the sidecar, and the favourites filter shows only it
        page.click(".lora-ext-card[data-name='zeta'] .lora-ext-fav")
        wait_file(folder / "zeta.json", lambda d: d.get("favorite") is True)
        page.check(".lora-ext-favonly")
        wait_cards(page, ["zeta"])
        page.uncheck(".lora-ext-favonly")

        # inspector: metadata, coverage, tags; a clicked tag joins the activation text; save writes the sidecar
        page.evaluate("() => window.scrollTo(0, 0)")
        page.click(".lora-ext-card[data-name='style'] .lora-ext-info")
        page.wait_for_selector("#lora_ext_insp_info .lora-ext-dstag[data-tag='mountain']")
        # the inspector is brought into view (it sits below the grid)
        page.wait_for_function(
            "() => { const r = document.querySelector('#lora_ext_inspector').getBoundingClientRect();"
            " return r.top >= 0 && r.top < window.innerHeight / 2; }"
        )
        body = page.inner_text("#lora_ext_insp_info")
        assert "style.safetensors" in body and "matched" in body
        wait_value(page, "#lora_ext_insp_activation textarea", "inkwash style")
        page.click("#lora_ext_insp_info .lora-ext-dstag[data-tag='mountain']")
        wait_value(page, "#lora_ext_insp_activation textarea", "inkwash style, mountain")
        page.fill("#lora_ext_insp_tags textarea", "My Picks, ink , My Picks")  # the user's own tags (C17)
        page.click("#lora_ext_insp_save")
        saved = wait_file(
            folder / "style.json", lambda d: d.get("activation text") == "inkwash style, mountain"
        )
        assert saved["negative text"] == "blurry"
        assert saved["tags"] == ["My Picks", "ink"]
        wait_value(page, "#lora_ext_insp_tags textarea", "My Picks, ink")  # the field shows what was saved
        # the tag filter lists the user's tags first, in their own group, and filters on them
        page.wait_for_selector(
            ".lora-ext-tagfilter optgroup[label='Your tags'] option[value='my picks']", state="attached"
        )
        groups = page.eval_on_selector_all(".lora-ext-tagfilter optgroup", "gs => gs.map(g => g.label)")
        assert groups == ["Your tags", "Training tags"]
        page.select_option(".lora-ext-tagfilter", "my picks")
        wait_cards(page, ["style"])
        page.select_option(".lora-ext-tagfilter", "")
        wait_cards(page, ["style", "sub/slider", "zeta"])
        screenshot(page, "app_inspector")
        # the card now inserts the new activation text
        page.fill(prompt, "")
        page.wait_for_function(
            "() => document.querySelector(\".lora-ext-card[data-name='style'] .lora-ext-activation\")"
            ".innerText.includes('mountain')"
        )
        page.click(".lora-ext-card[data-name='style']")
        wait_value(page, prompt, "<lora:style:0.7> inkwash style, mountain")  # default weight set above


def test_card_page_in_a1111_prompt_layout(tmp_path, monkeypatch):
    """The same tab on the embedded default (tiny model + demo LoRAs) beside A1111's prompt ids
    (txt2img_prompt / txt2img_neg_prompt) and A1111's ``opts`` (default multiplier, separator); the badges follow
    a model switch without Refresh (C19)."""
    from lora_ext.hosts.diffusers_host import DiffusersHost
    from lora_ext.ui.app import build_app
    from lora_ext.ui.runtime import open_runtime

    rt = open_runtime(None, [], home=tmp_path / "home" / ".dot")  # a dot-folder home still serves previews
    loaded = {"arch": "SD1"}
    # the standalone app cannot switch models; the webui can: the host reports what is loaded now
    monkeypatch.setattr(DiffusersHost, "architecture", property(lambda self: loaded["arch"]))
    ink = Path(rt.lora_dirs[0]) / "demo_ink.json"
    ink.write_text(
        json.dumps({**json.loads(ink.read_text()), "preferred weight": 0})
    )  # 0 = default multiplier
    rt.library.refresh()

    prompt, neg = "#txt2img_prompt textarea", "#txt2img_neg_prompt textarea"
    with (
        serve_blocks(build_app(rt, prompt_prefix="txt2img"), library=rt.library) as url,
        browser_page() as page,
    ):
        page.add_init_script(
            "window.opts = {extra_networks_default_multiplier: 0.6, extra_networks_add_text_separator: ', '};"
        )
        page.goto(url)
        page.wait_for_selector(".lora-ext-card[data-name='subdir/demo_detail']")
        assert sorted(card_names(page)) == ["demo_color", "demo_ink", "demo_style", "subdir/demo_detail"]
        page.wait_for_function(
            "() => [...document.querySelectorAll('.lora-ext-card img:not(.lora-ext-placeholder)')]"
            ".some(i => i.complete && i.naturalWidth > 0)"
        )
        page.fill(prompt, "a cat")
        page.click(".lora-ext-card[data-name='demo_ink']")
        wait_value(page, prompt, "a cat, <lora:demo_ink:0.6> ink drawing")
        page.click(".lora-ext-card[data-name='demo_color']")
        wait_value(page, prompt, "a cat, <lora:demo_ink:0.6> ink drawing, <lora:demo_color:1> demo color")
        wait_value(page, neg, "grayscale, washed out")
        screenshot(page, "a1111_layout")
        page.click(".lora-ext-card[data-name='demo_ink']")
        wait_value(page, prompt, "a cat, <lora:demo_color:1> demo color")
        page.click(".lora-ext-card[data-name='demo_color']")
        wait_value(page, prompt, "a cat")
        wait_value(page, neg, "")

        # the cards follow the theme (Gradio's colour variables): dark mode changes their colours
        colors = (
            "() => [document.querySelector('.lora-ext-card'), document.querySelector('.lora-ext-search')]"
        )
        colors += ".map(e => getComputedStyle(e)).flatMap(c => [c.backgroundColor, c.color])"
        light = page.evaluate(colors)
        page.goto(url + "?__theme=dark")
        page.wait_for_selector(".lora-ext-card[data-name='demo_ink']")
        dark = page.evaluate(colors)
        assert all(d != b for d, b in zip(dark, light, strict=True)), (light, dark)
        screenshot(page, "a1111_layout_dark")

        # model switched to SDXL: the SD1 cards get the mismatch badge as soon as the pointer comes back
        mismatched = (
            "() => document.querySelectorAll('.lora-ext-grid .lora-ext-arch.lora-ext-mismatch').length"
        )
        assert page.evaluate(mismatched) == 0
        loaded["arch"] = "SDXL"
        page.mouse.move(1, 1)
        page.hover(".lora-ext-grid")
        page.wait_for_function(mismatched + " === 4")
        assert "⚠" in page.inner_text(".lora-ext-card[data-name='demo_ink'] .lora-ext-arch")
        loaded["arch"] = "SD1"
        page.mouse.move(1, 1)
        page.hover(".lora-ext-grid")
        page.wait_for_function(mismatched + " === 0")
