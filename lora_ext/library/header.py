"""Read a safetensors header without loading any tensor.

Layout (FORMATS.md §2): 8-byte little-endian u64 N, then N bytes of UTF-8 JSON, then tensor data from 8 + N to EOF.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from lora_ext.errors import Problem

#: Headers above this size are refused as corrupt (real LoRA headers are well under 10 MB, even with cover images).
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class Header:
    """A parsed safetensors header.

    metadata: ``__metadata__`` as stored (string -> string).
    tensors: key -> the header's own entry ``{"dtype": str, "shape": [int, ...], "data_offsets": [begin, end]}``
        (offsets relative to ``data_offset``); kept as parsed, because converting ~1 000 entries per file
        costs as much as parsing them. Every value is a dict; its fields are checked where they are used.
    data_offset: absolute file offset of the tensor data (8 + N).
    """

    metadata: dict[str, str]
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_offset: int = 8


def read_header(path: str, file_size: int | None = None) -> Header | Problem:
    """Parse the header of the safetensors file at ``path``; a Problem for truncated, garbage or unreadable files."""
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return _corrupt(path, "the file is shorter than a safetensors header (8 bytes)")
            (length,) = struct.unpack("<Q", prefix)
            if length < 2 or length > MAX_HEADER_BYTES:
                return _corrupt(path, f"the header length field ({length}) is impossible")
            if file_size is not None and 8 + length > file_size:
                return _corrupt(
                    path, f"the file is truncated (its header needs {length} bytes, {file_size - 8} follow)"
                )
            raw = handle.read(length)
    except OSError as exc:
        return Problem(path, f"Cannot read this LoRA file ({exc.strerror or exc}). Check its permissions.")
    if len(raw) < length:
        return _corrupt(path, "the header is truncated")
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _corrupt(path, "the header is not valid JSON")
    if not isinstance(parsed, dict):
        return _corrupt(path, "the header is not a JSON object")
    raw_meta = parsed.pop("__metadata__", None) or {}
    metadata = (
        {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw_meta.items()}
        if isinstance(raw_meta, dict)
        else {}
    )
    if not all(type(info) is dict for info in parsed.values()):
        return _corrupt(path, "a tensor entry is not an object")
    tensors = parsed
    return Header(metadata=metadata, tensors=tensors, data_offset=8 + length)


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


def read_scalar(path: str, header: Header, key: str) -> float | None:
    """Value of a 0-d or 1-element tensor ``key`` (F16/BF16/F32/F64), read as a few bytes; None if impossible."""
    info = header.tensors.get(key)
    if info is None:
        return None
    try:
        dtype = info["dtype"]
        begin, end = (int(x) for x in info["data_offsets"])
    except (KeyError, TypeError, ValueError):
        return None
    formats = {"F32": ("<f", 4), "F64": ("<d", 8), "F16": ("<e", 2), "BF16": (None, 2)}
    if dtype not in formats or end - begin != formats[dtype][1]:
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(header.data_offset + begin)
            raw = handle.read(end - begin)
    except OSError:
        return None
    if len(raw) != end - begin:
        return None
    fmt = formats[dtype][0]
    if fmt is None:  # bfloat16: the high half of a float32
        return float(struct.unpack("<f", b"\x00\x00" + raw)[0])
    return float(struct.unpack(fmt, raw)[0])


def _corrupt(path: str, what: str) -> Problem:
    return Problem(
        path,
        f"Not a readable safetensors file: {what}. The download may be incomplete; download it again or remove it.",
    )
