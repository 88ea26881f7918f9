"""Path guard: nothing outside the library roots is ever read or written through the library."""

from __future__ import annotations

import os
import re

from lora_ext.errors import Problem

_DRIVE = re.compile(r"^[A-Za-z]:")


def is_within(real_path: str, real_root: str) -> bool:
    """True when the (already realpath'd) ``real_path`` is ``real_root`` or below it."""
    return real_path == real_root or real_path.startswith(real_root.rstrip(os.sep) + os.sep)


def safe_path(path: str, roots: list[str]) -> str | Problem:
    """The real absolute path of ``path`` when it lies inside one of ``roots``, else a Problem.

    path: relative to a root (``sub/x.png``, tried against each root in order) or absolute. Relative paths with a
        ``..`` segment, NUL bytes, and anything whose real path (links resolved) leaves every root are refused.
    Returns the first existing candidate; a refused or missing path gives a Problem (nothing is read here).
    """
    text = path.replace("\\", "/") if os.sep == "/" else path
    if not text or "\x00" in text:
        return _refused(path)
    real_roots = [os.path.realpath(r) for r in roots]
    if os.path.isabs(text) or _DRIVE.match(text):
        candidates = [text]
    else:
        if ".." in text.split("/"):
            return _refused(path)
        candidates = [os.path.join(root, text) for root in roots]
    inside = False
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if not any(is_within(real, root) for root in real_roots):
            continue
        inside = True
        if os.path.exists(real):
            return real
    if not inside:
        return _refused(path)
    return Problem(path, "No such file in the Lora folders.", "error")


def _refused(path: str) -> Problem:
    return Problem(
        path or "<empty>",
        "Refused: this path is outside the Lora folders. Only files inside the configured Lora folders are served.",
        "error",
    )
