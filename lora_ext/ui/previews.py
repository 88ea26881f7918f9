"""Preview URLs for cards: the preview file when there is one (library lookup order, USERS C2), else the
embedded ``ssmd_cover_images`` cover as a data URL, else None (the card shows a neutral placeholder)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from lora_ext.library.entry import EMBEDDED_PREVIEW, LoraEntry
from lora_ext.ui.cards import gradio_file_url

_MAGIC = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
)


def image_mime(data: bytes) -> str | None:
    """MIME type of PNG, JPEG, GIF or WebP bytes; None for anything else."""
    for magic, mime in _MAGIC:
        if data.startswith(magic) and (mime != "image/webp" or data[8:12] == b"WEBP"):
            return mime
    return None


def library_preview_url(
    library: Any, file_url: Callable[[LoraEntry], str | None] = gradio_file_url
) -> Callable[[LoraEntry], str | None]:
    """entry -> URL: ``file_url(entry)`` for preview files; a ``data:`` URL of the embedded cover, read through
    ``library.cover_image(entry, index)``, for ``EMBEDDED_PREVIEW`` entries; None otherwise."""

    def url(entry: LoraEntry) -> str | None:
        if entry.preview and entry.preview.startswith(EMBEDDED_PREVIEW):
            try:
                index = int(entry.preview[len(EMBEDDED_PREVIEW) :] or 0)
            except ValueError:
                index = 0
            data = library.cover_image(entry, index)
            mime = image_mime(data) if isinstance(data, bytes) else None
            if mime is None:
                return None
            return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        return file_url(entry)

    return url
