"""Read the tensor data of a validated safetensors file into CPU tensors with one read into one buffer.

Why not memory-mapped: a mapping of the file stays tied to it. When the user overwrites the file in place while it is
loaded (``cp new.safetensors old.safetensors``, ``curl -o``, a trainer saving over the same name), Linux shows the new
bytes to a ``MAP_PRIVATE`` mapping (``mmap.ACCESS_COPY``) in pages not yet copied, and a file truncated below a
mapped page kills the whole process with SIGBUS on the next read of that page (both verified on this stack). A
LoRA cached by the loader is read again at every generation, so the WebUI would crash. One private buffer costs
the same RAM as the tensors themselves, with no second copy at any time (``safe_open(...).get_tensor`` held the
mapped file *and* the copies), and the tensors never change after loading. See ``docs`` in the engine report for
the measured figures.

Tensors are views of the one buffer (so the buffer lives as long as any of them). A tensor whose byte offset is not
a multiple of its element size (files written by tools that do not align) is copied to an aligned tensor.
"""

from __future__ import annotations

import sys

import torch

from lora_ext.errors import Problem
from lora_ext.formats.safetensors_header import SafetensorsHeader

#: safetensors dtype name -> torch dtype (all of ``DTYPE_SIZES``).
TORCH_DTYPES = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I16": torch.int16,
    "U16": torch.uint16,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I32": torch.int32,
    "U32": torch.uint32,
    "F32": torch.float32,
    "I64": torch.int64,
    "U64": torch.uint64,
    "F64": torch.float64,
}


def read_safetensors_tensors(header: SafetensorsHeader) -> dict[str, torch.Tensor] | Problem:
    """Every tensor of ``header.path`` as a CPU tensor in its stored dtype and shape.

    header: from ``read_safetensors_header(path, validate=True)`` (offsets are trusted). Reads the bytes from
    ``header.data_offset`` to the end of the last tensor with one ``readinto``; a file that became shorter since its
    header was read gives a Problem.
    """
    if sys.byteorder != "little":  # safetensors stores little-endian values; views would need a byte swap
        raise NotImplementedError("reading safetensors on a big-endian machine")
    size = header.data_end() - header.data_offset
    buffer = torch.empty(size, dtype=torch.uint8)
    got = 0
    try:
        with open(header.path, "rb", buffering=0) as handle:
            handle.seek(header.data_offset)
            target = memoryview(buffer.numpy())
            while got < size:  # one call, except for reads above the kernel's 2 GiB limit
                count = handle.readinto(target[got:])
                if not count:
                    break
                got += count
    except OSError as err:
        return Problem(
            header.path,
            f"cannot read the tensors of this file ({err.strerror or err}); check it, then retry.",
        )
    if got < size:
        return Problem(
            header.path,
            f"the file is truncated: its tensors need {size} bytes of data but only {got} could be read "
            "(it may have been replaced while loading); download it again.",
        )
    tensors: dict[str, torch.Tensor] = {}
    for key, entry in header.entries.items():
        dtype = TORCH_DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        raw = buffer[begin:end]
        if begin % dtype.itemsize:
            raw = raw.clone()
        tensors[key] = raw.view(dtype).view(tuple(entry["shape"]))
    return tensors
