"""Independent test oracle: every delta written plainly from FORMATS.md §9–§10 with einsum and explicit loops.

Nothing here imports ``lora_ext.algorithms``; each function takes plain float64 tensors and returns ΔW (float64) so
that its rounding differs from the code under test. Shapes follow FORMATS.md §1 notation.
"""

from __future__ import annotations

import torch


def f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64)


def scale_of(alpha: float | None, rank: int) -> float:
    """s = α/r; 1 when α is missing or zero (§10.3)."""
    return 1.0 if alpha is None or alpha == 0 else alpha / rank


# --- §9.1 / §9.2 LoRA, LoCon, Tucker, DyLoRA ------------------------------------------------------------------------


def lora(up, down, alpha, m, w_shape, mid=None, dyn=None):
    """ΔW = m·s·U·D (with Tucker core when ``mid``); dyn keeps the first ranks with s = α/r_max."""
    up, down = f64(up), f64(down)
    r = down.shape[0]
    s = scale_of(alpha, r)
    if dyn is not None:
        up, down = up[:, :dyn], down[:dyn]
        mid = None if mid is None else mid[:dyn, :dyn]
    u = up.reshape(up.shape[0], up.shape[1])  # [out, r] (drops trailing 1×1)
    if mid is not None:
        mid = f64(mid)
        d = down.reshape(down.shape[0], down.shape[1])
        delta = torch.einsum("oa,abyx,bi->oiyx", u, mid, d)
    else:
        rank = down.shape[0]
        d = down.reshape(rank, -1)
        delta = torch.zeros(u.shape[0], d.shape[1], dtype=torch.float64)
        for a in range(rank):
            delta += torch.outer(u[:, a], d[a])
    return (m * s * delta).reshape(w_shape)
