"""Does an adapter's geometry fit its target layer? (Wrong base model shows up as shape mismatches, USERS.md F4.)

Only the dimensions each algorithm fixes are compared (out rows, in columns, element counts); the conv<->linear
bridging and inpainting ``conv_in`` padding of FORMATS.md §10.10 are allowed.
"""

from __future__ import annotations

import math

import torch

from lora_ext.adapters import LayerAdapter, Target


def _dims(target: Target) -> tuple[int, int, int] | None:
    """(out rows, in columns, in columns x kernel elements) of the target weight, or None without a weight."""
    weight = getattr(target.module, target.weight, None)
    if not isinstance(weight, torch.Tensor):
        return None
    out = weight.shape[0] if target.rows is None else target.rows[1] - target.rows[0]
    if weight.dim() < 2:
        return out, 1, 1
    return out, weight.shape[1], weight.shape[1] * math.prod(weight.shape[2:])


def _in_ok(got: int, want: int, want_flat: int, conv: bool) -> bool:
    return got in (want, want_flat) or (
        conv and got < want
    )  # inpainting conv_in: delta padded on input channels


def mismatch(adapter: LayerAdapter, target: Target) -> str | None:
    """A short reason when ``adapter`` cannot apply to ``target``; None when it fits (or cannot be judged)."""
    dims = _dims(target)
    if dims is None:
        return None
    out, inp, flat = dims
    weight = getattr(target.module, target.weight)
    conv = weight.dim() == 4
    t = adapter.tensors
    try:
        if adapter.algo == "lora":
            got_out, got_in = t["up"].shape[0], t["down"].shape[1]
        elif adapter.algo == "loha":
            if "hada_t1" in t:
                got_out, got_in = t["hada_w1_a"].shape[1], t["hada_w1_b"].shape[1]
            else:
                got_out, got_in = t["hada_w1_a"].shape[0], t["hada_w1_b"].shape[1]
        elif adapter.algo == "lokr":
            w1 = t["lokr_w1"].shape if "lokr_w1" in t else (t["lokr_w1_a"].shape[0], t["lokr_w1_b"].shape[1])
            if "lokr_w2" in t:
                w2 = t["lokr_w2"].shape
            elif "lokr_t2" in t:
                w2 = (t["lokr_w2_a"].shape[1], t["lokr_w2_b"].shape[1])
            else:
                w2 = (t["lokr_w2_a"].shape[0], t["lokr_w2_b"].shape[1])
            got_out, got_in = w1[0] * w2[0], w1[1] * w2[1]
        elif adapter.algo == "full":
            diff = t["diff"]
            if diff.numel() == weight.numel():
                return None
            got_out, got_in = diff.shape[0], diff.shape[1] if diff.dim() > 1 else 1
        elif adapter.algo == "norm":
            vec = t.get("w_norm", t.get("b_norm"))
            return None if vec.numel() == weight.numel() else f"norm of {vec.numel()} vs {weight.numel()}"
        elif adapter.algo in ("oft", "oft_diag"):
            blocks = t["oft_blocks" if adapter.algo == "oft" else "oft_diag"]
            if blocks.dim() != 3:
                return f"OFT blocks of shape {tuple(blocks.shape)} (expected [n, b, b])"
            got_out, got_in = blocks.shape[0] * blocks.shape[-1], inp
        elif adapter.algo == "boft":
            blocks = t["oft_blocks"]
            got_out, got_in = blocks.shape[1] * blocks.shape[-1], inp
        elif adapter.algo == "glora":
            return _glora_mismatch(t, out, inp, flat)
        elif adapter.algo == "ia3":
            n = t["weight"].numel()
            return None if n in (out, inp) else f"scale vector of {n} vs layer {out}x{inp}"
        else:
            return None
    except (KeyError, IndexError):
        return "incomplete tensors"
    if got_out != out or not _in_ok(got_in, inp, flat, conv):
        return f"LoRA {got_out}x{got_in} vs layer {out}x{inp}"
    return None


def _glora_mismatch(t: dict[str, torch.Tensor], out: int, inp: int, flat: int) -> str | None:
    """GLoRA in either LyCORIS layout (FORMATS.md §9.8; old iff a2 has as many rows as flat(W) has columns).

    Old: a1 ``[r, in·k·k]``, a2 ``[in·k·k, r]``, b1 ``[r, in·k·k]``, b2 ``[out, r]``.
    New: a1 ``[in, r]``, a2 ``[r, in]``, b1 ``[out, r]``, b2 ``[r, in(, k, k)]``.
    """
    a1, a2, b1, b2 = t["a1"], t["a2"], t["b1"], t["b2"]
    if a2.shape[0] == flat:
        got_out, got_in = b2.shape[0], _cols(a1)
        fits = got_out == out and got_in == flat and _cols(b1) == flat
    else:
        got_out, got_in = b1.shape[0], a1.shape[0]
        a2_in = a2.shape[1] if a2.dim() > 1 else 1
        fits = got_out == out and got_in == inp and a2_in == inp and _cols(b2) in (inp, flat)
    return None if fits else f"GLoRA {got_out}x{got_in} vs layer {out}x{inp}"


def _cols(tensor: torch.Tensor) -> int:
    """Columns of ``tensor`` flattened to 2-d ``[shape[0], -1]``."""
    return tensor.numel() // tensor.shape[0] if tensor.dim() and tensor.shape[0] else 0
