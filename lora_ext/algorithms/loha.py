"""LoHa: Hadamard product of two low-rank products, plain or Tucker (FORMATS.md §9.3).

Plain parts: ``hada_w1_a``, ``hada_w2_a`` ``[out, r]``; ``hada_w1_b``, ``hada_w2_b`` ``[r, in·kh·kw]``.
Tucker adds ``hada_t1``, ``hada_t2`` ``[r, r, kh, kw]`` and stores ``hada_w?_a`` as ``[r, out]``, ``hada_w?_b`` as
``[r, in]``. ΔW_raw = (W1a·W1b) ⊙ (W2a·W2b); s = α/r with r = ``hada_w1_b.shape[0]``.
"""

from __future__ import annotations

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.common import alpha_scale, optional_part, part
from lora_ext.algorithms.shapes import unflatten_like
from lora_ext.algorithms.types import RawDelta


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def tucker_product(core: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """M[p,q,…] = Σ_{i,j} core[i,j,…]·a[i,p]·b[j,q] (float32; a ``[r, out]``, b ``[r, in]``)."""
    return torch.einsum("ij...,ip,jq->pq...", core, _flat(a), _flat(b))


def loha_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """ΔW_raw of a LoHa adapter, float32, ``[out, in(, kh, kw)]``."""
    w1a, w1b = part(adapter, "hada_w1_a", w0), part(adapter, "hada_w1_b", w0)
    w2a, w2b = part(adapter, "hada_w2_a", w0), part(adapter, "hada_w2_b", w0)
    t1, t2 = optional_part(adapter, "hada_t1", w0), optional_part(adapter, "hada_t2", w0)
    scale = alpha_scale(adapter.alpha, w1b.shape[0])
    if t1 is not None and t2 is not None:
        weight = tucker_product(t1, w1a, w1b) * tucker_product(t2, w2a, w2b)
    else:
        weight = unflatten_like((_flat(w1a) @ _flat(w1b)) * (_flat(w2a) @ _flat(w2b)), w0.shape)
    return RawDelta(weight=weight, scale=scale)
