"""Tensor-key summary for the inspector: algorithms, rank, alpha, layer and key counts (no tensor loaded)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from lora_ext.library.entry import Summary

#: Last key segment -> (algorithm or None for shared parts, is a "down" matrix whose first dim is the rank).
_TAILS: dict[str, tuple[str | None, bool]] = {
    "lora_magnitude_vector": ("dora", False),
    "dora_scale": ("dora", False),
    "hada_w1_a": ("loha", False),
    "hada_w1_b": ("loha", True),
    "hada_w2_a": ("loha", False),
    "hada_w2_b": ("loha", False),
    "hada_t1": ("loha", False),
    "hada_t2": ("loha", False),
    "lokr_w1": ("lokr", False),
    "lokr_w1_a": ("lokr", False),
    "lokr_w1_b": ("lokr", False),
    "lokr_w2": ("lokr", False),
    "lokr_w2_a": ("lokr", False),
    "lokr_w2_b": ("lokr", True),
    "lokr_t2": ("lokr", False),
    "diff": ("full", False),
    "diff_b": ("full", False),
    "w_norm": ("norm", False),
    "b_norm": ("norm", False),
    "on_input": ("ia3", False),
    "oft_blocks": ("oft", False),
    "oft_diag": ("oft_diag", False),
    "rescale": (None, False),
    "alpha": (None, False),
    "scale": (None, False),
}
#: Segment before a final ``.weight`` -> (algorithm, is down).
_WEIGHT_PARTS: dict[str, tuple[str, bool]] = {
    "lora_down": ("lora", True),
    "lora_up": ("lora", False),
    "lora_mid": ("lora", False),
    "lora_A": ("lora", True),
    "lora_B": ("lora", False),
    "a1": ("glora", True),
    "a2": ("glora", False),
    "b1": ("glora", False),
    "b2": ("glora", False),
    "bm": ("glora", False),
}


def classify(key: str) -> tuple[str, str | None, bool]:
    """(module, algorithm or None, is a down matrix) for one tensor key.

    Handles kohya/LyCORIS parts (``.lora_down.weight``, ``.hada_w1_a``, ``.alpha``), PEFT (``.lora_A.weight``),
    diffusers 0.21-0.23 (``.lora.down.weight``, ``.lora_linear_layer.up.weight``) and attn-procs
    (``.to_q_lora.down.weight``). Unknown keys are their own module (a ``.weight``/``.bias`` suffix dropped).
    """
    head, _, last = key.rpartition(".")
    if last == "weight":
        head2, _, mid = head.rpartition(".")
        part = _WEIGHT_PARTS.get(mid)
        if part is not None and head2:
            return head2, part[0], part[1]
        if mid in ("down", "up") and head2:
            head3, _, pre = head2.rpartition(".")
            if pre in ("lora", "lora_linear_layer"):
                return head3, "lora", mid == "down"
            if pre.endswith("_lora"):
                return f"{head3}.{pre[:-5]}" if head3 else pre[:-5], "lora", mid == "down"
        return head, None, False
    tail = _TAILS.get(last)
    if tail is not None and head:
        return head, tail[0], tail[1]
    if last == "bias" and head:
        return head, None, False
    return key, None, False


def summarize(
    tensors: Mapping[str, Mapping[str, Any]], metadata: Mapping[str, Any], first_alpha: float | None
) -> Summary:
    """Summary of a file's keys.

    tensors: key -> header entry ``{"dtype", "shape", ...}``. metadata: decoded ``__metadata__``.
    first_alpha: value of the first ``.alpha`` tensor when the caller read it, used when metadata gives no alpha.
    Raises TypeError/KeyError/ValueError for malformed entries (the caller reports the file as corrupt).
    """
    algorithms: set[str] = set()
    ranks: Counter[int] = Counter()
    # kohya/LyCORIS keys are "<module without dots>.<part>": classify each distinct part once
    split = [key.partition(".") for key in tensors]
    parts = {part: _classify_part(part) for part in {p for _, _, p in split}}
    if all(info is not None for info in parts.values()):
        modules = {module for module, _, _ in split}
        algorithms.update(info[0] for info in parts.values() if info[0] is not None)
        for part in [p for p, info in parts.items() if info[1]]:
            for module in modules:
                entry = tensors.get(f"{module}.{part}")
                if entry is not None:
                    ranks[int(entry["shape"][0])] += 1
    else:
        modules = set()
        for key, entry in tensors.items():
            module, algo, is_down = classify(key)
            modules.add(module)
            if algo is not None:
                algorithms.add(algo)
                if is_down and entry["shape"]:
                    ranks[int(entry["shape"][0])] += 1
    if "oft" in algorithms:  # split by block shape: 3-d Diag-OFT, 4-d BOFT
        algorithms.discard("oft")
        algorithms.update(_oft_kinds(tensors))
    alpha = _metadata_alpha(metadata)
    if alpha is None:
        alpha = first_alpha
    return Summary(
        algorithms=tuple(sorted(algorithms)),
        rank=ranks.most_common(1)[0][0] if ranks else None,
        ranks=tuple(sorted(ranks)),
        alpha=alpha,
        layer_count=len(modules),
        key_count=len(tensors),
        conventions=conventions(tensors),
        dtypes=tuple(sorted({str(entry["dtype"]) for entry in tensors.values()})),
    )


def _classify_part(part: str) -> tuple[str | None, bool] | None:
    """(algorithm, is down) for a kohya/LyCORIS part string (``lora_down.weight``, ``alpha``), None otherwise."""
    if "." not in part:
        return _TAILS.get(part)
    mid, _, last = part.partition(".")
    if last == "weight" and mid in _WEIGHT_PARTS:
        return _WEIGHT_PARTS[mid]
    return None


def _oft_kinds(tensors: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """ "boft" when some ``oft_blocks`` tensor is 4-d (BOFT), besides "oft" for 3-d ones."""
    kinds = set()
    for key, entry in tensors.items():
        if key.endswith(".oft_blocks"):
            kinds.add("boft" if len(entry["shape"]) == 4 else "oft")
    return kinds


def first_alpha_key(keys) -> str | None:
    """The first key ending in ``.alpha`` (in the file's own order), or None."""
    return next((k for k in keys if k.endswith(".alpha")), None)


def _metadata_alpha(metadata: Mapping[str, Any]) -> float | None:
    value = metadata.get("ss_network_alpha")
    if value not in (None, "", "None", "Dynamic"):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    adapter = metadata.get("lora_adapter_metadata")
    if isinstance(adapter, str):
        try:
            adapter = json.loads(adapter)
        except ValueError:
            adapter = None
    if isinstance(adapter, dict):
        for key, value in adapter.items():
            if isinstance(value, dict) and "lora_alpha" in value:
                value = value["lora_alpha"]
            elif not key.endswith("lora_alpha"):
                continue
            try:
                return float(value)
            except (TypeError, ValueError):
                continue
    return None


def conventions(keys) -> tuple[str, ...]:
    """Sorted key families present (``kohya``, ``lycoris_prefix``, ``peft``, ``comfy``, ``diffusers_attn_procs``,
    ``diffusers``, ``other``); classified by distinct key prefixes, so linear in the key count at C speed."""
    found = {_convention(prefix) for prefix in {k[:17] for k in keys}}
    if "other" in found or "diffusers" in found:
        joined = "\n".join(keys)
        if ".processor." in joined or "_lora." in joined:
            found.discard("diffusers")
            found.discard("other")
            found.add("diffusers_attn_procs")
    return tuple(sorted(found))


def _convention(prefix: str) -> str:
    if prefix.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "oft_unet_")):
        return "kohya"
    if prefix.startswith("lycoris_"):
        return "lycoris_prefix"
    if prefix.startswith("base_model.model."):
        return "peft"
    if prefix.startswith(("diffusion_model.", "text_encoders.")):
        return "comfy"
    if prefix.startswith(("unet.", "text_encoder.", "text_encoder_2.", "transformer.")):
        return "diffusers"
    return "other"
