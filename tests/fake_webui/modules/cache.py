"""Fake ``modules.cache`` (A1111_CONTRACT.md §9.2): in-memory subsections, mtime-invalidated ``cached_data_for_file``."""

from __future__ import annotations

import os

from modules.paths import data_path

#: v1.10.1: ``SD_WEBUI_CACHE_DIR`` or ``<data_path>/cache`` (the harness points it into the test's folder).
cache_dir = os.environ.get("SD_WEBUI_CACHE_DIR", os.path.join(data_path, "cache"))
caches: dict[str, dict] = {}


def cache(subsection):
    return caches.setdefault(subsection, {})


def cached_data_for_file(subsection, title, filename, func):
    existing_cache = cache(subsection)
    ondisk_mtime = os.path.getmtime(filename)
    entry = existing_cache.get(title)
    if entry and ondisk_mtime <= entry.get("mtime", 0):
        return entry.get("value")
    value = func()
    if value is None:
        return None
    existing_cache[title] = {"mtime": ondisk_mtime, "value": value}
    return value
