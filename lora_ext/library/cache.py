"""Persistent library cache: one JSON file, keyed by absolute path and validated by (size, mtime_ns).

Layout::

    {"version": 1, "files": {path: {"fp": [size, mtime_ns], "data": FileData dict,
                                    "sfp": [[name, size, mtime_ns], ...], "sidecars": SidecarData dict,
                                    "hashes": {"addnet": hex, "sha256": hex},
                                    "added": seconds since the epoch (first seen, ``library.firstseen``)}}}

A file whose last read failed for a reason that may pass keeps a record of ``{"added": ...}`` only.

A missing file starts empty; an unreadable or malformed one is reported and rebuilt, never fatal.
Written atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from lora_ext.errors import Problem
from lora_ext.library.atomic import write_text_atomic

CACHE_VERSION = 3  # 2: architecture strengths reordered (keys before metadata); 3: rules shared with coverage
DEFAULT_CACHE_NAME = ".lora_ext_cache.json"


def load_cache(path: str | None) -> tuple[dict[str, dict[str, Any]], Problem | None]:
    """The cached per-file records, plus a warning when the file existed but was unusable (an info note when it
    came from another cache version)."""
    if path is None or not os.path.exists(path):
        return {}, None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if (
            isinstance(data, dict)
            and isinstance(data.get("version"), int)
            and data["version"] != CACHE_VERSION
        ):
            return {}, Problem(
                path, "The library cache is from another version of lora_ext; it is rebuilt.", "info"
            )
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise ValueError("unexpected layout")
        files = {k: v for k, v in data["files"].items() if isinstance(v, dict)}
        return files, None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return {}, Problem(
            path, f"The library cache was unreadable ({exc}); it is rebuilt from the files.", "warning"
        )


def save_cache(
    path: str | None, files: dict[str, dict[str, Any]], encoded: dict[str, str] | None = None
) -> Problem | None:
    """Write the records atomically; a Problem (warning) when the folder is not writable.

    encoded: path -> that record's JSON text from an earlier save, reused so that saving after a small change
    encodes only the changed records; the caller drops an entry whenever its record changes. Filled here.
    """
    if path is None:
        return None
    encoded = {} if encoded is None else encoded
    folder = os.path.dirname(os.path.abspath(path))
    try:
        parts = []
        for key, record in files.items():
            text = encoded.get(key)
            if text is None:
                text = encoded[key] = json.dumps(record, separators=(",", ":"))
            parts.append(f"{json.dumps(key)}:{text}")
        body = f'{{"version":{CACHE_VERSION},"files":{{{",".join(parts)}}}}}'
        os.makedirs(folder, exist_ok=True)
        write_text_atomic(path, body, prefix=".lora_ext_cache-", suffix=".tmp")
    except (OSError, TypeError, ValueError) as exc:
        return Problem(
            path, f"Cannot write the library cache ({exc}); scans will not be remembered.", "warning"
        )
    return None
