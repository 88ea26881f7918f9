"""Values read next to a safetensors header without loading tensors: decoded metadata and one scalar tensor.

Standard library only (used by the library's scan, which must not import torch).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from lora_ext.formats.safetensors_header import SafetensorsHeader

#: dtype -> (struct format, bytes); bfloat16 has no struct format and is widened by hand.
_SCALAR_FORMATS = {"F32": ("<f", 4), "F64": ("<d", 8), "F16": ("<e", 2), "BF16": (None, 2)}


def decode_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """Metadata with JSON-valued strings decoded (values starting with ``{`` or ``[`` that parse as JSON)."""
    decoded: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, str) and value[:1] in ("{", "["):
            try:
                decoded[key] = json.loads(value)
                continue
            except ValueError:
                pass
        decoded[key] = value
    return decoded


def read_scalar(header: SafetensorsHeader, key: str) -> float | None:
    """Value of the 0-d or 1-element tensor ``key`` (F16/BF16/F32/F64) of ``header.path``, read as a few bytes.

    None when the key is missing, not such a scalar, its entry is malformed or the bytes cannot be read.
    """
    info = header.entries.get(key)
    if info is None:
        return None
    try:
        dtype = info["dtype"]
        begin, end = (int(x) for x in info["data_offsets"])
    except (KeyError, TypeError, ValueError):
        return None
    if dtype not in _SCALAR_FORMATS or end - begin != _SCALAR_FORMATS[dtype][1]:
        return None
    try:
        with open(header.path, "rb") as handle:
            handle.seek(header.data_offset + begin)
            raw = handle.read(end - begin)
    except OSError:
        return None
    if len(raw) != end - begin:
        return None
    fmt = _SCALAR_FORMATS[dtype][0]
    if fmt is None:  # bfloat16: the high half of a float32
        return float(struct.unpack("<f", b"\x00\x00" + raw)[0])
    return float(struct.unpack(fmt, raw)[0])
