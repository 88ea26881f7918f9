"""DoRA weight decomposition on top of any additive family (FORMATS.md §9.12, §10.8).

W_c = W₀ + s·ΔW_raw; W_d = g ⊙ W_c / (‖W_c‖_axis + ε) with ε = float32 eps (as LyCORIS); ΔW = m·(W_d − W₀).
The axis comes from ``LayerAdapter.dora_axis`` when the resolver declared it (PEFT: always "out"), else from g's shape:
``[out,1,…]`` or a 1-D g of length out → output axis (out = in included); ``[1,in,…]`` (LyCORIS input-axis files,
also when out = in) or a 1-D g of length in only → input axis; ``[1,out,…]`` with out ≠ in → output axis.
"""

from __future__ import annotations

from typing import Literal

import torch

from lora_ext.algorithms.types import AdapterShapeError

EPS = torch.finfo(torch.float32).eps

Axis = Literal["out", "in"]


def dora_axis(magnitude: torch.Tensor, weight_shape: torch.Size, declared: Axis | None = None) -> Axis:
    """Which axis a magnitude vector of this shape normalizes for a weight of ``weight_shape``."""
    out, cin = weight_shape[0], weight_shape[1] if len(weight_shape) > 1 else 1
    if declared is not None:
        return declared
    dims = list(magnitude.shape)
    if len(dims) <= 1:
        n = magnitude.numel()
        if n == out:
            return "out"
        if n == cin:
            return "in"
    else:
        if dims[0] == out and all(d == 1 for d in dims[1:]):
            return "out"
        if dims[0] == 1 and all(d == 1 for d in dims[2:]):
            if dims[1] == cin:
                return "in"
            if dims[1] == out:  # PEFT's conv magnitude [1, out, 1, 1] that lost its declared axis
                return "out"
    raise AdapterShapeError(
        f"DoRA magnitude of shape {dims} fits neither the output axis ({out}) nor the input axis ({cin}) "
        f"of a weight of shape {list(weight_shape)}"
    )


def axis_norm(weight: torch.Tensor, axis: Axis) -> torch.Tensor:
    """L2 norm per output row (``[out,1,…]``) or per input column (``[1,in,…]``) of a ≥2-D float32 weight."""
    ones = [1] * (weight.dim() - 1)
    if axis == "out":
        return weight.reshape(weight.shape[0], -1).norm(dim=1).reshape(weight.shape[0], *ones)
    cols = weight.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)
    return cols.reshape(weight.shape[1], *ones).transpose(0, 1)


def dora_delta(
    w0: torch.Tensor,
    scaled_delta: torch.Tensor,
    magnitude: torch.Tensor,
    multiplier: float,
    declared: Axis | None = None,
) -> torch.Tensor:
    """ΔW = m·(g ⊙ W_c/(‖W_c‖ + ε) − W₀) with W_c = W₀ + scaled_delta; all float32 of ``w0``'s shape."""
    if w0.dim() < 2:
        raise AdapterShapeError(f"DoRA needs a 2-D or 4-D weight, got shape {list(w0.shape)}")
    axis = dora_axis(magnitude, w0.shape, declared)
    adapted = w0 + scaled_delta
    norm = axis_norm(adapted, axis) + EPS
    ones = [1] * (w0.dim() - 1)
    if axis == "out":
        g = magnitude.reshape(w0.shape[0], *ones)
    else:
        g = magnitude.reshape(1, w0.shape[1], *ones[1:])
    if g.numel() != norm.numel():
        raise AdapterShapeError(
            f"DoRA magnitude of shape {list(magnitude.shape)} does not match the {axis}put axis "
            f"of a weight of shape {list(w0.shape)}"
        )
    return multiplier * (adapted * (g / norm) - w0)
