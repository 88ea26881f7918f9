"""Fake ``modules.hashes`` (A1111_CONTRACT.md §10.5): sha256 and the kohya addnet hash, cached by mtime."""

from __future__ import annotations

import hashlib
import os

from modules import cache, shared


def calculate_sha256(filename):
    h = hashlib.sha256()
    with open(filename, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def addnet_hash_safetensors(b):
    """sha256 of every byte after the 8-byte header length and the JSON header (tensor data only)."""
    h = hashlib.sha256()
    b.seek(0)
    header = b.read(8)
    n = int.from_bytes(header, "little")
    offset = n + 8
    b.seek(offset)
    for chunk in iter(lambda: b.read(1024 * 1024), b""):
        h.update(chunk)
    return h.hexdigest()


def sha256_from_cache(filename, title, use_addnet_hash=False):
    hashes = cache.cache("hashes-addnet") if use_addnet_hash else cache.cache("hashes")
    entry = hashes.get(title)
    mtime = os.path.getmtime(filename)
    if entry is not None and entry.get("mtime") == mtime:
        return entry["sha256"]
    return None


def sha256(filename, title, use_addnet_hash=False):
    cached = sha256_from_cache(filename, title, use_addnet_hash)
    if cached is not None:
        return cached
    if shared.cmd_opts.no_hashing:
        return None
    if use_addnet_hash:
        with open(filename, "rb") as f:
            value = addnet_hash_safetensors(f)
    else:
        value = calculate_sha256(filename)
    hashes = cache.cache("hashes-addnet") if use_addnet_hash else cache.cache("hashes")
    hashes[title] = {"mtime": os.path.getmtime(filename), "sha256": value}
    return value
