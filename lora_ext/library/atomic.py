"""Atomic file writes: a temporary file in the target's folder, then ``os.replace`` (readers never see half a file)."""

from __future__ import annotations

import os
import tempfile


def write_text_atomic(path: str, text: str, *, prefix: str, suffix: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through ``{prefix}…{suffix}`` beside it; the temporary file is removed
    when anything fails, and the error propagates. The folder must exist."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
