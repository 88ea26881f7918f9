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


def cayley_minus_identity(blocks: torch.Tensor, constraint: float) -> torch.Tensor:
    """R − I for the Cayley transform R = (I + Q)(I − Q)⁻¹, computed as 2Q(I − Q)⁻¹ (no cancellation near I).

    blocks: float32 ``[..., b, b]``; Q = B − Bᵀ, rescaled to Frobenius norm ``constraint`` (over all blocks together)
    when c > 0 and ‖Q‖_F > c.
    """
    q = blocks - blocks.transpose(-1, -2)
    if constraint > 0:
        # min(1, c/‖Q‖) as a tensor: no host sync on accelerators; a factor of exactly 1 leaves Q bit-identical.
        q = q * torch.clamp(constraint / torch.linalg.vector_norm(q), max=1.0)
    eye = torch.eye(blocks.shape[-1], dtype=blocks.dtype, device=blocks.device)
    # I − Q is invertible for skew-symmetric Q; inv_ex skips the error check, which would sync with the device.
    return 2 * q @ torch.linalg.inv_ex(eye - q).inverse


def constraint_of(adapter: LayerAdapter, out: int) -> float:
    """c = α·out; 0 (no clamp) when α is absent or not positive."""
    return float(adapter.alpha) * out if adapter.alpha is not None and adapter.alpha > 0 else 0.0


def rescaled_difference(adapter: LayerAdapter, moved: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """rescale ⊙ (W₀ + D) − W₀ = (rescale − 1) ⊙ W₀ + rescale ⊙ D, with ``rescale`` on the output axis; D without it."""
    rescale = optional_part(adapter, "rescale", w0)
    if rescale is None:
        return moved
    if rescale.numel() != w0.shape[0]:
        raise AdapterShapeError(
            f"OFT rescale of shape {list(rescale.shape)} does not match {w0.shape[0]} output rows of {list(w0.shape)}"
        )
    rescale = rescale.reshape(w0.shape[0], *([1] * (w0.dim() - 1)))
    return (rescale - 1) * w0 + rescale * moved


def rotate_blocks_transposed(rotations_minus_eye: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """D_k = (R_k − I)ᵀ·W_k = R_kᵀ·W_k − W_k over consecutive row blocks; ``[n, b, b]`` with n·b = out."""
    n, b = rotations_minus_eye.shape[0], rotations_minus_eye.shape[1]
    if rotations_minus_eye.dim() != 3 or n * b != w0.shape[0]:
        raise AdapterShapeError(
            f"OFT blocks of shape {list(rotations_minus_eye.shape)} do not cover the {w0.shape[0]} output rows "
            f"of a weight of shape {list(w0.shape)}"
        )
    blocks = w0.reshape(n, b, *w0.shape[1:])
    return torch.einsum("knm,kn...->km...", rotations_minus_eye, blocks).reshape(w0.shape)


def oft_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """Diag-OFT / COFT ΔW_raw = rescale ⊙ (Rᵀ-rotated W₀) − W₀."""
    blocks = part(adapter, "oft_blocks", w0)
    moved = rotate_blocks_transposed(cayley_minus_identity(blocks, constraint_of(adapter, w0.shape[0])), w0)
    return RawDelta(weight=rescaled_difference(adapter, moved, w0), fixed_scale=True)


def oft_diag_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """Old LyCORIS OFT: ``oft_diag`` ``[out/b, b, b]`` holds R directly."""
    rotations = part(adapter, "oft_diag", w0)
    eye = torch.eye(rotations.shape[-1], dtype=rotations.dtype, device=rotations.device)
    moved = rotate_blocks_transposed(rotations - eye, w0)
    return RawDelta(weight=rescaled_difference(adapter, moved, w0), fixed_scale=True)
