"""The plan of one apply: every patched tensor ("slot") with the sorted list of LoRA contributions to it.

A slot is one weight Parameter (keyed by object identity) plus the bias attribute of the same module. q/k/v row slices of
one ``nn.MultiheadAttention.in_proj_weight`` are three targets in one slot. Contributions are sorted by a key that does
not depend on the order of the active list, so (A, B) and (B, A) sum the same float32 values in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lora_ext.adapters import ActiveLora, LayerAdapter, Target
from lora_ext.errors import Problem


@dataclass(frozen=True)
class Contribution:
    """One LoRA's update of one target: ``multiplier`` is never 0 (zero contributions are dropped while planning)."""

    target: Target
    adapter: LayerAdapter
    multiplier: float
    dyn: int | None
    lora_name: str
    order: tuple = field(compare=False)

    def signature(self) -> tuple:
        """Identity of this contribution for the "unchanged set" check (the adapter object itself, not its content)."""
        return (id(self.adapter), self.target.rows, self.multiplier, self.dyn)


@dataclass
class Slot:
    """One patchable tensor and everything that should be added to it.

    module: the module owning the tensors. weight_attr / bias_attr: attribute names (``weight``/``bias`` or
    ``in_proj_weight``/``in_proj_bias``). contributions: sorted by ``Contribution.order``.
    """

    module: nn.Module
    weight_attr: str
    bias_attr: str
    contributions: list[Contribution] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Canonical layer name(s) for messages, e.g. ``text_model.encoder.layers.0.self_attn.q_proj``."""
        names = sorted({c.target.canonical for c in self.contributions})
        return names[0] if len(names) == 1 else " + ".join(names)

    def signature(self) -> tuple:
        return tuple(c.signature() for c in self.contributions)


def _order_key(active: ActiveLora, target: Target, adapter: LayerAdapter, multiplier: float) -> tuple:
    rows = target.rows if target.rows is not None else (-1, -1)
    dyn = active.dyn if active.dyn is not None else -1
    # Content-based only: the same file under two tag names must sum in the same order as under one name.
    return (rows, active.lora.path, multiplier, dyn, adapter.algo, adapter.keys)


def build_plan(active: Sequence[ActiveLora]) -> tuple[dict[int, Slot], list[Problem]]:
    """Group every non-zero contribution of ``active`` by the weight tensor it changes.

    Returns ``{id(weight parameter): Slot}`` and the problems found (targets without a module or weight).
    """
    slots: dict[int, Slot] = {}
    problems: list[Problem] = []
    for entry in active:
        missing: list[str] = []
        for target, adapter in entry.lora.layers.items():
            multiplier = float(entry.multiplier(target))
            if multiplier == 0.0:
                continue
            module = target.module
            weight = getattr(module, target.weight, None) if module is not None else None
            if not isinstance(weight, torch.Tensor):
                missing.append(target.canonical)
                continue
            slot = slots.get(id(weight))
            if slot is None:
                slot = slots[id(weight)] = Slot(module, target.weight, target.bias)
            order = _order_key(entry, target, adapter, multiplier)
            slot.contributions.append(
                Contribution(target, adapter, multiplier, entry.dyn, entry.lora.name, order)
            )
        if missing:
            problems.append(
                Problem(
                    entry.lora.name,
                    f"{len(missing)} layer(s) of this LoRA point to no weight in the loaded model and were skipped "
                    f"(first: {missing[0]}). Reload the LoRA after changing the model.",
                    "warning",
                    tuple(missing),
                )
            )
    for slot in slots.values():
        slot.contributions.sort(key=lambda c: c.order)
    return slots, problems
