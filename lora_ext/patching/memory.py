"""Give freed CPU memory back to the operating system.

Restoring frees every tensor a patch made, but glibc's allocator keeps most freed heap memory in the process for
reuse instead of returning it, so the resident size stays up by about one patch's worth (bounded, and reused by
the next apply, which then takes no page faults). Likewise torch keeps freed pinned (page-locked) host memory, where
the copy strategy keeps the pristine copies of GPU weights, cached for reuse. ``release_freed_memory`` hands both
back (``malloc_trim``, and torch's host-cache flush when CUDA is in use); the next apply then pays the page faults
(or the pinned allocations) again. Hosts call it when LoRAs stop being used.
"""

from __future__ import annotations

import ctypes
import sys

import torch


def release_freed_memory() -> bool:
    """Return the allocator's free heap memory, and torch's cached free pinned memory, to the OS; True when the heap
    part was possible (Linux with glibc)."""
    release_pinned_memory()
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # another C library (musl) has no malloc_trim
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


def release_pinned_memory() -> bool:
    """Free the pinned host blocks torch's CUDA host allocator caches and nothing uses; True when it ran.

    A no-op without an initialised CUDA context (nothing was pinned) or on a torch without the call (before 2.5:
    ``torch.accelerator.empty_host_cache``, earlier ``torch._C._host_emptyCache``).
    """
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return False
    accelerator = getattr(torch, "accelerator", None)
    empty = getattr(accelerator, "empty_host_cache", None) or getattr(torch._C, "_host_emptyCache", None)
    if empty is None:
        return False
    try:
        empty()
    except RuntimeError:  # no accelerator after all
        return False
    return True
