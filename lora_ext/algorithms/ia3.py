"""(IA)³ (FORMATS.md §9.7, §10.6): ΔW_raw = W₀ ⊙ B(w), s = 1.

B(w) lays the vector ``weight`` (``[out]``, ``[in]`` or LyCORIS's conv ``[1, dim, 1, 1]``) along the output axis
(``[out, 1, …]``, default) or, when the ``on_input`` part is true, the input axis (``[1, in, …]``).
"""

from __future__ import annotations

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.common import part
from lora_ext.algorithms.types import AdapterShapeError, RawDelta


def on_input(adapter: LayerAdapter) -> bool:
    """The ``on_input`` flag (bool tensor, 0-d or 1-element int tensor); False when absent."""
    flag = adapter.tensors.get("on_input")
    return bool(flag.reshape(-1)[0].item()) if flag is not None and flag.numel() > 0 else False


def ia3_raw(adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None = None) -> RawDelta:
    """W₀ ⊙ B(w), float32 with ``w0``'s shape."""
    vector = part(adapter, "weight", w0).reshape(-1)
    if w0.dim() < 2:
        raise AdapterShapeError(f"IA3 needs a 2-D or 4-D weight, got shape {list(w0.shape)}")
    axis = 1 if on_input(adapter) else 0
    if vector.numel() != w0.shape[axis]:
        side = "input" if axis else "output"
        raise AdapterShapeError(
            f"IA3 vector of length {vector.numel()} does not match the {side} size {w0.shape[axis]} "
            f"of a weight of shape {list(w0.shape)}"
        )
    shape = [1] * w0.dim()
    shape[axis] = vector.numel()
    return RawDelta(weight=w0 * vector.reshape(shape))
