"""The LoRA tab (one Gradio component for A1111 and the standalone app) and the standalone app.

``cards`` and ``inspector`` are pure functions from library entries to JSON-ready data and HTML strings (no Gradio);
``tab`` builds the Gradio component; ``app`` builds the standalone app around a diffusers host.
Gradio is imported only by ``tab`` and ``app``.
"""
