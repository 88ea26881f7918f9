"""The float32 math for one slot: W' = W₀ + Σ ΔWᵢ, rounded once to the storage dtype (FORMATS.md §10.1).

Every ΔWᵢ is computed against the pristine W₀ upcast to float32, on W₀'s device. Plain LoRA factors are added with
``addmm_`` (fused into one product when ``fuse``); every other adapter goes through ``layer_delta``. Summation order is
the slot's contribution order (list-order independent), and the same in every strategy: W₀, then the plain products
by row slice, then the other deltas. Nothing is rounded before the final cast. A low-precision CPU weight that only
plain products touch is streamed through a small float32 block of rows instead (same sum, no full float32 copy).
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


def compute_slot(
    slot: Slot,
    w0: torch.Tensor,
    b0: torch.Tensor | None,
    out: torch.Tensor | None = None,
    out_holds_w0: bool = False,
    fuse: bool = True,
) -> SlotResult:
    """Compute the patched tensors of ``slot``.

    w0, b0: the pristine weight and bias (any float dtype, on the weight's device; b0 None when the layer has none).
    out: where to write the patched weight in place (the Parameter's storage: copy strategy, or the swap strategy's
        own previously installed tensor when a set is switched); None returns a new tensor in ``SlotResult.weight``.
        The caller restores ``out`` from its backup if anything raises.
    out_holds_w0: ``out`` is ``w0`` itself (accumulate on top) rather than stale data (overwrite first).
    """
    w, b = w0.detach(), None if b0 is None else b0.detach()
    total = w.shape[0]
    row_size = w[0].numel()
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

    if _use_row_blocks(w, plain, general, out):
        group = plain[(0, total)]
        target = _row_blocks(w, [fuse_factors(group)] if fuse else group, out)
        result.weight_changed = True
        result.weight = target if out is None else None
        return result

    ref = w if w.dtype == torch.float32 else w.float()

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
        acc = _accumulate(ref, plain, out, out_holds_w0, fuse, ref_private=ref is not w)
        if gen_w is not None:
            acc.add_(gen_w)
        result.weight_changed = True
        if out is None:
            result.weight = acc if w.dtype == torch.float32 else acc.to(w.dtype)
        elif acc.data_ptr() != out.data_ptr():
            out.copy_(acc)  # the single rounding to the storage dtype
    if gen_b is not None:
        base = ref_b if ref_b is not None else ref.new_zeros(total)
        result.bias = (base + gen_b).to(w.dtype if b is None else b.dtype)
    return result


#: Bytes of the float32 scratch block used by ``_row_blocks`` (fits a core's L2 cache).
BLOCK_BYTES = 1 << 20


def _use_row_blocks(w: torch.Tensor, plain: dict, general: list, out: torch.Tensor | None) -> bool:
    """A low-precision CPU weight with only whole-tensor plain products: stream it through a small float32 block
    instead of upcasting it whole (saves a full-size float32 temporary and two passes over memory)."""
    return (
        w.device.type == "cpu"
        and w.dtype != torch.float32
        and not general
        and set(plain) == {(0, w.shape[0])}
        and w.is_contiguous()
        and (out is None or out.is_contiguous())
    )


def _row_blocks(
    w: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]], out: torch.Tensor | None
) -> torch.Tensor:
    """(W₀ + Σ U·D) rounded once to ``w``'s dtype, computed block of rows by block of rows in float32.

    Writes into ``out`` (which may be ``w`` itself: each block is read before it is written) or a new tensor.
    """
    total = w.shape[0]
    target = out if out is not None else torch.empty_like(w)
    src, dst = w.view(total, -1), target.view(total, -1)
    rows = max(1, BLOCK_BYTES // (4 * src.shape[1]))
    scratch = torch.empty(min(rows, total), src.shape[1], dtype=torch.float32)
    for start in range(0, total, rows):
        stop = min(total, start + rows)
        block = scratch[: stop - start]
        block.copy_(src[start:stop])
        for up, down in pairs:
            block.addmm_(up[start:stop], down)
        dst[start:stop].copy_(block)
    return target


def _accumulate(
    ref: torch.Tensor,
    plain: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]],
    out: torch.Tensor | None,
    out_holds_w0: bool,
    fuse: bool,
    ref_private: bool,
) -> torch.Tensor:
    """W₀ (float32 ``ref``) plus every plain product, in a float32 buffer: ``out`` itself when it is float32 and
    contiguous, else ``ref`` when it is a private upcast (``ref_private``), else a fresh tensor (``addmm`` writes W₀ + UD in one pass).
    """
    total = ref.shape[0]
    acc: torch.Tensor | None = None
    fresh = True  # acc does not hold W₀ yet
    if out is not None and out.dtype == torch.float32 and out.is_contiguous():
        acc, fresh = out, not out_holds_w0
    elif ref_private:
        acc, fresh = ref, False
    for (r0, r1), group in sorted(plain.items()):
        pairs = [fuse_factors(group)] if fuse else group
        for up, down in pairs:
            if fresh and (r0, r1) == (0, total):
                flat = acc.view(total, -1) if acc is not None else None
                result = torch.addmm(ref.reshape(total, -1), up, down, out=flat)
                acc = acc if acc is not None else result.reshape(ref.shape)
                fresh = False
                continue
            if fresh:
                acc = ref.clone() if acc is None else acc.copy_(ref)
                fresh = False
            acc.view(total, -1)[r0:r1].addmm_(up, down)
    if acc is None:
        acc = ref.clone()
    elif fresh:
        acc.copy_(ref)
    return acc
