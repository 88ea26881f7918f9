"""Overlap the memory half of an apply with its arithmetic (CPU weights only).

Patching one slot has two halves. Preparing a destination that holds W₀ is memory-bound: the swap strategy allocates
a new tensor and copies W₀ into it, the copy strategy writes the pristine copy, and a switch copies W₀ over the tensor
installed last time. Adding the products into that destination is compute-bound. On a CPU, fresh memory is expensive
(the kernel faults in and zeroes every page), so doing the halves one after the other costs about M + G
(docs/PERFORMANCE.md). A ``Stager`` runs the preparation of later slots on one helper thread while the caller computes
earlier ones, which brings an apply down to about max(M, G). PyTorch releases the GIL inside its kernels, so the two
threads really run at the same time.

When the copies are the slower half (page faults), the caller would wait for the helper. Instead, while the step it
needs is still running on the helper, the caller takes the last step the helper has not started yet and runs it itself
(``stealable`` steps: the helper works from the front of the queue, the caller from the back), so both threads stay
busy and an apply costs about (M + G) / 2 then.

Each slot is prepared before the caller writes anything to it, and the caller takes the results in submission order.
Leaving the ``with`` block waits for the helper and drops what was not taken, also after an exception, so nothing
outlives the apply that started it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class _Step:
    """One step queued for the helper thread (``future``); the caller may run it instead (``steal``) while the helper
    has not started it."""

    def __init__(self, run: Callable[[], Any], future: Future, stealable: bool) -> None:
        self.run, self.future, self.stealable = run, future, stealable
        self._stolen = False
        self._value: Any = None
        self._error: BaseException | None = None

    def steal(self) -> bool:
        """Run the step on the calling thread if the helper has not started it; False when it has (or it is done)."""
        if not self.stealable or self._stolen:  # (cancel() would say True again for a step stolen before)
            return False
        if not self.future.cancel():  # the helper has started or finished it
            return False
        self._stolen = True
        self._value, self._error = _outcome(self.run)
        return True

    def result(self) -> Any:
        if not self._stolen:
            return self.future.result()
        if self._error is not None:
            raise self._error
        return self._value


def _outcome(run: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """(result, None) or (None, the exception) of ``run()``; the exception is re-raised when the step's result is
    taken, as a helper's exception would be. A plain function, so the exception's traceback does not lead back to the
    step that holds it (a cycle would keep the step's tensors alive until the next gc)."""
    try:
        return run(), None
    except Exception as exc:
        return None, exc


class Stager:
    """Runs preparation steps on one helper thread (``threaded``) or lazily on the caller's thread.

    modes: makes the thread-local torch modes the steps need (no grad, no autocast), entered around each step on the
    helper thread; the caller's thread already has them.
    """

    def __init__(self, threaded: bool, modes: Callable[[], contextlib.AbstractContextManager]) -> None:
        self.threaded = threaded
        self._modes = modes
        self._executor: ThreadPoolExecutor | None = None
        self._stealable: list[_Step] = []

    def __enter__(self) -> Stager:
        if self.threaded:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lora_ext-stage")
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._stealable = []

    def submit(
        self, background: bool, fn: Callable[..., T], *args, stealable: bool = False
    ) -> Callable[[], T]:
        """Schedule ``fn(*args)``; the returned callable gives its result (re-raising its exception) when called.

        background: run it on the helper thread (when the stager is threaded); otherwise it runs when the result is
        asked for, on the caller's thread.
        stealable: the caller may run it itself while it waits for another step (it must be safe on either thread and
        use nothing another step uses at the same time).
        """
        if self._executor is None or not background:
            return functools.partial(fn, *args)
        run = functools.partial(self._in_modes, fn, args)
        step = _Step(run, self._executor.submit(run), stealable)
        if stealable:
            self._stealable.append(step)
        return functools.partial(self._take, step)

    def _take(self, step: _Step) -> Any:
        step.steal()
        while step.future.running() and self._steal_last():
            pass
        return step.result()

    def _steal_last(self) -> bool:
        """Run the last stealable step the helper has not started on the caller's thread; False when there is none."""
        while self._stealable:
            if self._stealable.pop().steal():
                return True
        return False

    def _in_modes(self, fn: Callable[..., T], args: tuple) -> T:
        with self._modes():
            return fn(*args)
