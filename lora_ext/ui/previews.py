"""Card previews of the standalone app, served only through the library (``preview_file`` / ``cover_image``).

A card's ``<img>`` points at the app's own route ``lora_ext/preview?path=<LoRA file>``; the route looks the LoRA up
in the library and answers with its preview file (library lookup order, USERS C2; the library's path guard
refuses anything outside the roots, symlink escapes included) or its embedded ``ssmd_cover_images`` cover. Nothing
else is served, and nothing is read while the card data is built, so a 5 000-LoRA page costs no image reads.
No Gradio or FastAPI here: ``lora_ext.ui.app`` wraps ``preview_payload`` in a route.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from typing import Any

from lora_ext.errors import Problem
from lora_ext.library.entry import EMBEDDED_PREVIEW, LoraEntry

#: Path of the app's preview route (relative, so it also works under a proxy prefix).
PREVIEW_ROUTE = "lora_ext/preview"

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


def preview_route_url(entry: LoraEntry) -> str | None:
    """The card image URL of ``entry`` (file preview or embedded cover), or None: the card shows a placeholder.

    ``v`` changes when the preview does (another file, or a new cover), so browsers do not show a stale image.
    """
    if not entry.preview:
        return None
    if entry.preview.startswith(EMBEDDED_PREVIEW):
        version = f"{entry.preview}-{entry.mtime:.0f}"
    else:
        try:
            version = f"{os.path.basename(entry.preview)}-{os.stat(entry.preview).st_mtime_ns}"
        except OSError:
            return None
    query = urllib.parse.urlencode({"path": entry.path, "v": version})
    return f"{PREVIEW_ROUTE}?{query}"


@dataclass(frozen=True)
class PreviewPayload:
    """What the route answers: ``file`` (a real path inside the roots) or ``data`` (cover bytes), and ``mime``."""

    mime: str
    file: str | None = None
    data: bytes | None = None


def save_preview(library: Any, entry: LoraEntry, image: Any, samples_format: str = "png") -> str | Problem:
    """ "Replace preview" (USERS C4): write the PIL ``image`` as ``{name}.{samples_format}`` beside the LoRA file,
    rescan, and say which file the card shows now. In the lookup order (C2) an existing ``{name}.png`` or
    ``{name}.preview.png`` comes before a new ``{name}.jpg``; then the message names the file that still wins
    instead of leaving the user to wonder why nothing changed. Returns the message or a Problem (nothing written).
    """
    fmt = samples_format.strip().lower().lstrip(".") or "png"
    folder = library.safe_path(os.path.dirname(entry.path))
    if isinstance(folder, Problem):
        return folder
    target = os.path.join(os.path.dirname(entry.path), f"{entry.name}.{fmt}")
    if fmt in ("jpg", "jpeg") and getattr(image, "mode", "RGB") not in ("RGB", "L"):
        image = image.convert("RGB")  # JPEG has no alpha channel
    try:
        image.save(target)
    except (OSError, ValueError, KeyError) as exc:
        return Problem(target, f"Could not write the preview ({exc}). Check that the folder is writable.")
    library.refresh()
    current = library.get(entry.path)
    shown = getattr(current, "preview", None)
    if shown is None or os.path.abspath(shown) == os.path.abspath(target):
        return f"Preview written to {target}"
    return (
        f"Preview written to {target}, but {os.path.basename(shown)} comes first in the preview order and is "
        "still shown; delete or rename it to see the new preview."
    )


def preview_payload(library: Any, lora_path: str) -> PreviewPayload | Problem:
    """The preview of the LoRA file ``lora_path`` as the library knows it now, or a Problem (unknown file, no
    preview, refused path, unreadable cover)."""
    entry = library.get(lora_path)
    if entry is None:
        return Problem(lora_path, "Not a LoRA of this library. Press Refresh on the LoRA tab.")
    if entry.preview and entry.preview.startswith(EMBEDDED_PREVIEW):
        try:
            index = int(entry.preview[len(EMBEDDED_PREVIEW) :] or 0)
        except ValueError:
            index = 0
        data = library.cover_image(entry, index)
        if isinstance(data, Problem):
            return data
        mime = image_mime(data)
        if mime is None:
            return Problem(
                entry.path, "The embedded cover image is not a PNG, JPEG, GIF or WebP image.", "warning"
            )
        return PreviewPayload(mime=mime, data=data)
    real = library.preview_file(entry)
    if real is None:
        return Problem(entry.path, "This LoRA has no preview image.", "info")
    if isinstance(real, Problem):
        return real
    with open(real, "rb") as f:
        mime = image_mime(f.read(16)) or "application/octet-stream"
    return PreviewPayload(mime=mime, file=real)
