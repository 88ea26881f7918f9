"""Keeping a patched model on the multipliers of the current sampling step (USERS G6, G8), for both hosts.

A host makes one ``StepPatches`` per sampling pass whose multipliers follow the steps (``activation.steps_vary``)
and calls ``advance`` from its per-step hook (A1111: ``on_cfg_denoiser``; diffusers: ``callback_on_step_end``).
The patcher is called only when the multipliers differ from the step patched last, and it re-patches only the
tensors whose contribution changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lora_ext.activation import at_step, multipliers_at
from lora_ext.adapters import ActiveLora
from lora_ext.errors import Problem


class StepPatches:
    """The patches of one sampling pass whose multipliers follow the steps.

    patcher: the ``Patcher`` holding the model, already applied at step 0 of the pass. active: the scheduled active
    set (``ActiveLora.schedule`` set on some). total: the pass's steps, used when the host's hook gives none.
    patched: ``multipliers_at`` of the step the model holds now. repatches: how many steps needed a new patch.
    following: False once a re-patch failed (the patcher restored the model; the pass goes on without LoRAs).
    """

    def __init__(self, patcher: Any, active: Sequence[ActiveLora], total: int) -> None:
        self.patcher = patcher
        self.active = list(active)
        self.total = total
        self.patched = multipliers_at(self.active, 0, total)
        self.repatches = 0
        self.following = True

    def advance(self, step: int, total: int | None = None) -> list[Problem]:
        """Patch the multipliers of ``step`` (steps from 0) of a pass of ``total`` steps (None: ``self.total``)
        when they differ from those patched last; returns the patcher's problems (none when nothing was done)."""
        total = total or self.total
        if not self.following or step >= total:
            return []
        wanted = multipliers_at(self.active, step, total)
        if wanted == self.patched:
            return []
        problems: list[Problem] = []
        if self.patcher.only_moved():
            # Moved since the last patch (model CPU offload, the webui's low-VRAM modes): the tensors hold moved
            # copies of the patched values, which the patcher does not recognise as its own. Put the originals
            # back into them first, so the new patch is computed from W₀ and not added over the old one.
            problems += self.patcher.restore(moved=True)
        result = self.patcher.apply(at_step(self.active, step, total))
        self.patched = wanted
        self.repatches += 1
        self.following = not result.failed
        return problems + list(result.problems)
