"""Bounds-checked reader for the header of a ``.safetensors`` file (no tensor is loaded).

Layout (FORMATS.md §2): 8-byte little-endian u64 N, N bytes of UTF-8 JSON, then tensor data from 8 + N to EOF.
Every way the header can be broken gives a ``Problem`` naming the file, never an exception.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field

from lora_ext.errors import Problem

#: Headers larger than this are refused (the safetensors library uses the same 100 MB bound).
MAX_HEADER_BYTES = 100_000_000

#: safetensors dtype name -> bytes per element.
DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


@dataclass
class SafetensorsHeader:
    """The parsed header of a safetensors file.

    path: the file.
    metadata: ``__metadata__`` (string -> string; non-string values are JSON-encoded).
    tensors: key -> (dtype name such as ``"F16"``, shape tuple).
    data_offset: byte offset of the tensor data (8 + N).
    file_size: size of the file in bytes.
    """

    path: str
    metadata: dict[str, str] = field(default_factory=dict)
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    data_offset: int = 0
    file_size: int = 0


def _problem(path: str, what: str) -> Problem:
    return Problem(
        subject=path,
        message=f"cannot read this .safetensors file: {what}. The file is damaged or not a safetensors file; "
        "download it again or remove it.",
    )


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsHeader | Problem:
    """Read and validate the header of ``path`` without loading tensors.

    Checks: a regular non-empty file, N within the file and below ``MAX_HEADER_BYTES``, JSON object, every
    tensor entry with known dtype, integer shape and ``data_offsets`` inside the data area and matching the size.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _problem(path, "it is a directory, not a file")
    try:
        size = os.path.getsize(path)
        if size < 8:
            return _problem(path, "the file is empty" if size == 0 else f"the file has only {size} bytes")
        with open(path, "rb") as handle:
            (n,) = struct.unpack("<Q", handle.read(8))
            if n > size - 8:
                return _problem(
                    path, f"the header claims {n} bytes but the file has only {size - 8} after the length"
                )
            if n > MAX_HEADER_BYTES:
                return _problem(path, f"the header length {n} is implausibly large")
            raw = handle.read(n)
    except OSError as err:
        return _problem(path, f"the file could not be opened ({err.strerror or err})")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _problem(path, "the header is not valid JSON")
    if not isinstance(header, dict):
        return _problem(path, "the header is not a JSON object")
    data_size = size - 8 - n
    result = SafetensorsHeader(path=path, data_offset=8 + n, file_size=size)
    for key, entry in header.items():
        if key == "__metadata__":
            if isinstance(entry, dict):
                result.metadata = {
                    str(k): v if isinstance(v, str) else json.dumps(v) for k, v in entry.items()
                }
            continue
        checked = _check_entry(key, entry, data_size)
        if isinstance(checked, str):
            return _problem(path, checked)
        result.tensors[key] = checked
    return result


def _check_entry(key: str, entry: object, data_size: int) -> tuple[str, tuple[int, ...]] | str:
    """Validate one tensor entry; return (dtype, shape) or a reason string."""
    if not isinstance(entry, dict):
        return f"tensor {key!r} has no description"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        return f"tensor {key!r} has unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return f"tensor {key!r} has an invalid shape"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        return f"tensor {key!r} has invalid data offsets"
    if offsets[1] > data_size:
        return f"tensor {key!r} lies beyond the end of the file (the file is truncated)"
    count = 1
    for d in shape:
        count *= d
    if offsets[1] - offsets[0] != count * DTYPE_SIZES[dtype]:
        return f"tensor {key!r} has {offsets[1] - offsets[0]} bytes but its shape needs {count * DTYPE_SIZES[dtype]}"
    return dtype, tuple(shape)
