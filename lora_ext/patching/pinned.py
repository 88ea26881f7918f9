"""Pinned CPU memory for the copy strategy's pristine copies of GPU weights, carved out of 64 MiB blocks.

torch's CUDA host allocator rounds every pinned block up to a power of two, so a 52 MB backup takes 64 MiB and a
6.6 MB one 8 MiB: SD1.5's 1342 MiB of fp32 backups took 1864 MiB of page-locked RAM, which the OS can neither page
out nor give to anything else. ``PinnedSlabs`` asks torch for blocks of exactly ``SLAB_BYTES`` (a power of two, so
nothing is rounded) and hands out tensors that are views into them, first fit, so the same backups take 1408 MiB.
A backup larger than a slab gets a block of its own.

A slab is filled from its start; once every tensor handed out of it is gone (its backups were restored during a
switch), it is filled from its start again. Reusing it is safe although the restore's copy out of it may still be
running: every copy in and out of the slab is queued on the same CUDA stream, so the GPU runs them in order. When
nothing is patched the patcher drops the slabs (``reset``) and torch's allocator caches them for the next apply like
any pinned block (``memory.release_pinned_memory`` empties that cache).
"""

from __future__ import annotations

import math
import weakref

import torch

#: Bytes of one pinned block (a power of two: the host allocator would round any other size up to one).
SLAB_BYTES = 64 << 20
#: Start of every tensor in a slab is a multiple of this many bytes (enough for any dtype and for fast copies).
ALIGN = 512


class _Slab:
    """One block: ``used`` = bytes from its start that are handed out, ``live`` = bytes of tensors still alive."""

    def __init__(self, pin: bool) -> None:
        self.memory = torch.empty(SLAB_BYTES, dtype=torch.uint8, pin_memory=pin)
        self.used = 0
        self.live = 0

    def start_for(self, nbytes: int) -> int | None:
        start = -(-self.used // ALIGN) * ALIGN
        return start if start + nbytes <= SLAB_BYTES else None

    def gone(self, nbytes: int) -> None:
        """A tensor of ``nbytes`` handed out of this slab was freed (a ``weakref.finalize`` callback)."""
        self.live -= nbytes
        if self.live == 0:
            self.used = 0


class PinnedSlabs:
    """Hands out uninitialised CPU tensors packed into pinned blocks of ``SLAB_BYTES``.

    pin: allocate page-locked memory (needs CUDA); False gives ordinary memory with the same packing (tests).
    Not thread-safe: the patcher calls it from ``apply``, under its lock.
    """

    def __init__(self, pin: bool = True) -> None:
        self.pin = pin
        self._slabs: list[_Slab] = []

    def empty(self, shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A contiguous tensor of ``shape`` and ``dtype`` in pinned memory (values uninitialised)."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > SLAB_BYTES:
            return torch.empty(shape, dtype=dtype, pin_memory=self.pin)
        for slab in self._slabs:
            start = slab.start_for(nbytes)
            if start is not None:
                break
        else:
            slab, start = _Slab(self.pin), 0
            self._slabs.append(slab)
        slab.used = start + nbytes
        slab.live += nbytes
        tensor = slab.memory[start : start + nbytes].view(dtype).view(shape)
        weakref.finalize(tensor, slab.gone, nbytes)
        return tensor

    def slab_bytes(self) -> int:
        """Bytes of the slabs made since the last ``reset`` (what they cost, used or not)."""
        return len(self._slabs) * SLAB_BYTES

    def reset(self) -> None:
        """Forget every slab: each one is freed once the tensors handed out of it are gone. Call when no backup is
        held any more, so that the next apply packs from empty slabs again."""
        self._slabs = []
