"""Give freed CPU memory back to the operating system.

Restoring frees every tensor a patch made, but glibc's allocator keeps most freed heap memory in the process for
reuse instead of returning it, so the resident size stays up by about one patch's worth (bounded, and reused by
the next apply, which then takes no page faults). ``release_freed_memory`` hands that memory back
(``malloc_trim``); the next apply then pays the page faults again. Hosts call it when LoRAs stop being used.
"""

from __future__ import annotations

import ctypes
import sys


def release_freed_memory() -> bool:
    """Return the allocator's free heap memory to the OS; True when that was possible (Linux with glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # another C library (musl) has no malloc_trim
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
