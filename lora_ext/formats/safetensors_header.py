"""The one reader for the header of a ``.safetensors`` file (no tensor is loaded).

Layout (FORMATS.md §2): 8-byte little-endian u64 N, N bytes of UTF-8 JSON, then tensor data from 8 + N to EOF.
Every way the header can be broken gives a ``Problem`` naming the file, never an exception.

Two modes serve the two users: the loader validates every tensor entry (dtype, shape, offsets inside the file)
before it reads tensor data; the library's scan of thousands of files (``validate=False``) only parses the JSON and
checks that each entry is an object, because checking ~1 000 entries per file costs as much as parsing them.
This module imports only the standard library (the library scan must not import torch).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

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

#: First bytes of PyTorch files (zip archive since torch 1.6, plain pickle before), renamed to .safetensors by users.
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")

#: Start of the message when the file could not be opened or read at all (permissions, I/O): a failure that may be
#: temporary, unlike a damaged file. ``is_unreadable`` tests for it.
_UNREADABLE = "cannot open this file"


@dataclass
class SafetensorsHeader:
    """The parsed header of a safetensors file.

    path: the file.
    metadata: ``__metadata__`` (string -> string; non-string values are JSON-encoded).
    entries: key -> the header's own entry ``{"dtype": str, "shape": [int, ...], "data_offsets": [begin, end]}``,
        offsets in bytes relative to ``data_offset``. Checked in full only when read with ``validate=True``.
    data_offset: absolute byte offset of the tensor data (8 + N).
    file_size: size of the file in bytes.
    validated: whether every entry was checked (known dtype, shape of non-negative ints, offsets inside the file
        and matching the shape).
    """

    path: str
    metadata: dict[str, str] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_offset: int = 8
    file_size: int = 0
    validated: bool = False

    @property
    def tensors(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """key -> (dtype name such as ``"F16"``, shape tuple). Safe on validated headers only."""
        return {key: (entry["dtype"], tuple(entry["shape"])) for key, entry in self.entries.items()}

    def data_end(self) -> int:
        """Absolute offset just past the last tensor's bytes (``data_offset`` when there are none).

        Raises KeyError/TypeError/ValueError/IndexError on malformed entries of an unvalidated header.
        """
        return self.data_offset + max((int(e["data_offsets"][1]) for e in self.entries.values()), default=0)


def is_unreadable(problem: Problem) -> bool:
    """True when ``problem`` says the file could not be opened or read (perhaps temporary, e.g. permissions)."""
    return problem.message.startswith(_UNREADABLE)


def read_safetensors_header(
    path: str | os.PathLike[str], *, validate: bool = True, file_size: int | None = None
) -> SafetensorsHeader | Problem:
    """Read the header of ``path`` without loading tensors.

    validate: check every tensor entry (see ``SafetensorsHeader.validated``); False only checks that the header is
        a JSON object whose entries are objects (the library's fast scan).
    file_size: the size in bytes when the caller already knows it (saves a stat); otherwise taken from the open file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size if file_size is None else file_size
            if size < 8:
                return _damaged(path, "the file is empty" if size == 0 else f"the file has only {size} bytes")
            prefix = handle.read(8)
            (n,) = struct.unpack("<Q", prefix)
            if n > size - 8 and prefix.startswith(_PICKLE_MAGIC):  # only then: b"\x80\x02" may start a length
                return Problem(
                    path,
                    "this file is a PyTorch pickle named .safetensors; rename it to .pt (it is then read safely, "
                    "weights only) or get the real .safetensors version.",
                )
            if n > size - 8:
                return _damaged(
                    path,
                    f"the header claims {n} bytes but the file has only {size - 8} after the length "
                    "(the file is truncated)",
                )
            if n > MAX_HEADER_BYTES:
                return _damaged(path, f"the header length {n} is implausibly large")
            raw = handle.read(n)
    except IsADirectoryError:
        return _damaged(path, "it is a directory, not a file")
    except OSError as err:
        return Problem(path, f"{_UNREADABLE} ({err.strerror or err}). Check its permissions, then refresh.")
    if len(raw) < n:
        return _damaged(path, "the header is truncated")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _damaged(path, "the header is not valid JSON")
    if not isinstance(header, dict):
        return _damaged(path, "the header is not a JSON object")
    raw_meta = header.pop("__metadata__", None)
    metadata = (
        {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw_meta.items()}
        if isinstance(raw_meta, dict)
        else {}
    )
    result = SafetensorsHeader(path, metadata, header, 8 + n, size, validate)
    if not validate:
        if not all(type(entry) is dict for entry in header.values()):
            return _damaged(path, "a tensor entry is not an object")
        return result
    data_size = size - 8 - n
    for key, entry in header.items():
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if isinstance(dtype, str) and dtype not in DTYPE_SIZES:  # a newer format, not damage
            return Problem(
                path,
                f"tensor {key!r} has the data type {dtype}, which this extension cannot read (it reads "
                f"{', '.join(DTYPE_SIZES)}); use a float16, bfloat16 or float32 version of this LoRA.",
            )
        reason = _check_entry(key, entry, data_size)
        if reason is not None:
            return _damaged(path, reason)
    return result


def _check_entry(key: str, entry: object, data_size: int) -> str | None:
    """Why one tensor entry is invalid, or None when it is fine."""
    if not isinstance(entry, dict):
        return f"tensor {key!r} has no description"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        return f"tensor {key!r} has unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        return f"tensor {key!r} has an invalid shape"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
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
    return None


def _damaged(path: str, what: str) -> Problem:
    return Problem(
        path,
        f"cannot read this .safetensors file: {what}. The file is damaged or not a safetensors file "
        "(perhaps an incomplete download); download it again or remove it.",
    )
