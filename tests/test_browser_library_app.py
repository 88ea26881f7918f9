"""The LoRA tab's library features in the standalone app on a real library folder, in real chromium: sort by date
added and Civitai publish date (USERS C14) remembered with the order and the description mode (C13, C5), and the
training-tag filter (C17). The markup-level cases are in test_browser_library.py."""

from __future__ import annotations

import json
import os
import time

from test_library_tree import write_lora

from tests.browser_helpers import browser_page, screenshot, serve_blocks


def test_app_sorts_by_date_added_and_publish_date_and_remembers_choices(tmp_path):
    """A real library folder: files there before the first scan keep their mtime order; a file copied in later
    is the newest added whatever its mtime; Civitai dates come from .civitai.info; the sort, the order and the
    description mode survive a reload; the tag filter lists the files' training tags."""
    from lora_ext.ui.app import build_app
    from lora_ext.ui.runtime import open_runtime

    folder = tmp_path / "loras"
    now = time.time()
    for i, (name, days) in enumerate([("alpha", 5), ("beta", 30), ("gamma", 10)]):
        path = write_lora(
            folder / f"{name}.safetensors",
            "sd1",
            {"ss_tag_frequency": {"1_x": {name: 1, "shared": 1}}},
            seed=i,
        )
        os.utime(path, (now - days * 86_400, now - days * 86_400))
    (folder / "alpha.civitai.info").write_text(json.dumps({"id": 1, "publishedAt": "2023-01-01T00:00:00Z"}))
    (folder / "gamma.civitai.info").write_text(json.dumps({"id": 2, "createdAt": "2024-01-01T00:00:00Z"}))
    (folder / "beta.json").write_text(
        json.dumps({"description": '<b>beta</b> <img src=x onerror="window.pwned=1">'})
    )
    rt = open_runtime(None, [str(folder)])
    assert not hasattr(rt, "message"), rt

    def wait_cards(page, names: list[str]) -> None:
        page.wait_for_function(
            "want => JSON.stringify([...document.querySelectorAll('.lora-ext-grid .lora-ext-card')]"
            ".map(e => e.dataset.name)) === JSON.stringify(want)",
            arg=names,
        )

    with serve_blocks(build_app(rt), library=rt.library) as url, browser_page() as page:
        page.goto(url)
        wait_cards(page, ["alpha", "beta", "gamma"])
        page.select_option(".lora-ext-sort", "added")
        wait_cards(page, ["beta", "gamma", "alpha"])
        page.click(".lora-ext-order")
        wait_cards(page, ["alpha", "gamma", "beta"])
        page.select_option(".lora-ext-descmode", "html")
        page.wait_for_selector(".lora-ext-card[data-name='beta'] .lora-ext-desc b")

        new = write_lora(folder / "delta.safetensors", "sd1", seed=9)
        os.utime(new, (now - 400 * 86_400, now - 400 * 86_400))  # an old file, but new to the library
        page.click("#lora_ext_refresh")
        wait_cards(page, ["delta", "alpha", "gamma", "beta"])

        page.reload()
        wait_cards(page, ["delta", "alpha", "gamma", "beta"])
        assert page.input_value(".lora-ext-sort") == "added"
        assert page.input_value(".lora-ext-descmode") == "html"
        assert page.inner_text(".lora-ext-card[data-name='beta'] .lora-ext-desc b") == "beta"
        assert page.locator(".lora-ext-grid img[src='x']").count() == 0
        assert page.evaluate("() => window.pwned") is None

        page.select_option(".lora-ext-sort", "published")
        wait_cards(page, ["gamma", "alpha", "beta", "delta"])  # newest first; no Civitai date last
        page.click(".lora-ext-order")
        wait_cards(page, ["alpha", "gamma", "beta", "delta"])

        options = page.eval_on_selector_all(".lora-ext-tagfilter option", "os => os.map(o => o.value)")
        assert options == ["", "shared", "alpha", "beta", "gamma"]
        page.select_option(".lora-ext-tagfilter", "shared")
        wait_cards(page, ["alpha", "gamma", "beta"])
        page.fill(".lora-ext-search", "gam")
        wait_cards(page, ["gamma"])
        screenshot(page, "app_library_sorts")
    assert (folder / ".lora_ext_cache.json").is_file()
