"""Allocate the large CPU tensors a patch writes, asking Linux to back them with transparent huge pages.

A swap apply writes every patched weight into a new tensor, and the copy strategy writes the pristine copies of CPU
weights into new tensors: an SD1.5 patch is 1.4 GB of fresh memory. glibc maps large blocks straight from the kernel
and unmaps them when freed, so each apply takes a page fault per 4 KiB page, which measured about as long as the
copy itself on the benchmark machine (docs/PERFORMANCE.md). With ``madvise(MADV_HUGEPAGE)`` on the block before it
is first written, each fault maps 2 MiB instead.

The hint covers only the tensors this module allocates (not the process: torch's own ``THP_MEM_ALLOC_ENABLE`` and
glibc's tunables are process-wide, and the webui's memory is not ours to change). It is a hint: where the kernel has
transparent huge pages off, or is not Linux, the tensors are ordinary ones. Values are never affected.
"""

from __future__ import annotations

import ctypes
import functools
import sys

import torch

#: Size of a transparent huge page on x86-64 and most aarch64 kernels, in bytes.
HUGE_PAGE = 2 << 20
#: Tensors smaller than this (bytes) are left alone: they come from glibc's heap, and marking parts of it would only
#: split its mapping.
MIN_BYTES = 4 << 20
_MADV_HUGEPAGE = 14


@functools.cache
def _madvise():
    """libc's ``madvise`` (ptr, length, advice) -> int, or None where there is no such call to make."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    call.restype = ctypes.c_int
    return call


def advise_huge_pages(tensor: torch.Tensor) -> bool:
    """Mark the whole 2 MiB pages inside ``tensor``'s memory for transparent huge pages; True when the kernel took the
    hint. Call before the tensor is first written (pages already touched stay small until the kernel's background
    scan merges them). CPU tensors of at least ``MIN_BYTES`` only; anything else returns False and is unchanged."""
    nbytes = tensor.numel() * tensor.element_size()
    madvise = _madvise()
    if madvise is None or tensor.device.type != "cpu" or nbytes < MIN_BYTES:
        return False
    start = tensor.data_ptr()
    first = -(-start // HUGE_PAGE) * HUGE_PAGE
    last = (start + nbytes) // HUGE_PAGE * HUGE_PAGE
    return last > first and madvise(first, last - first, _MADV_HUGEPAGE) == 0


def empty_like(tensor: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(tensor)`` (same shape, dtype, device and strides), with huge pages advised for a large CPU
    tensor (``advise_huge_pages``). The values are uninitialised, as with torch's."""
    out = torch.empty_like(tensor)
    advise_huge_pages(out)
    return out
