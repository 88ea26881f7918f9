"""Algorithm name → family function computing ``RawDelta`` (FORMATS.md §9)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.lora import lora_raw
from lora_ext.algorithms.types import RawDelta

#: A family: (adapter, pristine float32 weight, dyn) -> RawDelta.
Family = Callable[[LayerAdapter, torch.Tensor, "int | None"], RawDelta]

FAMILIES: dict[str, Family] = {
    "lora": lora_raw,
}

#: Families whose ΔW depends on W₀ itself (the patcher must hand them the pristine weight, never a patched one).
W_DEPENDENT = frozenset({"ia3", "glora", "oft", "boft", "oft_diag"})
