"""GLoRA, old and new LyCORIS layouts (FORMATS.md §9.8, §10.5). s = α/r is applied.

Old (before LyCORIS 3.0): a1 ``[r, in]``, a2 ``[in, r]``, b1 ``[r, in]``, b2 ``[out, r]``, r = a1.shape[0];
ΔW_raw = b2·b1 + flat(W₀)·a2·a1.
New: a1 ``[in, r]``, a2 ``[r, in]``, b1 ``[out, r]``, b2 ``[r, in(, kh, kw)]``, r = a2.shape[0];
ΔW_raw = W₀·a1·a2 (contracting the input axis) + b1·b2, or with a Tucker core ``bm`` ``[r, r, kh, kw]``
B[i,j,…] = Σ bm[p,q,…]·b1[i,p]·b2[q,j].
Layout test: old iff a2.shape[0] equals the column count of flat(W₀) (old wins when ambiguous, as in ComfyUI).
"""

from __future__ import annotations

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.common import alpha_scale, optional_part, part
from lora_ext.algorithms.shapes import unflatten_like
from lora_ext.algorithms.types import RawDelta


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def is_old_layout(a2: torch.Tensor, w0: torch.Tensor) -> bool:
    """FORMATS.md §9.8 layout test on the stored ``a2`` and the target weight."""
    return a2.shape[0] == _flat(w0).shape[1]


def glora_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """ΔW_raw of a GLoRA adapter (depends on W₀), float32 ``[out, in(, kh, kw)]``."""
    a1, a2 = _flat(part(adapter, "a1", w0)), part(adapter, "a2", w0)
    b1, b2 = _flat(part(adapter, "b1", w0)), part(adapter, "b2", w0)
    bm = optional_part(adapter, "bm", w0)
    if is_old_layout(a2, w0):
        weight = _flat(b2) @ b1 + (_flat(w0) @ _flat(a2)) @ a1
        return RawDelta(
            weight=unflatten_like(weight, w0.shape), scale=alpha_scale(adapter.alpha, a1.shape[0])
        )
    a2 = _flat(a2)
    wa = torch.einsum("oi...,ij->oj...", torch.einsum("oi...,ij->oj...", w0, a1), a2)
    if bm is not None:
        b = torch.einsum("pq...,ip,qj->ij...", bm, b1, _flat(b2))
    else:
        b = unflatten_like(b1 @ _flat(b2), w0.shape).reshape(w0.shape)
    return RawDelta(weight=wa + b, scale=alpha_scale(adapter.alpha, a2.shape[0]))
