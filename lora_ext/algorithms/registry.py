"""Algorithm name → family function computing ``RawDelta`` (FORMATS.md §9)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.boft import boft_raw
from lora_ext.algorithms.full import full_raw
from lora_ext.algorithms.glora import glora_raw
from lora_ext.algorithms.ia3 import ia3_raw
from lora_ext.algorithms.loha import loha_raw
from lora_ext.algorithms.lokr import lokr_raw
from lora_ext.algorithms.lora import lora_raw
from lora_ext.algorithms.norm import norm_raw
from lora_ext.algorithms.oft import oft_diag_raw, oft_raw
from lora_ext.algorithms.types import RawDelta

#: A family: (adapter, pristine float32 weight, dyn) -> RawDelta.
Family = Callable[[LayerAdapter, torch.Tensor, "int | None"], RawDelta]


def _oft_by_rank(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """``oft_blocks`` of rank 4 are BOFT whatever the label says (LyCORIS's own test, FORMATS.md §9.10)."""
    blocks = adapter.tensors.get("oft_blocks")
    if blocks is not None and blocks.dim() == 4:
        return boft_raw(adapter, w0, dyn)
    return oft_raw(adapter, w0, dyn)


FAMILIES: dict[str, Family] = {
    "lora": lora_raw,
    "loha": loha_raw,
    "lokr": lokr_raw,
    "full": full_raw,
    "norm": norm_raw,
    "ia3": ia3_raw,
    "glora": glora_raw,
    "oft": _oft_by_rank,
    "boft": boft_raw,
    "oft_diag": oft_diag_raw,
}

#: Families whose ΔW depends on W₀ itself (the patcher must hand them the pristine weight, never a patched one).
W_DEPENDENT = frozenset({"ia3", "glora", "oft", "boft", "oft_diag"})
