"""``layer_delta``: one adapter + the pristine weight → float32 ΔW and Δb (FORMATS.md §9, §10).

Common steps after the family's raw delta: bridge shapes, add a per-module ``bias`` part to ΔW_raw, take s from a
``scale`` part if present (else the family's s), then either DoRA (``dora_scale``) or ΔW = m·s·ΔW_raw. Bias deltas
(``diff_b``, ``b_norm``) are m·Δb_raw, never scaled by s.
"""

from __future__ import annotations

import contextlib

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms.common import optional_part
from lora_ext.algorithms.dora import dora_delta
from lora_ext.algorithms.registry import FAMILIES, W_DEPENDENT, Family
from lora_ext.algorithms.shapes import fit_bias, fit_to_weight
from lora_ext.algorithms.types import AdapterShapeError, LayerDelta, RawDelta


def layer_delta(
    adapter: LayerAdapter,
    w0: torch.Tensor,
    multiplier: float,
    dyn: int | None = None,
    b0: torch.Tensor | None = None,
) -> LayerDelta:
    """The update of one target at multiplier ``multiplier`` (any sign), linear in the multiplier.

    adapter: one file's parts for this target. w0: the pristine weight (or q/k/v row slice), float32, on the device
    where the math should run. dyn: DyLoRA rank truncation (LoRA family only). b0: the layer's pristine bias, used for
    shape checks only; None when the layer has no bias.
    Returns float32 tensors on ``w0.device``: weight with ``w0``'s shape (or None), bias ``[out]`` (or None); both are
    fresh tensors (never views of ``w0`` or of adapter parts), so callers may accumulate into them.
    Raises AdapterShapeError when the adapter does not fit ``w0``; ValueError for an unknown algorithm name.
    """
    family = FAMILIES.get(adapter.algo)
    if family is None:
        raise ValueError(f"unknown LoRA algorithm {adapter.algo!r}; known: {', '.join(sorted(FAMILIES))}")
    what = f"{adapter.algo} adapter" + (f" ({adapter.keys[0]})" if adapter.keys else "")
    with torch.no_grad(), _autocast_off(w0.device.type):
        w0 = w0.to(torch.float32)
        raw = _raw_delta(family, adapter, w0, dyn, what)
        scale = raw.scale if raw.fixed_scale else _scale_part(adapter, raw.scale)
        weight = None
        if raw.weight is not None:
            weight = fit_to_weight(raw.weight, w0.shape, what)
            extra = optional_part(adapter, "bias", w0)
            if extra is not None:
                weight = weight + fit_to_weight(extra, w0.shape, f"{what} 'bias' part")
            magnitude = optional_part(adapter, "dora_scale", w0)
            if magnitude is not None:
                weight = dora_delta(w0, scale * weight, magnitude, multiplier, adapter.dora_axis)
            else:
                weight = (multiplier * scale) * weight
        bias = None
        if raw.bias is not None:
            bias = multiplier * fit_bias(raw.bias, None if b0 is None else b0.shape, what)
    return LayerDelta(weight=weight, bias=bias)


def _autocast_off(device_type: str) -> contextlib.ExitStack:
    """Autocast disabled for ``device_type`` (cpu, cuda, mps, ...); a device type without autocast has none to disable."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
    except RuntimeError:
        pass
    return stack


def _scale_part(adapter: LayerAdapter, default: float) -> float:
    """The ``scale`` part as a Python float (read where the file put it, usually CPU: no device sync), else ``default``."""
    part = adapter.tensors.get("scale")
    return default if part is None else float(part.reshape(-1)[0])


def _raw_delta(
    family: Family, adapter: LayerAdapter, w0: torch.Tensor, dyn: int | None, what: str
) -> RawDelta:
    """Run the family; a tensor-shape failure inside it becomes an AdapterShapeError naming every shape."""
    try:
        return family(adapter, w0, dyn)
    except RuntimeError as err:
        if "out of memory" in str(err).lower():
            raise
        parts = ", ".join(f"{name} {list(t.shape)}" for name, t in sorted(adapter.tensors.items()))
        raise AdapterShapeError(
            f"{what} with parts {parts} cannot be applied to a weight of shape {list(w0.shape)} ({err})"
        ) from err


def delta_is_w_dependent(adapter: LayerAdapter) -> bool:
    """True when the adapter's ΔW depends on W₀ (IA3, GLoRA, OFT family, anything with DoRA)."""
    return adapter.algo in W_DEPENDENT or "dora_scale" in adapter.tensors
