"""``ModelParts``: the modules of one loaded model that LoRAs can target, whatever host built them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

#: family (lower case, as hosts and ``lora_ext.demo`` spell it) -> architecture name used in reports.
FAMILY_ARCH = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux"}


@dataclass
class ModelParts:
    """The targetable parts of one model.

    family: "sd1", "sd2" or "sdxl" (case-insensitive; stored lower case).
    unet: the denoiser, either a diffusers ``UNet2DConditionModel`` or a compvis/sgm ``UNetModel``
        (A1111 ``sd_model.model.diffusion_model``).
    text_encoders: "te1"/"te2" -> module (an SDXL refiner has only "te2", clip_g): an HF ``CLIPTextModel``/``CLIPTextModelWithProjection`` (or its
        ``text_model``), or an OpenCLIP text model (``transformer.resblocks.N`` with ``nn.MultiheadAttention``).
    """

    family: str
    unet: nn.Module | None
    text_encoders: dict[str, nn.Module] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.family = str(self.family).lower()

    @property
    def architecture(self) -> str:
        """ "SD1", "SD2", "SDXL", ... or "Unknown"."""
        return FAMILY_ARCH.get(str(self.family).lower(), "Unknown")

    def modules(self) -> dict[str, nn.Module]:
        """component -> root module, for every part that is present."""
        out: dict[str, nn.Module] = {}
        if self.unet is not None:
            out["unet"] = self.unet
        for name, module in self.text_encoders.items():
            if module is not None:
                out[name] = module
        return out

    def identity(self) -> tuple[int, ...]:
        """ids of the part modules: equal for the same loaded model (cache key for resolved LoRAs)."""
        return tuple(id(m) for m in self.modules().values())

    @classmethod
    def from_diffusers(cls, obj: Any, family: str | None = None) -> ModelParts:
        """Build from a diffusers pipeline or a dict with ``unet``, ``text_encoder``, ``text_encoder_2``.

        family: override; otherwise "sdxl" when a second text encoder exists, "sd2" when the UNet's
        ``cross_attention_dim`` is 1024 or it uses Linear ``proj_in`` (``use_linear_projection``), else "sd1".
        """

        def get(name: str) -> Any:
            if isinstance(obj, dict):
                return obj.get(name)
            return getattr(obj, name, None)

        unet, te1, te2 = get("unet"), get("text_encoder"), get("text_encoder_2")
        if family is None:
            if te2 is not None:
                family = "sdxl"
            else:
                config = getattr(unet, "config", None)
                cross = getattr(config, "cross_attention_dim", None) if config is not None else None
                linear = (
                    bool(getattr(config, "use_linear_projection", False)) if config is not None else False
                )
                family = "sd2" if cross == 1024 or linear else "sd1"
        encoders = {name: te for name, te in (("te1", te1), ("te2", te2)) if te is not None}
        return cls(family=family, unet=unet, text_encoders=encoders)

    @classmethod
    def from_a1111(cls, sd_model: Any) -> ModelParts:
        """Build from an A1111 ``shared.sd_model`` (attribute access only; no ``modules.*`` import).

        UNet: ``model.diffusion_model``. SD1 te1: ``cond_stage_model.wrapped.transformer`` (HF CLIP); SD2 te1:
        ``cond_stage_model.wrapped.model`` (OpenCLIP); SDXL te1/te2: ``conditioner.embedders[0].wrapped.transformer``
        / ``[1].wrapped.model``; an SDXL refiner's only (OpenCLIP) embedder is te2. Family from the ``is_sdxl`` / ``is_sd2`` flags, else the tree's shape.
        """
        unet = sd_model.model.diffusion_model
        encoders: dict[str, nn.Module] = {}
        conditioner = getattr(sd_model, "conditioner", None)
        if conditioner is not None:
            wrapped = [e.wrapped for e in conditioner.embedders if hasattr(e, "wrapped")]
            if len(wrapped) == 1 and not _is_hf(wrapped[0]):
                encoders["te2"] = _text_tower(wrapped[0])  # SDXL refiner: OpenCLIP-bigG (clip_g) only
            else:
                for name, wrapper in zip(("te1", "te2"), wrapped, strict=False):
                    encoders[name] = _text_tower(wrapper)
            family = "sdxl"
        else:
            wrapper = sd_model.cond_stage_model.wrapped
            encoders["te1"] = _text_tower(wrapper)
            family = "sd2" if hasattr(wrapper, "model") and not hasattr(wrapper, "transformer") else "sd1"
        if getattr(sd_model, "is_sdxl", False) is True:
            family = "sdxl"
        elif getattr(sd_model, "is_sd2", False) is True:
            family = "sd2"
        return cls(family=family, unet=unet, text_encoders=encoders)


def _is_hf(wrapper: Any) -> bool:
    """True for an A1111 embedder wrapper around an HF CLIP (``.transformer``), False for OpenCLIP (``.model``)."""
    return isinstance(getattr(wrapper, "transformer", None), nn.Module)


def _text_tower(wrapper: Any) -> nn.Module:
    """The HF (``.transformer``) or OpenCLIP (``.model``) text model inside an A1111 embedder wrapper."""
    return wrapper.transformer if _is_hf(wrapper) else wrapper.model
