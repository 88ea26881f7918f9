"""Architecture of a LoRA file: SD1 / SD2 / SDXL / SD3 / Flux / Other / Unknown.

Signals, strongest first (USERS F5, F6, C9; FORMATS.md §4):

1. ``sd version`` in the user's ``{name}.json`` when it is SD1, SD2 or SDXL ("Unknown" does not override: Civitai
   Helper writes it for Pony/Illustrious files);
2. conclusive tensor keys and shapes (a second text encoder, cross-attention width 768/1024/2048, transformer
   depth > 1, Flux or SD3 blocks): physical facts, so they beat metadata that disagrees (as ``lora_ext.coverage``
   decides too);
3. ``modelspec.architecture``; 4. ``ss_base_model_version``;
5. ``baseModel`` in ``{name}.civitai.info`` (Pony, Illustrious, NoobAI -> SDXL; Flux etc. are not loadable);
6. hints: an SDXL-family base model name (Pony, Illustrious, NoobAI, SDXL) in ``ss_sd_model_name`` /
   ``ss_output_name`` / ``modelspec.title``; diffusers ``transformer.`` keys (some DiT: Other);
7. A1111's fallback: ``ss_v2 == "True"`` -> SD2, any other metadata -> SD1; nothing -> Unknown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: (strength, arch, source); strength orders the signals (lower is stronger).
Detection = tuple[int, str, str]

USER, KEYS, MODELSPEC, SS_BASE, CIVITAI, HINT, WEAK = range(7)

_SDXL_FAMILY = ("pony", "illustrious", "noobai", "noob_ai", "sdxl", "sd_xl")

_DEEP_BLOCK = re.compile(r"transformer_blocks[._]([1-9]\d*)[._]")
_CONTEXT_DIMS = {768: "SD1", 1024: "SD2", 2048: "SDXL"}
_TE1_PREFIXES = ("lora_te_", "lora_te1_", "text_encoder.", "te_")
_DOWN_PARTS = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight", "_lora.down.weight", ".hada_w1_b")


def from_modelspec(metadata: Mapping[str, Any]) -> str | None:
    """Architecture named by ``modelspec.architecture`` (``stable-diffusion-xl-v1-base/lora`` -> SDXL)."""
    value = str(metadata.get("modelspec.architecture", "")).lower()
    if not value:
        return None
    if value.startswith("stable-diffusion-xl"):
        return "SDXL"
    if value.startswith("stable-diffusion-v1"):
        return "SD1"
    if value.startswith("stable-diffusion-v2"):
        return "SD2"
    if value.startswith("stable-diffusion-v3") or value.startswith("stable-diffusion-3"):
        return "SD3"
    if value.startswith("flux"):
        return "Flux"
    return "Other"


def from_base_model_version(metadata: Mapping[str, Any]) -> str | None:
    """Architecture from kohya's ``ss_base_model_version`` (``sd_v1``, ``sd_v2_v``, ``sdxl_base_v1-0``, ``flux1``)."""
    value = str(metadata.get("ss_base_model_version", "")).lower()
    if not value:
        return None
    for prefix, arch in (
        ("sdxl", "SDXL"),
        ("sd_v1", "SD1"),
        ("sd_v2", "SD2"),
        ("sd3", "SD3"),
        ("flux", "Flux"),
    ):
        if value.startswith(prefix):
            return arch
    return "Other"


def from_keys(tensors: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Architecture from tensor key names and shapes, or None when the keys do not tell.

    tensors: key -> header entry with a ``"shape"`` list, as in ``SafetensorsHeader.entries`` (lora_ext.formats).
    Block markers sit in the first 40 characters of a key, so they are searched in the few distinct key heads;
    shapes are read from the "down" matrices only (their second dim is the layer's input width).
    """
    heads = "\n" + "\n".join({key[:40] for key in tensors})
    if "double_blocks" in heads or "single_blocks" in heads or "single_transformer_blocks" in heads:
        return "Flux"
    if "joint_blocks" in heads:
        return "SD3"
    if any(m in heads for m in ("\nlora_te2_", "\ntext_encoder_2.", "\nte2.", "clip_g")):
        return "SDXL"
    downs = [(key, info["shape"]) for key, info in tensors.items() if key.endswith(_DOWN_PARTS)]
    for key, shape in downs:
        if (
            "attn2" in key
            and ("to_k" in key or "to_v" in key)
            and len(shape) == 2
            and shape[1] in _CONTEXT_DIMS
        ):
            return _CONTEXT_DIMS[shape[1]]
    if _DEEP_BLOCK.search("\n".join(key for key, _ in downs)):  # transformer depth > 1 exists only in SDXL
        return "SDXL"
    for key, shape in downs:
        if ("q_proj" in key or "fc1" in key) and len(shape) == 2 and key.startswith(_TE1_PREFIXES):
            if shape[1] in (768, 1024):
                return "SD1" if shape[1] == 768 else "SD2"
    return None


def from_civitai_base_model(base_model: str) -> str:
    """Civitai ``baseModel`` -> architecture (USERS §5.3); "Unknown" for an empty value."""
    value = base_model.strip().lower()
    if not value:
        return "Unknown"
    if value.startswith("pony v7") or value.startswith("aura"):
        return "Other"
    if value.startswith(("sdxl", "pony", "illustrious", "noobai")):
        return "SDXL"
    if value.startswith("sd 1"):
        return "SD1"
    if value.startswith("sd 2"):
        return "SD2"
    if value.startswith("sd 3"):
        return "SD3"
    if value.startswith("flux"):
        return "Flux"
    return "Other"


def from_user(user_metadata: Mapping[str, Any]) -> str | None:
    """``sd version`` from ``{name}.json`` when it names SD1, SD2 or SDXL (any case), else None."""
    value = str(user_metadata.get("sd version", "")).strip().upper()
    return value if value in ("SD1", "SD2", "SDXL") else None


def detect_file(metadata: Mapping[str, Any], tensors: Mapping[str, Mapping[str, Any]]) -> Detection:
    """What the file itself says (signals 2-4, 6 and 7); ``tensors``: key -> header entry."""
    arch = from_keys(tensors)
    if arch:
        return (KEYS, arch, "keys")
    arch = from_modelspec(metadata)
    if arch:
        return (MODELSPEC, arch, "modelspec")
    arch = from_base_model_version(metadata)
    if arch:
        return (SS_BASE, arch, "ss_base_model_version")
    names = " ".join(
        str(metadata.get(k, "")) for k in ("ss_sd_model_name", "ss_output_name", "modelspec.title")
    )
    lowered = names.lower()
    if any(n in lowered for n in _SDXL_FAMILY) and "v7" not in lowered:
        return (HINT, "SDXL", "model name")
    if any(k.startswith("transformer.") for k in tensors):
        return (HINT, "Other", "keys")
    if str(metadata.get("ss_v2", "")) == "True":
        return (WEAK, "SD2", "ss_v2")
    if metadata:
        return (WEAK, "SD1", "metadata")
    return (WEAK + 1, "Unknown", "none")


def combine(
    file_detection: Detection, user_metadata: Mapping[str, Any], civitai_arch: str | None
) -> tuple[str, str]:
    """Final (arch, source) from the file's own detection, the user's sidecar and Civitai's base model."""
    user = from_user(user_metadata)
    if user:
        return user, "user"
    strength, arch, source = file_detection
    if civitai_arch and civitai_arch != "Unknown" and strength > CIVITAI:
        return civitai_arch, "civitai"
    return arch, source
