"""Shared helpers for the app, host and Playwright tests: Debian chromium, free ports, a Gradio app served in a
thread, and LoRA files written by diffusers + peft for the tiny SD1 pipeline.

The browser is the system ``/usr/bin/chromium`` (``playwright install`` cannot download here, STACK.md).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (high, chosen by the OS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def browser_page(width: int = 1280, height: int = 900) -> Iterator[object]:
    """A fresh Playwright page in headless Debian chromium; closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(
                45_000
            )  # generous for a loaded 2-core CI; passing runs never wait for it
            yield page
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/ (git-ignored) and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def serve_blocks(blocks, allowed_paths: list[str] | None = None, library=None) -> Iterator[str]:
    """Launch a Gradio Blocks on 127.0.0.1 at a free port (non-blocking); yield its URL; close on exit.

    library: when given, the app's card-preview route serves that library's previews (as ``launch_app`` does)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    port = free_port()
    blocks.queue()
    blocks.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        show_error=True,
        quiet=True,
        allowed_paths=allowed_paths or [],
    )
    if library is not None:
        from lora_ext.ui.routes import add_preview_route

        add_preview_route(blocks.server_app, library)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url)
        yield url
    finally:
        server = getattr(blocks, "server", None)
        if server is not None:
            server.force_exit = True  # do not wait for connections a closed browser left half-open
        blocks.close()


def _wait_for(url: str, timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def js_source() -> str:
    """The extension's JavaScript, as A1111 would load it."""
    return (REPO / "javascript" / "lora_ext.js").read_text(encoding="utf-8")


def write_peft_lora(
    folder, name: str, seed: int = 1, rank: int = 4, alpha: int = 8, metadata: dict[str, str] | None = None
) -> str:
    """A diffusers/PEFT LoRA for the tiny SD1 UNet and text encoder, written by diffusers' own saver.

    metadata: extra ``__metadata__`` entries (e.g. kohya ``ss_tag_frequency``) merged into the written file.
    """
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from lora_ext.demo import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1", 0)
    torch.manual_seed(seed)
    unet_cfg = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    te_cfg = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    pipe.unet.add_adapter(unet_cfg)
    pipe.text_encoder.add_adapter(te_cfg)
    StableDiffusionPipeline.save_lora_weights(
        str(folder),
        unet_lora_layers=get_peft_model_state_dict(pipe.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder),
        weight_name=f"{name}.safetensors",
        unet_lora_adapter_metadata=unet_cfg.to_dict(),
        text_encoder_lora_adapter_metadata=te_cfg.to_dict(),
    )
    path = str(folder / f"{name}.safetensors")
    if metadata:
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        with safe_open(path, "pt") as f:
            merged = dict(f.metadata() or {})
        merged.update(metadata)
        save_file(load_file(path), path, metadata=merged)
    return path
