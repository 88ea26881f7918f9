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
from lora_ext.algorithms.oft import apply_rescale, cayley, constraint_of
from lora_ext.algorithms.types import AdapterShapeError, RawDelta


def butterfly(rotations: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """Apply the M butterfly stages ``rotations`` ``[M, n, b, b]`` to the rows of ``w0`` (float32)."""
    stages, n, b = rotations.shape[0], rotations.shape[1], rotations.shape[2]
    out, rest = w0.shape[0], tuple(w0.shape[1:])
    half = b // 2
    if n * b != out or b % 2 or any(out % (2 ** (i + 1) * half) for i in range(stages)):
        raise AdapterShapeError(
            f"BOFT blocks of shape {list(rotations.shape)} do not fit a weight of shape {list(w0.shape)}"
        )
    x = w0
    for i in range(stages):
        k = 2**i * half
        x = x.reshape(-1, 2, k, *rest).transpose(1, 2).reshape(n, b, *rest)
        x = torch.einsum("nij,nj...->ni...", rotations[i], x)
        x = x.reshape(-1, k, 2, *rest).transpose(1, 2).reshape(out, *rest)
    return x


def boft_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """ΔW_raw = rescale ⊙ butterfly(W₀) − W₀."""
    blocks = part(adapter, "oft_blocks", w0)
    rotations = cayley(blocks, constraint_of(adapter, w0.shape[0]))
    rotated = apply_rescale(adapter, butterfly(rotations, w0), w0)
    return RawDelta(weight=rotated - w0, fixed_scale=True)
