"""LoRA / LoCon / Tucker (CP) and DyLoRA (FORMATS.md §9.1, §9.2).

Parts: ``up`` U ``[out, r(,1,1)]``, ``down`` D ``[r, in(,kh,kw)]``, optional ``mid`` M ``[r, r, kh, kw]``.
ΔW_raw = U·D (Linear), reshape(flat(U)·flat(D)) (conv), or Σ_{a,b} U[o,a]·M[a,b,y,x]·D[b,i] (Tucker); s = α/r with
r = D.shape[0] at full rank. ``dyn=d`` keeps the first d ranks and leaves s at α/r_max.
"""

from __future__ import annotations

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.common import alpha_scale, optional_part, part
from lora_ext.algorithms.types import RawDelta


def lora_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """ΔW_raw of a LoRA/LoCon/Tucker adapter, float32, shape ``[out, in, *kernel]`` (or ``[out, in]``)."""
    up = part(adapter, "up", w0)
    down = part(adapter, "down", w0)
    mid = optional_part(adapter, "mid", w0)
    rank = down.shape[0]
    scale = alpha_scale(adapter.alpha, rank)
    if dyn is not None and 0 < dyn < rank:
        up = up[:, :dyn]
        down = down[:dyn]
        if mid is not None:
            mid = mid[:dyn, :dyn]
    up2 = up.reshape(up.shape[0], -1)
    if mid is not None:
        down2 = down.reshape(down.shape[0], -1)
        weight = torch.einsum("oa,abyx,bi->oiyx", up2, mid, down2)
    else:
        weight = (up2 @ down.reshape(down.shape[0], -1)).reshape(up.shape[0], *down.shape[1:])
    return RawDelta(weight=weight, scale=scale)
