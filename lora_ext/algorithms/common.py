"""Small helpers every family uses: float32 casting of parts and the α/r rule (FORMATS.md §9.13, §10.3)."""

from __future__ import annotations

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.types import AdapterShapeError


def part(adapter: LayerAdapter, name: str, like: torch.Tensor) -> torch.Tensor:
    """Adapter part ``name`` as float32 on ``like``'s device (AdapterShapeError naming the part when absent)."""
    tensor = adapter.tensors.get(name)
    if tensor is None:
        have = ", ".join(sorted(adapter.tensors)) or "none"
        raise AdapterShapeError(f"{adapter.algo} adapter lacks its part {name!r} (has: {have})")
    return tensor.to(like.device, torch.float32)


def optional_part(adapter: LayerAdapter, name: str, like: torch.Tensor) -> torch.Tensor | None:
    """Like ``part`` but None when the adapter has no part ``name``."""
    if name not in adapter.tensors:
        return None
    return part(adapter, name, like)


def alpha_scale(alpha: float | None, rank: int) -> float:
    """s = α/r; s = 1 when α is missing or 0 (trainer semantics, FORMATS.md §10.3; the resolver warns about 0)."""
    if alpha is None or alpha == 0 or rank <= 0:
        return 1.0
    return float(alpha) / float(rank)
