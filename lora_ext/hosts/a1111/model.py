"""Find the LoRA-targetable parts of A1111's ``shared.sd_model`` (A1111_CONTRACT.md §9.1)."""

from __future__ import annotations

from typing import Any

from torch import nn

from lora_ext.keys.model_parts import ModelParts


def model_family(sd_model: Any) -> str | None:
    """ "sd1", "sd2" or "sdxl" from the webui's flags (SSD-1B counts as SDXL); None for SD3 and unknown models."""
    if getattr(sd_model, "is_sd3", False):
        return None
    if getattr(sd_model, "is_sdxl", False):
        return "sdxl"
    if getattr(sd_model, "is_sd2", False):
        return "sd2"
    if getattr(sd_model, "is_sd1", False):
        return "sd1"
    return None


def model_architecture(sd_model: Any) -> str:
    """ "SD1" / "SD2" / "SDXL" for the loaded model, "SD3" or "Unknown" otherwise (the card badge compares this)."""
    if sd_model is None:
        return "Unknown"
    if getattr(sd_model, "is_sd3", False):
        return "SD3"
    return {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}.get(model_family(sd_model) or "", "Unknown")


def parts_from_sd_model(sd_model: Any) -> ModelParts | None:
    """``ModelParts`` of an A1111 model (UNet at ``model.diffusion_model``, TEs below ``wrapped``; the tree walk is
    ``ModelParts.from_a1111``). None for a model this extension cannot patch (SD3, unknown flags, no UNet)."""
    family = model_family(sd_model)
    unet = getattr(getattr(sd_model, "model", None), "diffusion_model", None)
    if family is None or not isinstance(unet, nn.Module):
        return None
    parts = ModelParts.from_a1111(sd_model)
    parts.family = family
    return parts
