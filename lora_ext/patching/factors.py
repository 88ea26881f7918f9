"""Fast path for plain LoRA / LoCon adapters: scaled factors that ``addmm_`` can add straight into the weight.

For an adapter with only ``up`` U, ``down`` D (and optionally ``scale``), ΔW = m·s·flat(U)·flat(D) (FORMATS.md §9.1), so
the weight update needs no intermediate ΔW buffer: ``W.view(out, -1).addmm_(U, D, alpha=m·s)`` (the coefficient rides on
the product, so no kernel scales U: on a GPU every launch per layer counts). Several such adapters on the same tensor
fuse into one product ``[m₁s₁U₁ | m₂s₂U₂] · [D₁; D₂]`` with coefficient 1. Anything else (Tucker ``mid``, ``bias`` or
``dora_scale`` parts, shapes that need bridging) returns None and goes through ``lora_ext.algorithms.layer_delta``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.common import alpha_scale

#: (U float32 ``[out, r]``, D float32 ``[r, row_size]``, coefficient c): the update is c·U·D.
Factors = tuple[torch.Tensor, torch.Tensor, float]

_PLAIN_PARTS = frozenset({"up", "down", "scale"})


def plain_factors(
    adapter: LayerAdapter,
    out_rows: int,
    row_size: int,
    multiplier: float,
    dyn: int | None,
    device: torch.device,
) -> Factors | None:
    """(U ``[out, r]``, D ``[r, row_size]``, m·s), the factors as float32 on ``device`` (the tensors themselves when they
    already are), or None when the fast path does not apply. Nothing is written: the factors may be the adapter's own.

    out_rows, row_size: the target weight (or row slice) viewed as ``[out_rows, row_size]``. s = α/r with r the full
    rank (``alpha_scale``), or the ``scale`` part when present; ``dyn`` keeps the first ranks and leaves s unchanged.
    """
    if not is_plain(adapter, out_rows, row_size):
        return None
    up, down = adapter.tensors["up"], adapter.tensors["down"]
    rank = down.shape[0]
    scale_part = adapter.tensors.get("scale")
    scale = float(scale_part.reshape(-1)[0]) if scale_part is not None else alpha_scale(adapter.alpha, rank)
    up2 = up.reshape(out_rows, rank)
    down2 = down.reshape(rank, row_size)
    if dyn is not None and 0 < dyn < rank:
        up2, down2 = up2[:, :dyn], down2[:dyn]
    as32 = {"device": device, "dtype": torch.float32}
    return up2.to(**as32), down2.to(**as32), multiplier * scale


def is_plain(adapter: LayerAdapter, out_rows: int, row_size: int) -> bool:
    """True when ``plain_factors`` gives factors for this adapter on a ``[out_rows, row_size]`` weight (no conversion
    done: a cheap check the patcher uses before it decides how to schedule a slot)."""
    if adapter.algo != "lora" or not _PLAIN_PARTS.issuperset(adapter.tensors) or "up" not in adapter.tensors:
        return False
    up, down = adapter.tensors["up"], adapter.tensors.get("down")
    if down is None or up.dim() < 2 or down.dim() < 2:
        return False
    rank = down.shape[0]
    return (
        up.shape[1] == rank
        and up.numel() == up.shape[0] * rank
        and up.shape[0] == out_rows
        and (down.numel() == rank * row_size)
    )


def fuse(factors: Sequence[Factors]) -> Factors:
    """One (``[out, Σr]``, ``[Σr, row_size]``, 1) triple whose product is the sum of the given ones (a single triple is
    returned as it is)."""
    if len(factors) == 1:
        return factors[0]
    return torch.cat([u * c for u, _, c in factors], dim=1), torch.cat([d for _, d, _ in factors], dim=0), 1.0
