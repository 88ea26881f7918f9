"""The LoRA tab (one Gradio component for A1111 and the standalone app) and the standalone app.

``cards`` and ``inspector`` are pure functions from library entries to JSON-ready data and HTML strings (no Gradio);
``previews`` answers card-image requests through the library only, ``routes`` serves them (FastAPI);
``runtime`` loads a pipeline, the library and the diffusers host for the app and the CLI;
``tab`` builds the Gradio component; ``app`` builds the standalone app around a diffusers host.
Gradio is imported only by ``tab`` and ``app``.
"""

from typing import Any

_LAZY = {
    "build_lora_tab": "lora_ext.ui.tab",
    "TabHost": "lora_ext.ui.tab",
    "build_app": "lora_ext.ui.app",
    "launch_app": "lora_ext.ui.app",
    "card_data": "lora_ext.ui.cards",
}


def __getattr__(name: str) -> Any:
    """``from lora_ext.ui import build_lora_tab`` without importing Gradio for the pure modules."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lora_ext.ui' has no attribute {name!r}")
