"""The library's architecture of a LoRA file: SD1 / SD2 / SDXL / SD3 / Flux / Other / Unknown.

What the file itself says comes from ``lora_ext.architecture`` (the rules shared with the coverage report, with
A1111's weak fallback: any other metadata -> SD1). Here that detection is ranked with the user's and Civitai's
sidecars (USERS F5, F6, C9), strongest first:

1. ``sd version`` in the user's ``{name}.json`` when it is SD1, SD2 or SDXL ("Unknown" does not override: Civitai
   Helper writes it for Pony/Illustrious files);
2. conclusive tensor keys and shapes; 3. ``modelspec.architecture``; 4. ``ss_base_model_version``;
5. ``baseModel`` in ``{name}.civitai.info`` (Pony, Illustrious, NoobAI -> SDXL; Flux etc. are not loadable);
6. hints (an SDXL-family model name, DiT-style keys); 7. ``ss_v2`` and A1111's fallback; nothing -> Unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lora_ext import architecture

#: (strength, arch, source); strength orders the signals (lower is stronger). Cached as a JSON list.
Detection = tuple[int, str, str]

USER, KEYS, MODELSPEC, SS_BASE, CIVITAI, HINT, WEAK = range(7)

_STRENGTH = {
    "keys": KEYS,
    "modelspec": MODELSPEC,
    "ss_base_model_version": SS_BASE,
    "model name": HINT,
    "ss_v2": WEAK,
    "metadata": WEAK,
    "none": WEAK + 1,
}


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
    found = architecture.detect(metadata, tensors, a1111_fallback=True)
    return (HINT if found.hint else _STRENGTH[found.signal], found.arch, found.signal)


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
