"""BOFT, butterfly orthogonal fine-tuning (FORMATS.md §9.10, §10.7).

``oft_blocks`` ``[M, n, b, b]`` with n·b = out; R from the Cayley transform of all stages (constraint c = α·out on the
norm over all of them). Stage i: view the rows as ``(c, 2, k)`` with k = 2^i·b/2, swap to ``(c, k, 2)``, left-multiply
each of the n row blocks by R_{i,j} (R, not Rᵀ), undo the permutation. Stages compose unscaled; W' = rescale ⊙ result;
ΔW_raw = W' − W₀ and the multiplier is applied once (linear in m, unlike LyCORIS's per-stage lerp).
"""

from __future__ import annotations

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.common import part
from lora_ext.algorithms.oft import cayley_minus_identity, constraint_of, rescaled_difference
from lora_ext.algorithms.types import AdapterShapeError, RawDelta


def butterfly_difference(rotations_minus_eye: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """butterfly(W₀) − W₀ for M stages given as R − I ``[M, n, b, b]`` (float32).

    The difference D is carried through the stages (D ← D + P⁻¹(R − I)P(W₀ + D)) so that small rotations lose no
    precision to cancellation against W₀.
    """
    stages, n, b = rotations_minus_eye.shape[0], rotations_minus_eye.shape[1], rotations_minus_eye.shape[2]
    out, rest = w0.shape[0], tuple(w0.shape[1:])
    half = b // 2
    if n * b != out or b % 2 or any(out % (2 ** (i + 1) * half) for i in range(stages)):
        raise AdapterShapeError(
            f"BOFT blocks of shape {list(rotations_minus_eye.shape)} do not fit a weight of shape {list(w0.shape)}"
        )
    diff = torch.zeros_like(w0)
    for i in range(stages):
        k = 2**i * half
        x = (w0 + diff).reshape(-1, 2, k, *rest).transpose(1, 2).reshape(n, b, *rest)
        x = torch.einsum("nij,nj...->ni...", rotations_minus_eye[i], x)
        diff = diff + x.reshape(-1, k, 2, *rest).transpose(1, 2).reshape(out, *rest)
    return diff


def boft_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """ΔW_raw = rescale ⊙ butterfly(W₀) − W₀."""
    blocks = part(adapter, "oft_blocks", w0)
    if blocks.dim() != 4:
        raise AdapterShapeError(f"BOFT oft_blocks must be [M, n, b, b], got {list(blocks.shape)}")
    moved = butterfly_difference(cayley_minus_identity(blocks, constraint_of(adapter, w0.shape[0])), w0)
    return RawDelta(weight=rescaled_difference(adapter, moved, w0), fixed_scale=True)
