"""LoKr: Kronecker product of two factors, each full, low-rank or (second) Tucker (FORMATS.md §9.4).

W1 = ``lokr_w1`` ``[a, b]`` or ``lokr_w1_a``·``lokr_w1_b``. W2 = ``lokr_w2`` ``[c, d(, kh, kw)]``, or
``lokr_w2_a`` ``[c, r]``·``lokr_w2_b`` ``[r, d·kh·kw]``, or Tucker Σ t2[i,j,…]·w2_a[i,p]·w2_b[j,q] with ``lokr_t2``.
ΔW_raw = W1 ⊗ W2 reshaped to ``[a·c, b·d, …]``. s = α/r with r = ``lokr_w2_b.shape[0]`` if W2 is factored, else
``lokr_w1_b.shape[0]``; both factors full → s = 1 whatever α says (FORMATS.md §10.4).
"""

from __future__ import annotations

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.common import alpha_scale, optional_part
from lora_ext.algorithms.loha import tucker_product
from lora_ext.algorithms.shapes import unflatten_like
from lora_ext.algorithms.types import AdapterShapeError, RawDelta


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def lokr_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """ΔW_raw of a LoKr adapter, float32, ``[out, in(, kh, kw)]``."""
    w1 = optional_part(adapter, "lokr_w1", w0)
    w1a, w1b = optional_part(adapter, "lokr_w1_a", w0), optional_part(adapter, "lokr_w1_b", w0)
    w2 = optional_part(adapter, "lokr_w2", w0)
    w2a, w2b = optional_part(adapter, "lokr_w2_a", w0), optional_part(adapter, "lokr_w2_b", w0)
    t2 = optional_part(adapter, "lokr_t2", w0)
    rank = None
    if w1 is None:
        if w1a is None or w1b is None:
            raise AdapterShapeError("LoKr adapter has neither lokr_w1 nor both lokr_w1_a and lokr_w1_b")
        w1 = _flat(w1a) @ _flat(w1b)
        rank = w1b.shape[0]
    if w2 is None:
        if w2a is None or w2b is None:
            raise AdapterShapeError("LoKr adapter has neither lokr_w2 nor both lokr_w2_a and lokr_w2_b")
        w2 = tucker_product(t2, w2a, w2b) if t2 is not None else _flat(w2a) @ _flat(w2b)
        rank = w2b.shape[0]
    scale = 1.0 if rank is None else alpha_scale(adapter.alpha, rank)
    w1 = _flat(w1)
    if w2.dim() > 2:
        w1 = w1.reshape(*w1.shape, *([1] * (w2.dim() - 2)))
    weight = unflatten_like(torch.kron(w1, w2.contiguous()), w0.shape)
    return RawDelta(weight=weight, scale=scale)
