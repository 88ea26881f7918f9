"""Pristine copies of patched tensors and the two ways to put them back (FORMATS.md §10.2: restore by copy, never by
subtracting a delta).

- swap: the original tensor object itself is the backup; the patched result is installed as the Parameter's new
  ``.data``. Restore is a pointer swap (O(1), bit-exact by construction). Costs both versions on the weight's device
  while patched.
- copy: a copy of the original goes to CPU memory (pinned when the weight is on a GPU); the Parameter is written in
  place; restore copies the bytes back.

The Parameter object never changes in either strategy, so references the host holds stay valid. A bias that did not
exist before the patch is created as a new Parameter and removed again on restore.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lora_ext.patching import fresh_memory
from lora_ext.patching.pinned import PinnedSlabs

Strategy = Literal["swap", "copy"]


def choose_strategy(tensor: torch.Tensor, setting: str) -> Strategy:
    """The strategy for one tensor: ``setting`` is "auto", "swap" or "copy".

    auto: swap on CPU (same RAM as a copy, O(1) restore), copy on accelerators (keeps VRAM free). Swap is never used for
    plain tensors (not Parameters) or for views into a larger storage, because replacing ``.data`` would break aliasing
    (tied or packed weights); those always use copy.
    """
    if setting == "copy" or not isinstance(tensor, nn.Parameter) or not _owns_storage(tensor):
        return "copy"
    if setting == "swap":
        return "swap"
    return "swap" if tensor.device.type == "cpu" else "copy"


def _owns_storage(tensor: torch.Tensor) -> bool:
    return (
        tensor.is_contiguous()
        and tensor.storage_offset() == 0
        and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    )


def _cpu_copy(tensor: torch.Tensor, pinned: PinnedSlabs | None = None) -> torch.Tensor:
    """A CPU copy of ``tensor`` (pinned when it lives on CUDA, so the copy back can be asynchronous; carved out of
    ``pinned``'s slabs when given, instead of a block of its own that torch rounds up to a power of two)."""
    if tensor.device.type == "cpu":
        return tensor.detach().clone()
    if tensor.device.type == "cuda" and pinned is not None:
        dest = pinned.empty(tensor.shape, tensor.dtype)
    else:
        dest = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=tensor.device.type == "cuda")
    # Asynchronous only into pinned memory, which the apply's final synchronize waits for; a copy into ordinary
    # memory (MPS and other accelerators) must be complete when this returns.
    dest.copy_(tensor.detach(), non_blocking=dest.is_pinned())
    return dest


@dataclass
class TensorBackup:
    """The pristine state of one attribute of one module.

    original: swap: the original tensor (the old ``.data``); copy: its CPU copy; None when ``created``.
    created: the attribute was None (a bias added by ``diff_b``/``b_norm``); restore sets it back to None.
    installed: (data_ptr, version, shape, dtype) of what the patch left in place, for ``matches_installed``.
    """

    module: nn.Module
    attr: str
    strategy: Strategy
    original: torch.Tensor | None
    created: bool = False
    installed: tuple | None = None

    @classmethod
    def take(
        cls, module: nn.Module, attr: str, setting: str, fill: bool = True, pinned: PinnedSlabs | None = None
    ) -> TensorBackup:
        """Back up ``module.<attr>`` before it is changed (a None attribute is recorded as ``created``).

        fill: False (CPU tensors only) allocates the copy strategy's pristine copy without writing it; the caller must
        copy the current values into ``original`` before it changes anything.
        pinned: where the copy strategy's pristine copies of CUDA tensors are carved from (None: a block each).
        """
        current = getattr(module, attr, None)
        if current is None:
            return cls(module, attr, "swap", None, created=True)
        strategy = choose_strategy(current, setting)
        if strategy == "swap":
            original = current.data
        elif fill or current.device.type != "cpu":
            original = _cpu_copy(current, pinned)
        else:
            original = fresh_memory.empty_like(current.detach())
        return cls(module, attr, strategy, original)

    def install(self, result: torch.Tensor) -> None:
        """Put ``result`` (already in the storage dtype) in place: new Parameter, swapped ``.data`` or copied bytes."""
        if self.created:
            setattr(self.module, self.attr, nn.Parameter(result, requires_grad=False))
        else:
            current = getattr(self.module, self.attr)
            if result.data_ptr() == current.data_ptr():
                pass  # written in place (copy strategy, or a swap tensor reused by a switch)
            elif self.strategy == "swap":
                current.data = result
            else:
                current.data.copy_(result)
        self.mark_installed()

    def mark_installed(self) -> None:
        """Record what is in place now (call after any in-place write done outside ``install``)."""
        self.installed = _fingerprint(getattr(self.module, self.attr, None))

    def matches_installed(self) -> bool:
        """True when the module still holds exactly the tensor the patch installed: same storage, shape and dtype, and
        no in-place write through the Parameter since (its version counter; ``load_state_dict`` bumps it)."""
        return (
            self.installed is not None
            and _fingerprint(getattr(self.module, self.attr, None)) == self.installed
        )

    def was_moved(self) -> bool:
        """True when the module now holds another tensor than the installed one that nothing wrote to since: a move
        (``module.to(device)`` sets ``param.data`` to a copy; the parameter's version counter stays), not a reload
        (``load_state_dict`` writes in place and bumps it)."""
        current = _fingerprint(getattr(self.module, self.attr, None))
        if self.installed is None or current is None or current == self.installed:
            return False
        return current[1] == self.installed[1] and current[2:] == self.installed[2:]

    def restore(self) -> None:
        """Bring back the pristine tensor bit-exactly (pointer swap, byte copy, or removal of a created bias)."""
        if self.created:
            setattr(self.module, self.attr, None)
        elif self.strategy == "swap":
            getattr(self.module, self.attr).data = self.original
        else:
            getattr(self.module, self.attr).data.copy_(self.original, non_blocking=True)
        self.original = None

    def restore_into_current(self) -> bool:
        """Copy the pristine values into whatever tensor the module holds now (it was moved, e.g. ``module.to()``).

        Returns False (and restores nothing) when the shapes no longer agree. Created biases are removed.
        """
        if self.created:
            setattr(self.module, self.attr, None)
            return True
        current = getattr(self.module, self.attr, None)
        if current is None or self.original is None or current.shape != self.original.shape:
            return False
        current.data.copy_(self.original)
        self.original = None
        return True

    def discard(self) -> None:
        """Forget the backup without restoring (weights were reloaded in place); a created bias is still removed."""
        if self.created and self.installed is not None:
            setattr(self.module, self.attr, None)
        self.original = None

    def held_bytes(self) -> int:
        """Memory this backup keeps alive beyond the model's own tensors (the pristine copy or the swapped-out one)."""
        if self.original is None:
            return 0
        return self.original.numel() * self.original.element_size()


def _fingerprint(tensor: torch.Tensor | None) -> tuple | None:
    if tensor is None:
        return None
    return (tensor.data_ptr(), tensor._version, tuple(tensor.shape), tensor.dtype)
