"""Tensor-key summary for the inspector: algorithms, rank, alpha, layer and key counts (no tensor loaded)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from lora_ext.library.entry import Summary

#: (key suffix, algorithm, is a "down" matrix whose first dim is the rank). Longest suffixes first.
_PARTS: tuple[tuple[str, str | None, bool], ...] = (
    (".lora_linear_layer.down.weight", "lora", True),
    (".lora_linear_layer.up.weight", "lora", False),
    ("_lora.down.weight", "lora", True),
    ("_lora.up.weight", "lora", False),
    (".lora.down.weight", "lora", True),
    (".lora.up.weight", "lora", False),
    (".lora_down.weight", "lora", True),
    (".lora_up.weight", "lora", False),
    (".lora_mid.weight", "lora", False),
    (".lora_A.weight", "lora", True),
    (".lora_B.weight", "lora", False),
    (".lora_magnitude_vector", "dora", False),
    (".dora_scale", "dora", False),
    (".hada_w1_a", "loha", False),
    (".hada_w1_b", "loha", True),
    (".hada_w2_a", "loha", False),
    (".hada_w2_b", "loha", False),
    (".hada_t1", "loha", False),
    (".hada_t2", "loha", False),
    (".lokr_w1_a", "lokr", False),
    (".lokr_w1_b", "lokr", False),
    (".lokr_w2_a", "lokr", False),
    (".lokr_w2_b", "lokr", True),
    (".lokr_w1", "lokr", False),
    (".lokr_w2", "lokr", False),
    (".lokr_t2", "lokr", False),
    (".diff_b", "full", False),
    (".diff", "full", False),
    (".w_norm", "norm", False),
    (".b_norm", "norm", False),
    (".on_input", "ia3", False),
    (".a1.weight", "glora", True),
    (".a2.weight", "glora", False),
    (".b1.weight", "glora", False),
    (".b2.weight", "glora", False),
    (".bm.weight", "glora", False),
    (".oft_blocks", "oft", False),
    (".oft_diag", "oft_diag", False),
    (".rescale", None, False),
    (".alpha", None, False),
    (".scale", None, False),
)


def summarize(
    shapes: Mapping[str, tuple[str, tuple[int, ...]]], metadata: Mapping[str, Any], first_alpha: float | None
) -> Summary:
    """Summary of a file's keys.

    shapes: key -> (safetensors dtype name, shape). metadata: decoded ``__metadata__``.
    first_alpha: value of the first ``.alpha`` tensor when the caller read it, used when metadata gives no alpha.
    """
    algorithms: set[str] = set()
    modules: set[str] = set()
    ranks: Counter[int] = Counter()
    ia3_modules: set[str] = set()
    for key, (_dtype, shape) in shapes.items():
        for suffix, algo, is_down in _PARTS:
            if key.endswith(suffix):
                module = key[: -len(suffix)]
                if algo == "oft" and len(shape) == 4:
                    algo = "boft"
                if algo == "ia3":
                    ia3_modules.add(module)
                if algo:
                    algorithms.add(algo)
                if is_down and shape:
                    ranks[shape[0]] += 1
                break
        else:
            module = key.rsplit(".", 1)[0] if key.endswith((".weight", ".bias")) else key
        modules.add(module)
    if ia3_modules:  # IA3 stores ".weight" next to ".on_input"; count those modules once
        modules = {
            m[: -len(".weight")] if m.endswith(".weight") and m[:-7] in ia3_modules else m for m in modules
        }
    alpha = _metadata_alpha(metadata)
    if alpha is None:
        alpha = first_alpha
    return Summary(
        algorithms=tuple(sorted(algorithms)),
        rank=ranks.most_common(1)[0][0] if ranks else None,
        ranks=tuple(sorted(ranks)),
        alpha=alpha,
        layer_count=len(modules),
        key_count=len(shapes),
        conventions=tuple(sorted({_convention(k) for k in shapes})),
        dtypes=tuple(sorted({dtype for dtype, _ in shapes.values() if dtype})),
    )


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


def _convention(key: str) -> str:
    if key.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "oft_unet_")):
        return "kohya"
    if key.startswith("lycoris_"):
        return "lycoris_prefix"
    if key.startswith("base_model.model."):
        return "peft"
    if key.startswith(("diffusion_model.", "text_encoders.")):
        return "comfy"
    if ".processor." in key or "_lora." in key:
        return "diffusers_attn_procs"
    if key.startswith(("unet.", "text_encoder.", "text_encoder_2.", "transformer.")):
        return "diffusers"
    return "other"
