"""``python -m lora_ext app``: argument parsing and the served standalone app on 127.0.0.1."""

from __future__ import annotations

import urllib.request

from lora_ext.cli import build_parser
from tests.browser_helpers import free_port, write_peft_lora


def test_app_command_defaults_to_localhost():
    args = build_parser().parse_args(["app", "--lora-dir", "x"])
    assert args.host == "127.0.0.1" and args.lora_dir == ["x"] and args.model is None


def test_launch_app_serves_the_page_with_cards(tmp_path):
    from lora_ext.ui.app import launch_app
    from lora_ext.ui.runtime import open_runtime

    write_peft_lora(tmp_path, "style", seed=1)
    rt = open_runtime(None, [str(tmp_path)])
    port = free_port()
    demo = launch_app(rt, "127.0.0.1", port, block=False)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            page = r.read().decode("utf-8", "replace")
    finally:
        demo.close()
    assert 'og:title" content="lora_ext"' in page
    assert "lora_ext_app_prompt" in page and "lora_ext_data" in page
    assert "lora-ext-card" in page  # the card records are in the initial config
