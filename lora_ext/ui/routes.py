"""HTTP routes the standalone app adds to Gradio's FastAPI server (FastAPI only; no Gradio import)."""

from __future__ import annotations

from typing import Any

from lora_ext.errors import is_problem
from lora_ext.ui.previews import PREVIEW_ROUTE, preview_payload


def add_preview_route(server_app: Any, library: Any) -> None:
    """Serve card previews at ``/lora_ext/preview?path=<LoRA file>`` on the app's FastAPI server, only through
    ``library.preview_file`` / ``library.cover_image`` (``lora_ext.ui.previews.preview_payload``)."""
    from fastapi import Response
    from fastapi.responses import FileResponse

    def preview(path: str = "") -> Any:
        payload = preview_payload(library, path)
        if is_problem(payload):
            return Response(payload.message, status_code=404, media_type="text/plain")
        headers = {"Cache-Control": "no-cache"}
        if payload.file is not None:
            return FileResponse(payload.file, media_type=payload.mime, headers=headers)
        return Response(payload.data, media_type=payload.mime, headers=headers)

    server_app.add_api_route("/" + PREVIEW_ROUTE, preview, methods=["GET"])
