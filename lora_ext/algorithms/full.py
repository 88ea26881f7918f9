"""Full weight difference (FORMATS.md §9.5): ΔW_raw = ``diff``, Δb_raw = ``diff_b``; s = 1 (a ``scale`` part applies)."""

from __future__ import annotations

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.common import optional_part
from lora_ext.algorithms.types import RawDelta


def full_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """``diff`` (any shape the bridges accept, e.g. 4-channel ``conv_in`` on an inpainting UNet) and ``diff_b``."""
    return RawDelta(weight=optional_part(adapter, "diff", w0), bias=optional_part(adapter, "diff_b", w0))
