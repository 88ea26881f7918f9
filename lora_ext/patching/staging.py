"""Overlap the memory half of an apply with its arithmetic (CPU weights only).

Patching one slot has two halves. Preparing a destination that holds W₀ is memory-bound: the swap strategy allocates
a new tensor and copies W₀ into it, the copy strategy writes the pristine copy, and a switch copies W₀ over the tensor
installed last time. Adding the products into that destination is compute-bound. On a CPU, fresh memory is expensive
(the kernel faults in and zeroes every page), so doing the halves one after the other costs about M + G
(docs/PERFORMANCE.md). A ``Stager`` runs the preparation of later slots on one helper thread while the caller computes
earlier ones, which brings an apply down to about max(M, G). PyTorch releases the GIL inside its kernels, so the two
threads really run at the same time.

Only preparation runs on the helper thread, and each slot is prepared before the caller writes anything to it. The
caller takes the results in submission order. Leaving the ``with`` block waits for the helper and drops what was not
taken, also after an exception, so nothing outlives the apply that started it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Stager:
    """Runs preparation steps on one helper thread (``threaded``) or lazily on the caller's thread.

    modes: makes the thread-local torch modes the steps need (no grad, no autocast), entered around each step on the
    helper thread; the caller's thread already has them.
    """

    def __init__(self, threaded: bool, modes: Callable[[], contextlib.AbstractContextManager]) -> None:
        self.threaded = threaded
        self._modes = modes
        self._executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> Stager:
        if self.threaded:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lora_ext-stage")
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def submit(self, background: bool, fn: Callable[..., T], *args) -> Callable[[], T]:
        """Schedule ``fn(*args)``; the returned callable gives its result (re-raising its exception) when called.

        background: run it on the helper thread (when the stager is threaded); otherwise it runs when the result is
        asked for, on the caller's thread.
        """
        if self._executor is None or not background:
            return functools.partial(fn, *args)
        return self._executor.submit(self._in_modes, fn, args).result

    def _in_modes(self, fn: Callable[..., T], args: tuple) -> T:
        with self._modes():
            return fn(*args)
