"""The float32 math for one slot: W' = W₀ + Σ ΔWᵢ, rounded once to the storage dtype (FORMATS.md §10.1).

Every ΔWᵢ is computed against the pristine W₀ upcast to float32, on W₀'s device. Plain LoRA factors are added with
``addmm_`` (fused into one product when ``fuse``); every other adapter goes through ``layer_delta``. Summation order is
the slot's contribution order (list-order independent), and the same in every strategy: W₀, then the plain products
by row slice, then the other deltas. Nothing is rounded before the final cast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lora_ext.algorithms import AdapterShapeError, layer_delta
from lora_ext.patching.factors import fuse as fuse_factors
from lora_ext.patching.factors import plain_factors
from lora_ext.patching.plan import Contribution, Slot


@dataclass
class SlotResult:
    """What to install for one slot.

    weight: the new weight in the storage dtype, or None when the weight is unchanged or was written in place.
    weight_changed: the weight changes (``weight`` is set, or the sum was written in place).
    bias: the new full-length bias in the storage dtype (created bias: the weight's dtype), or None.
    skipped: contributions whose shapes do not fit the layer, with the reason.
    """

    weight: torch.Tensor | None = None
    weight_changed: bool = False
    bias: torch.Tensor | None = None
    skipped: list[tuple[Contribution, str]] = field(default_factory=list)


def _rows(contribution: Contribution, total: int) -> tuple[int, int]:
    rows = contribution.target.rows
    return (0, total) if rows is None else (int(rows[0]), int(rows[1]))


def compute_slot(slot: Slot, weight_in_place: bool, fuse: bool = True) -> SlotResult:
    """Compute the patched tensors of ``slot`` from the module's current (pristine) tensors.

    weight_in_place: the weight is float32 and backed up by copy, so the sum may be accumulated in the Parameter's
    own storage (no extra buffer; the caller restores it from the backup if anything raises).
    """
    module = slot.module
    w = getattr(module, slot.weight_attr).detach()
    b_param = getattr(module, slot.bias_attr, None)
    b = None if b_param is None else b_param.detach()
    total = w.shape[0]
    row_size = w[0].numel()
    ref = w if w.dtype == torch.float32 else w.float()
    ref_b = None if b is None else b.float()
    result = SlotResult()

    plain: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
    general: list[Contribution] = []
    for c in slot.contributions:
        r0, r1 = _rows(c, total)
        factors = plain_factors(c.adapter, r1 - r0, row_size, c.multiplier, c.dyn, w.device)
        if factors is None:
            general.append(c)
        else:
            plain.setdefault((r0, r1), []).append(factors)

    # W-dependent deltas must see W₀: compute them all before the weight is touched.
    gen_w: torch.Tensor | None = None
    gen_b: torch.Tensor | None = None
    for c in general:
        r0, r1 = _rows(c, total)
        whole = (r0, r1) == (0, total)
        w0 = ref if whole else ref[r0:r1]
        b0 = ref_b if (ref_b is None or whole) else ref_b[r0:r1]
        try:
            delta = layer_delta(c.adapter, w0, c.multiplier, c.dyn, b0)
            if delta.bias is not None and delta.bias.numel() != r1 - r0:
                raise AdapterShapeError(
                    f"bias update has {delta.bias.numel()} values but the layer has {r1 - r0} outputs"
                )
        except AdapterShapeError as exc:
            result.skipped.append((c, str(exc)))
            continue
        if delta.weight is not None:
            if gen_w is None and whole:
                gen_w = delta.weight  # a fresh tensor: layer_delta always ends with a multiplication
            else:
                if gen_w is None:
                    gen_w = ref.new_zeros(ref.shape)
                gen_w[r0:r1] += delta.weight
        if delta.bias is not None:
            if gen_b is None:
                gen_b = ref.new_zeros(total)
            gen_b[r0:r1] += delta.bias.reshape(-1)

    if plain or gen_w is not None:
        acc = _accumulate(w, ref, plain, weight_in_place, fuse)
        if gen_w is not None:
            acc.add_(gen_w)
        result.weight_changed = True
        if not weight_in_place:
            result.weight = acc if w.dtype == torch.float32 else acc.to(w.dtype)
        elif acc.data_ptr() != w.data_ptr():  # defensive: in-place mode always accumulates in w
            w.copy_(acc)
    if gen_b is not None:
        base = ref_b if ref_b is not None else ref.new_zeros(total)
        result.bias = (base + gen_b).to(w.dtype if b is None else b.dtype)
    return result


def _accumulate(
    w: torch.Tensor,
    ref: torch.Tensor,
    plain: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]],
    in_place: bool,
    fuse: bool,
) -> torch.Tensor:
    """W₀ (float32) plus every plain product, in a buffer that may be ``w`` itself (in place) or ``ref`` (a float32
    upcast already private to this call) or a fresh tensor (float32 swap: ``addmm`` writes W₀ + UD in one pass)."""
    total = w.shape[0]
    acc: torch.Tensor | None
    if in_place and w.is_contiguous():
        acc = w
    elif w.dtype != torch.float32:
        acc = ref
    else:
        acc = None
    for (r0, r1), group in sorted(plain.items()):
        pairs = [fuse_factors(group)] if fuse else group
        for up, down in pairs:
            if acc is None:
                if (r0, r1) == (0, total):
                    acc = torch.addmm(ref.reshape(total, -1), up, down).reshape(ref.shape)
                    continue
                acc = ref.clone()
            acc.view(total, -1)[r0:r1].addmm_(up, down)
    if acc is None:
        acc = ref.clone()
    return acc
