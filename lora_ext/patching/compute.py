"""The float32 math for one slot: W' = W₀ + Σ ΔWᵢ, rounded once to the storage dtype (FORMATS.md §10.1).

Every ΔWᵢ is computed against the pristine W₀ upcast to float32, on W₀'s device. Plain LoRA factors are added with
``addmm_`` (fused into one product when ``fuse``); every other adapter goes through ``layer_delta``. Summation order is
the slot's contribution order (list-order independent), and the same in every strategy: W₀, then the plain products
by row slice, then the other deltas. Nothing is rounded before the final cast. The result is written into a destination
that holds W₀ (the Parameter itself, or the new tensor the swap strategy installs), so the products are added in place;
a destination that does not hold W₀ yet gets it from ``w0`` first. A low-precision CPU weight that only plain products
touch is streamed through a small float32 block of rows instead (``streams_rows``: same sum, no full float32 copy, and
W₀ is read straight from ``w0``, so such a destination needs no copy of W₀ beforehand).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lora_ext.algorithms import AdapterShapeError, layer_delta
from lora_ext.patching.factors import Factors, is_plain, plain_factors
from lora_ext.patching.factors import fuse as fuse_factors
from lora_ext.patching.plan import Contribution, Slot


@dataclass
class SlotResult:
    """What happened to one slot.

    weight_changed: the patched weight was written into the destination (False: every contribution changes only the
        bias or was skipped, and the destination still holds W₀).
    bias: the new full-length bias in the storage dtype (created bias: the weight's dtype), or None.
    skipped: contributions whose shapes do not fit the layer, with the reason.
    """

    weight_changed: bool = False
    bias: torch.Tensor | None = None
    skipped: list[tuple[Contribution, str]] = field(default_factory=list)


def _rows(contribution: Contribution, total: int) -> tuple[int, int]:
    rows = contribution.target.rows
    return (0, total) if rows is None else (int(rows[0]), int(rows[1]))


def streams_rows(slot: Slot, dest: torch.Tensor, source: torch.Tensor | None = None) -> bool:
    """True when ``compute_slot`` streams this slot block of rows by block of rows: a contiguous low-precision CPU
    weight whose contributions are all plain LoRA factors over the whole tensor. Such a slot reads W₀ from ``source``
    (the pristine weight, which must be contiguous too; None: ``dest`` itself) and never needs a full copy of it in
    ``dest`` first."""
    if (
        dest.device.type != "cpu"
        or dest.dtype == torch.float32
        or not dest.is_contiguous()
        or (source is not None and not source.is_contiguous())
        or dest.dim() == 0
    ):
        return False
    total, row_size = dest.shape[0], dest[0].numel()
    return all(
        _rows(c, total) == (0, total) and is_plain(c.adapter, total, row_size) for c in slot.contributions
    ) and bool(slot.contributions)


def compute_slot(
    slot: Slot,
    dest: torch.Tensor,
    b0: torch.Tensor | None,
    fuse: bool = True,
    w0: torch.Tensor | None = None,
) -> SlotResult:
    """Write W₀ + Σ ΔWᵢ of ``slot`` into ``dest`` and compute its new bias.

    dest: the tensor to write (any float dtype, on the weight's device): the Parameter's own data (copy strategy), a
        new tensor (swap strategy), or the tensor installed last time (a switch). It holds exactly W₀ unless ``w0`` is
        given. W-dependent deltas are computed from W₀ before ``dest`` is written. The caller restores the model from
        its backups if anything raises.
    b0: the pristine bias (None when the layer has none).
    w0: the pristine weight when ``dest`` does not hold it yet (same shape, dtype and device); None: ``dest`` holds it.
    """
    w, b = dest.detach(), None if b0 is None else b0.detach()
    source = w if w0 is None else w0.detach()
    total = w.shape[0]
    row_size = w[0].numel()
    ref_b = None if b is None else b.float()
    result = SlotResult()

    if streams_rows(slot, w, source):
        stream_rows(source, w, stream_factors(slot, w, fuse))
        result.weight_changed = True
        return result

    plain: dict[tuple[int, int], list[Factors]] = {}
    general: list[Contribution] = []
    for c in slot.contributions:
        r0, r1 = _rows(c, total)
        factors = plain_factors(c.adapter, r1 - r0, row_size, c.multiplier, c.dyn, w.device)
        if factors is None:
            general.append(c)
        else:
            plain.setdefault((r0, r1), []).append(factors)

    if source is not w:
        w.copy_(source)

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
        acc = _accumulate(ref, plain, fuse)
        if gen_w is not None:
            acc.add_(gen_w)
        result.weight_changed = True
        if acc.data_ptr() != w.data_ptr():
            w.copy_(acc)  # the single rounding to the storage dtype
    if gen_b is not None:
        base = ref_b if ref_b is not None else ref.new_zeros(total)
        result.bias = (base + gen_b).to(w.dtype if b is None else b.dtype)
    return result


#: Bytes of the float32 scratch block used by ``stream_rows`` (fits a core's L2 cache).
BLOCK_BYTES = 1 << 20


def stream_factors(slot: Slot, dest: torch.Tensor, fuse: bool) -> list[Factors]:
    """The float32 factor triples ``compute_slot`` streams into ``dest`` for a slot where ``streams_rows`` holds (same
    order, same fusion), so that ``stream_rows`` with them writes the same bits."""
    total, row_size = dest.shape[0], dest[0].numel()
    group = [
        plain_factors(c.adapter, total, row_size, c.multiplier, c.dyn, dest.device)
        for c in slot.contributions
    ]
    return [fuse_factors(group)] if fuse else group


def stream_rows(
    source: torch.Tensor,
    w: torch.Tensor,
    factors: list[Factors],
    scratch: torch.Tensor | None = None,
) -> None:
    """Write W₀ + Σ c·U·D rounded once to ``w``'s dtype into ``w``, block of rows by block of rows in float32, with W₀
    read from ``source`` (``w`` itself, or the pristine tensor; each block is read before it is written).

    scratch: a 1-D float32 buffer of at least ``scratch_elements(w)`` elements; None allocates one.
    """
    total = w.shape[0]
    rows_in = source.view(total, -1)
    rows_out = w.view(total, -1)
    rows = _block_rows(w)
    if scratch is None:
        scratch = torch.empty(scratch_elements(w), dtype=torch.float32)
    scratch = scratch[: scratch_elements(w)].view(-1, rows_out.shape[1])
    for start in range(0, total, rows):
        stop = min(total, start + rows)
        block = scratch[: stop - start]
        block.copy_(rows_in[start:stop])
        for up, down, coef in factors:
            block.addmm_(up[start:stop], down, alpha=coef)
        rows_out[start:stop].copy_(block)


def _block_rows(w: torch.Tensor) -> int:
    """Rows of ``w`` in one float32 block of at most ``BLOCK_BYTES`` (at least one row, at most all of them)."""
    return min(max(1, BLOCK_BYTES // (4 * w[0].numel())), w.shape[0])


def scratch_elements(w: torch.Tensor) -> int:
    """Float32 elements of the scratch block ``stream_rows`` uses for ``w`` (one block of rows)."""
    return _block_rows(w) * w[0].numel()


def _accumulate(ref: torch.Tensor, plain: dict[tuple[int, int], list[Factors]], fuse: bool) -> torch.Tensor:
    """W₀ (float32 ``ref``) plus every plain product, added in place in a contiguous float32 buffer: ``ref`` itself
    when it is contiguous (the destination, or the private float32 upcast of a low-precision one), else a contiguous
    copy of it."""
    acc = ref if ref.is_contiguous() else ref.clone(memory_format=torch.contiguous_format)
    rows = acc.view(acc.shape[0], -1)
    for (r0, r1), group in sorted(plain.items()):
        for up, down, coef in [fuse_factors(group)] if fuse else group:
            rows[r0:r1].addmm_(up, down, alpha=coef)
    return acc
