"""Base architecture of a LoRA file from its metadata and tensor keys/shapes: the one set of rules (stdlib only).

Two callers read the same ``detect`` result and differ only where noted:

- ``lora_ext.coverage`` (the resolver's refusal of a file for another model) takes ``detect(..., a1111_fallback=
  False)`` and reads "Other" as "Unknown": a guess must never refuse a file, so only named architectures count;
  ``ss_v2 == "False"`` alone still means SD1 there.
- ``lora_ext.library.arch`` (the library's arch column) takes ``detect(..., a1111_fallback=True)``: A1111's weak
  rule, any other metadata -> SD1, and ranks the result with the user's sidecar and Civitai (its own concern).

Signals, strongest first (FORMATS.md §4, USERS F5, F6, C9):

1. conclusive tensor keys and shapes, in this order: Flux blocks, SD3 joint blocks, keys of a second text encoder
   (``lora_te2_``, ``text_encoder_2.``, ``te2.``, ``clip_g``), cross-attention input width 768/1024/2048,
   transformer depth > 1 inside a UNet block (SDXL only), text-encoder width 768/1024 (SD1/SD2). Physical facts,
   so they beat metadata that disagrees;
2. ``modelspec.architecture``; 3. ``ss_base_model_version`` (a value naming no known architecture: "Other");
4. hints: an SDXL-family base model name (Pony, Illustrious, NoobAI, SDXL; not Pony V7) in ``ss_sd_model_name`` /
   ``ss_output_name`` / ``modelspec.title``; diffusers ``transformer.`` keys without the markers above (some DiT:
   "Other");
5. ``ss_v2 == "True"`` -> SD2; then the weak rule of the caller (see above); nothing -> "Unknown".

Keys arrive as ``{key: shape}`` or as header entries ``{key: {"shape": [...], ...}}`` (``SafetensorsHeader.entries``);
the library scans thousands of headers, so markers are searched in the few distinct key heads and shapes are read
from the "down" matrices only (their second dim is the layer's input width).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Every architecture name ``detect`` returns.
ARCHITECTURES = ("SD1", "SD2", "SDXL", "SD3", "Flux", "Other", "Unknown")

#: ``modelspec.architecture`` prefixes -> architecture.
MODELSPEC_PREFIXES = (
    ("stable-diffusion-xl", "SDXL"),
    ("stable-diffusion-v1", "SD1"),
    ("stable-diffusion-v2", "SD2"),
    ("stable-diffusion-v3", "SD3"),
    ("stable-diffusion-3", "SD3"),
    ("flux", "Flux"),
)
#: kohya ``ss_base_model_version`` prefixes (``sd_v1``, ``sd_v2_v``, ``sdxl_base_v1-0``, ``flux1``) -> architecture.
SS_BASE_PREFIXES = (("sdxl", "SDXL"), ("sd_v1", "SD1"), ("sd_v2", "SD2"), ("sd3", "SD3"), ("flux", "Flux"))
#: SDXL-architecture families users know by their own names (USERS F6); Pony V7 is not SDXL.
SDXL_FAMILY_NAMES = ("pony", "illustrious", "noobai", "noob_ai", "sdxl", "sd_xl")
_NAME_KEYS = ("ss_sd_model_name", "ss_output_name", "modelspec.title")

#: Markers are searched in the first ``_HEAD`` characters of each key (block names sit near the start).
_HEAD = 48
_FLUX_MARKERS = ("double_blocks", "single_blocks", "single_transformer_blocks")
_SD3_MARKERS = ("joint_blocks", "context_block")
_TE2_PREFIXES = ("lora_te2_", "text_encoder_2.", "te2.", "text_encoders.clip_g.")
_TE1_PREFIXES = (
    "lora_te_",
    "lora_te1_",
    "text_encoder.",
    "te_",
    "text_encoders.clip_l.",
    "text_encoders.clip_h.",
)
_DOWN_SUFFIXES = (
    ".lora_down.weight",
    ".lora_A.weight",
    ".lora_A.default.weight",
    ".lora.down.weight",
    "_lora.down.weight",
    ".lora_linear_layer.down.weight",
    ".hada_w1_b",
)
#: Cross-attention key/value input width -> architecture.
CONTEXT_WIDTHS = {768: "SD1", 1024: "SD2", 2048: "SDXL"}
#: Width of a file's only text encoder -> architecture (SDXL is caught by its second text encoder).
TE_WIDTHS = {768: "SD1", 1024: "SD2"}
#: SD1/SD2 UNets have one transformer block per Transformer2D; a block index >= 1 means SDXL.
_DEEP_BLOCK = re.compile(r"transformer_blocks[._]([1-9]\d*)[._]")


@dataclass(frozen=True)
class Detection:
    """What a file says about its base architecture.

    arch: one of ``ARCHITECTURES``. signal: where it came from: "keys", "modelspec", "ss_base_model_version",
    "model name", "ss_v2", "metadata" (A1111's weak rule) or "none". hint: True for the weak guesses of signal 4
    (a model name, DiT-style keys). evidence: one sentence per signal that named something, metadata first.
    """

    arch: str
    signal: str
    evidence: tuple[str, ...] = ()
    hint: bool = False


def detect(
    metadata: Mapping[str, Any],
    tensors: Mapping[str, Any],
    *,
    a1111_fallback: bool,
) -> Detection:
    """The file's architecture from its ``__metadata__`` and ``{key: shape or header entry}`` (see module doc)."""
    from_meta = from_metadata(metadata)
    evidence = [from_meta[2]] if from_meta else []
    from_keys_ = from_keys(tensors)
    if from_keys_:
        return Detection(from_keys_[0], "keys", (*evidence, from_keys_[1]))
    if from_meta:
        arch, signal, sentence = from_meta
        return Detection(arch, signal, (sentence,), hint=signal == "model name")
    if any(key.startswith("transformer.") for key in tensors):
        return Detection("Other", "keys", ("has diffusers transformer keys of an unknown model",), hint=True)
    ss_v2 = str(metadata.get("ss_v2", ""))
    if ss_v2 == "True":
        return Detection("SD2", "ss_v2", ("ss_v2 = True",))
    if a1111_fallback and metadata:
        return Detection("SD1", "metadata", ("has metadata naming no architecture (A1111 reads it as SD1)",))
    if ss_v2 == "False":
        return Detection("SD1", "ss_v2", ("ss_v2 = False",))
    return Detection("Unknown", "none")


def from_metadata(metadata: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(arch, signal, evidence sentence) from modelspec, ``ss_base_model_version`` or an SDXL-family model name,
    or None when none of them names anything."""
    for key, prefixes, signal in (
        ("modelspec.architecture", MODELSPEC_PREFIXES, "modelspec"),
        ("ss_base_model_version", SS_BASE_PREFIXES, "ss_base_model_version"),
    ):
        value = str(metadata.get(key, ""))
        if value:
            return _by_prefix(value.lower(), prefixes), signal, f"{key} = {value}"
    names = " ".join(str(metadata.get(k, "")) for k in _NAME_KEYS)
    lowered = names.lower()
    if any(n in lowered for n in SDXL_FAMILY_NAMES) and "v7" not in lowered:
        return "SDXL", "model name", f"base model name {names.strip()!r} is an SDXL family"
    return None


def from_keys(tensors: Mapping[str, Any]) -> tuple[str, str] | None:
    """(arch, evidence sentence) from tensor key names and shapes, or None when the keys do not tell."""
    heads = "\n" + "\n".join({key[:_HEAD] for key in tensors})
    if any(m in heads for m in _FLUX_MARKERS):
        return "Flux", "has Flux double/single-block keys"
    if any(m in heads for m in _SD3_MARKERS):
        return "SD3", "has SD3 joint-block keys"
    if "clip_g" in heads or any(f"\n{p}" in heads for p in _TE2_PREFIXES):
        return "SDXL", "has keys for a second text encoder"
    downs = [key for key in tensors if key.endswith(_DOWN_SUFFIXES)]
    for key in downs:
        if "attn2" in key and ("to_k" in key or "to_v" in key):
            width = _input_width(tensors[key])
            if width in CONTEXT_WIDTHS:
                return CONTEXT_WIDTHS[width], f"cross-attention input width {width} ({key})"
    for key in downs:
        depth = None if key.startswith(("transformer.", *_TE1_PREFIXES)) else _DEEP_BLOCK.search(key)
        if depth:
            return "SDXL", f"transformer block {depth.group(1)} inside a UNet block ({key}): SDXL layout"
    for key in downs:
        if ("q_proj" in key or "fc1" in key) and key.startswith(_TE1_PREFIXES):
            width = _input_width(tensors[key])
            if width in TE_WIDTHS:
                return TE_WIDTHS[width], f"text-encoder width {width} ({key})"
    return None


def _by_prefix(value: str, prefixes: Iterable[tuple[str, str]]) -> str:
    return next((arch for prefix, arch in prefixes if value.startswith(prefix)), "Other")


def _input_width(value: Any) -> int | None:
    """Second dim of a shape given directly (tuple, list, ``torch.Size``) or as a header entry's ``"shape"``."""
    shape = value if isinstance(value, (tuple, list)) else value["shape"]
    return shape[1] if len(shape) >= 2 else None
