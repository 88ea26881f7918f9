"""Diag-OFT / COFT (``oft_blocks`` ``[n, b, b]``) and old LyCORIS ``oft_diag`` (FORMATS.md §9.9, §9.11, §10.7).

Rows of W₀ form n blocks of b rows; W'_k = R_kᵀ·W_k (einsum ``k n m, k n … -> k m …``), then W' ← rescale ⊙ W'.
ΔW_raw = W' − W₀, multiplied by m once (linear in m). Diag-OFT: R_k = (I + Q_k)(I − Q_k)⁻¹ with Q = B − Bᵀ clamped
to ‖Q‖_F ≤ c = α·out when α > 0 (norm over all blocks). ``oft_diag`` stores R itself. No α/r scale exists; the
``scale`` part is ignored, as in A1111.
"""

from __future__ import annotations

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.common import optional_part, part
from lora_ext.algorithms.types import AdapterShapeError, RawDelta


def cayley(blocks: torch.Tensor, constraint: float) -> torch.Tensor:
    """R = (I + Q)(I − Q)⁻¹ per block, Q = B − Bᵀ rescaled to Frobenius norm ``constraint`` when larger (c > 0).

    blocks: float32 ``[..., b, b]``; the norm is taken over all blocks together.
    """
    q = blocks - blocks.transpose(-1, -2)
    if constraint > 0:
        norm = torch.linalg.vector_norm(q)
        if norm > constraint:
            q = q * (constraint / norm)
    eye = torch.eye(blocks.shape[-1], dtype=blocks.dtype, device=blocks.device)
    return (eye + q) @ torch.linalg.inv(eye - q)


def constraint_of(adapter: LayerAdapter, out: int) -> float:
    """c = α·out; 0 (no clamp) when α is absent or not positive."""
    return float(adapter.alpha) * out if adapter.alpha is not None and adapter.alpha > 0 else 0.0


def apply_rescale(adapter: LayerAdapter, rotated: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """rescale ⊙ W' with ``rescale`` laid along the output axis (``[out, 1, …]``); W' unchanged without it."""
    rescale = optional_part(adapter, "rescale", w0)
    if rescale is None:
        return rotated
    if rescale.numel() != w0.shape[0]:
        raise AdapterShapeError(
            f"OFT rescale of shape {list(rescale.shape)} does not match {w0.shape[0]} output rows of {list(w0.shape)}"
        )
    return rotated * rescale.reshape(w0.shape[0], *([1] * (w0.dim() - 1)))


def rotate_blocks_transposed(rotations: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """W'_k = R_kᵀ·W_k over consecutive row blocks; rotations ``[n, b, b]`` with n·b = out."""
    n, b = rotations.shape[0], rotations.shape[1]
    if n * b != w0.shape[0]:
        raise AdapterShapeError(
            f"OFT blocks of shape {list(rotations.shape)} cover {n * b} output rows, "
            f"but the weight of shape {list(w0.shape)} has {w0.shape[0]}"
        )
    blocks = w0.reshape(n, b, *w0.shape[1:])
    return torch.einsum("knm,kn...->km...", rotations, blocks).reshape(w0.shape)


def oft_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """Diag-OFT / COFT ΔW_raw = rescale ⊙ (Rᵀ-rotated W₀) − W₀."""
    blocks = part(adapter, "oft_blocks", w0)
    rotations = cayley(blocks, constraint_of(adapter, w0.shape[0]))
    rotated = apply_rescale(adapter, rotate_blocks_transposed(rotations, w0), w0)
    return RawDelta(weight=rotated - w0, fixed_scale=True)


def oft_diag_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """Old LyCORIS OFT: ``oft_diag`` ``[out/b, b, b]`` holds R directly."""
    rotations = part(adapter, "oft_diag", w0)
    rotated = apply_rescale(adapter, rotate_blocks_transposed(rotations, w0), w0)
    return RawDelta(weight=rotated - w0, fixed_scale=True)
