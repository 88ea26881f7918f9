"""Streamed file hashes (FORMATS.md §5): addnet hash and full-file sha256 in one pass."""

from __future__ import annotations

import hashlib
import struct

CHUNK_BYTES = 1 << 20


def hash_file(path: str, is_safetensors: bool) -> tuple[str, str]:
    """(addnet, sha256) of the file at ``path`` as 64 lower-case hex characters each, reading it once.

    addnet: for safetensors, sha256 of the bytes from 8 + N (N = the little-endian u64 header length) to EOF;
        otherwise the full-file sha256 (what A1111 uses for ``.pt``/``.ckpt``).
    Raises OSError when the file cannot be read.
    """
    full = hashlib.sha256()
    addnet = hashlib.sha256() if is_safetensors else None
    with open(path, "rb") as handle:
        skip = 0
        if addnet is not None:
            prefix = handle.read(8)
            full.update(prefix)
            skip = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        while True:
            chunk = handle.read(CHUNK_BYTES)
            if not chunk:
                break
            full.update(chunk)
            if addnet is not None:
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                addnet.update(chunk[skip:] if skip else chunk)
                skip = 0
    full_hex = full.hexdigest()
    return (addnet.hexdigest() if addnet is not None else full_hex), full_hex
