"""Norm-layer affine deltas (FORMATS.md §9.6): Δγ = m·``w_norm`` ``[C]``, Δβ = m·``b_norm`` ``[C]``; s = 1."""

from __future__ import annotations

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.common import optional_part
from lora_ext.algorithms.types import RawDelta


def norm_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """``w_norm`` as the weight delta and ``b_norm`` as the bias delta (either may be absent)."""
    return RawDelta(weight=optional_part(adapter, "w_norm", w0), bias=optional_part(adapter, "b_norm", w0))
