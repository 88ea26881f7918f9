"""Demo LoRA files for the tiny pipelines: kohya-style safetensors, A1111 sidecars and previews.

``write_demo_loras(folder, model)`` writes four files whose names, metadata and sidecars look like downloaded ones:

| file | targets | extras |
|---|---|---|
| ``demo_style.safetensors`` | UNet transformers + text encoder(s) | ``demo_style.json`` (activation text, weight 0.8), ``demo_style.png`` |
| ``demo_color.safetensors`` | UNet transformers + resnets/samplers (LoCon, conv_dim 4) | ``demo_color.json`` with a negative text, ``demo_color.preview.png`` |
| ``demo_ink.safetensors`` | text encoder(s) only | ``demo_ink.json`` |
| ``subdir/demo_detail.safetensors`` | UNet transformers, rank 2 | ``subdir/demo_detail.json``, ``subdir/demo_detail.png`` |

Keys are kohya's (``lora_unet_<diffusers path>``, ``lora_te_…``; SDXL ``lora_te1_``/``lora_te2_`` with a
diffusers-named UNet, as OneTrainer writes them) with ``alpha`` = rank, so s = 1. Each layer's update is
ΔW = up·down with ‖ΔW‖ about ``strength`` × ‖W‖ (float32 factors, stored as float16 like kohya's default save dtype),
strong enough that a 2-step 64×64 image visibly changes. Deterministic in ``(family, seed)``; calling again keeps
existing files (user-edited sidecars and previews survive) and rewrites a LoRA only if its content would differ.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

_UNET_ATTENTION = ("Transformer2DModel",)
_UNET_CONV = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
_TEXT = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
_BASE_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
_SD_VERSION = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}
_ARCHITECTURE = {
    "sd1": "stable-diffusion-v1/lora",
    "sd2": "stable-diffusion-v2-512/lora",
    "sdxl": "stable-diffusion-xl-v1-base/lora",
}


@dataclass(frozen=True)
class DemoSpec:
    """One demo LoRA. ``strength``: target ‖ΔW‖/‖W‖ per layer; ``preview``: RGB base color or None."""

    name: str  # relative path without extension
    unet: bool
    text: bool
    conv: bool
    rank: int
    strength: float
    sidecar: dict
    tags: dict
    preview: tuple[int, int, int] | None
    preview_suffix: str = ".png"


DEMOS = (
    DemoSpec(
        name="demo_style",
        unet=True,
        text=True,
        conv=False,
        rank=4,
        strength=0.6,
        sidecar={
            "description": "Demo style LoRA for the embedded tiny model (UNet attention and text encoder).",
            "activation text": "demo style, bold strokes",
            "preferred weight": 0.8,
            "notes": "Written by lora_ext.demo; safe to delete, it is recreated on the next demo run.",
        },
        tags={"demo style": 20, "bold strokes": 14, "painting": 9, "cat": 4},
        preview=(214, 90, 60),
    ),
    DemoSpec(
        name="demo_color",
        unet=True,
        text=False,
        conv=True,
        rank=4,
        strength=0.4,
        sidecar={
            "description": "Demo color LoRA (LoCon: also the UNet's resnet convolutions).",
            "activation text": "demo color",
            "preferred weight": 1.0,
            "negative text": "grayscale, washed out",
            "notes": "",
        },
        tags={"demo color": 18, "vivid": 11, "teal": 6},
        preview=(40, 160, 170),
        preview_suffix=".preview.png",
    ),
    DemoSpec(
        name="demo_ink",
        unet=False,
        text=True,
        conv=False,
        rank=4,
        strength=0.8,
        sidecar={
            "description": "Demo text-encoder-only LoRA: changes only how the prompt is read.",
            "activation text": "ink drawing",
            "preferred weight": 1.0,
        },
        tags={"ink drawing": 15, "lineart": 8},
        preview=None,
    ),
    DemoSpec(
        name="subdir/demo_detail",
        unet=True,
        text=False,
        conv=False,
        rank=2,
        strength=0.5,
        sidecar={
            "description": "Demo detail LoRA in a subfolder (rank 2, UNet only).",
            "activation text": "demo detail",
            "preferred weight": 0.6,
        },
        tags={"demo detail": 12, "intricate": 7},
        preview=(120, 80, 200),
    ),
)


def write_demo_loras(folder, model="sd1", seed: int = 0) -> list[Path]:
    """Write the demo LoRAs of ``DEMOS`` under ``folder``; returns the ``.safetensors`` paths in ``DEMOS`` order.

    model: a family name ("sd1" | "sd2" | "sdxl"; the tiny models of ``lora_ext.demo.tiny`` are built to learn the
        layer shapes) or a tiny diffusers pipeline (its own modules are used and its family is detected).
    """
    folder = Path(folder)
    family, parts = _parts_of(model, seed)
    paths = []
    for index, spec in enumerate(DEMOS):
        path = folder / f"{spec.name}.safetensors"
        gen = torch.Generator().manual_seed(seed * 1000 + index)
        tensors = _kohya_tensors(spec, parts, family, gen)
        _write_if_changed(path, tensors, _metadata(spec, family, tensors))
        sidecar = path.with_suffix(".json")
        if not sidecar.exists():
            data = {**spec.sidecar, "sd version": _SD_VERSION[family]}
            sidecar.write_text(json.dumps(data, indent=4, ensure_ascii=False), encoding="utf-8")
        if spec.preview is not None:
            preview = path.parent / (path.stem + spec.preview_suffix)
            if not preview.exists():
                _draw_preview(spec.preview, index).save(preview)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------------------------


def _parts_of(model, seed: int) -> tuple[str, dict[str, nn.Module]]:
    """(family, {"unet", "te1"[, "te2"]}) from a family name or a pipeline."""
    if isinstance(model, str):
        from lora_ext.demo.tiny import tiny_text_encoders, tiny_unet

        return model, {"unet": tiny_unet(model, seed), **tiny_text_encoders(model, seed)}
    parts = {"unet": model.unet, "te1": model.text_encoder}
    if getattr(model, "text_encoder_2", None) is not None:
        parts["te2"] = model.text_encoder_2
    config = model.unet.config
    if "te2" in parts or config.get("addition_embed_type") == "text_time":
        family = "sdxl"
    elif config.get("use_linear_projection"):
        family = "sd2"
    else:
        family = "sd1"
    return family, parts


def _targets(root: nn.Module, classes: tuple[str, ...]) -> dict[str, nn.Module]:
    """Linear/Conv2d descendants of every module whose class name is in ``classes`` (FORMATS.md §6), model order."""
    out: dict[str, nn.Module] = {}
    for name, parent in root.named_modules():
        if type(parent).__name__ in classes:
            for child_name, child in parent.named_modules():
                if child_name and isinstance(child, (nn.Linear, nn.Conv2d)):
                    out.setdefault(f"{name}.{child_name}", child)
    return out


def _kohya_tensors(spec: DemoSpec, parts: dict[str, nn.Module], family: str, gen) -> dict[str, torch.Tensor]:
    """kohya keys -> float16 tensors for one demo."""
    layers: list[tuple[str, nn.Module]] = []
    if spec.unet:
        classes = _UNET_ATTENTION + (_UNET_CONV if spec.conv else ())
        layers += [
            ("lora_unet_" + p.replace(".", "_"), m) for p, m in _targets(parts["unet"], classes).items()
        ]
    if spec.text:
        for component in ("te1", "te2"):
            if component in parts:
                prefix = ("lora_te1" if component == "te1" else "lora_te2") if family == "sdxl" else "lora_te"
                found = _targets(parts[component], _TEXT)
                layers += [(f"{prefix}_" + p.replace(".", "_"), m) for p, m in found.items()]
    out: dict[str, torch.Tensor] = {}
    for key, module in layers:
        up, down = _factors(module.weight.detach().float(), spec.rank, spec.strength, gen)
        out[f"{key}.lora_down.weight"] = down.half()
        out[f"{key}.lora_up.weight"] = up.half()
        out[f"{key}.alpha"] = torch.tensor(float(spec.rank)).half()
    return out


def _factors(w: torch.Tensor, rank: int, strength: float, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) with ‖up·down‖_F ≈ strength·‖W‖_F. Linear: up [out, r], down [r, in]; conv: [out, r, 1, 1],
    [r, in, kh, kw]."""
    out_f = w.shape[0]
    fan_in = w[0].numel()
    down = torch.randn(rank, fan_in, generator=gen) / fan_in**0.5
    up = torch.randn(out_f, rank, generator=gen)
    up *= strength * w.norm() / (up @ down).norm().clamp_min(1e-12)
    if w.ndim == 4:
        return up.reshape(out_f, rank, 1, 1), down.reshape(rank, *w.shape[1:])
    return up, down


def _metadata(spec: DemoSpec, family: str, tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """kohya-style ``ss_*`` and ``modelspec.*`` metadata, plus kohya's ``sshs_*`` hashes of the tensor data."""
    from safetensors.torch import save

    stem = Path(spec.name).name
    args = {"conv_dim": str(spec.rank), "conv_alpha": str(float(spec.rank))} if spec.conv else None
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(spec.rank),
        "ss_network_alpha": str(float(spec.rank)),
        "ss_network_args": json.dumps(args) if args else "null",
        "ss_base_model_version": _BASE_VERSION[family],
        "ss_v2": str(family == "sd2"),
        "ss_output_name": stem,
        "ss_sd_model_name": f"lora_ext-tiny-{family}.safetensors",
        "ss_tag_frequency": json.dumps({f"10_{stem}": spec.tags}),
        "ss_dataset_dirs": json.dumps({f"10_{stem}": {"n_repeats": 10, "img_count": 8}}),
        "ss_resolution": "(64, 64)",
        "ss_num_train_images": "80",
        "ss_epoch": "1",
        "ss_steps": "80",
        "ss_clip_skip": "None" if family == "sdxl" else "1",
        "ss_training_started_at": "1735689600.0",
        "ss_training_comment": spec.sidecar.get("description", ""),
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": _ARCHITECTURE[family],
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models"
        if family == "sdxl"
        else "diffusers",
        "modelspec.title": stem,
        "modelspec.resolution": "64x64",
    }
    blob = save(tensors, {k: v for k, v in meta.items() if k.startswith("ss_")})
    header = int.from_bytes(blob[:8], "little")
    meta["sshs_model_hash"] = hashlib.sha256(blob[8 + header :]).hexdigest()
    meta["sshs_legacy_hash"] = hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8]
    return meta


def _write_if_changed(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``path`` unless it already holds exactly these tensors and metadata.

    Compared by content, not bytes: safetensors serializes the metadata map in no fixed order.
    """
    from safetensors.torch import save

    if path.is_file() and _same_content(path, tensors, metadata):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".safetensors.tmp")
    tmp.write_bytes(save(tensors, metadata))
    tmp.replace(path)


def _same_content(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bool:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}) != metadata or set(f.keys()) != set(tensors):
                return False
            return all(torch.equal(f.get_tensor(k), v) for k, v in tensors.items())
    except (OSError, SafetensorError):
        return False


def _draw_preview(color: tuple[int, int, int], index: int):
    """A 128x128 RGB card preview: a vertical gradient of ``color`` with a few drawn shapes (PIL.Image)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (128, 128))
    draw = ImageDraw.Draw(image)
    for y in range(128):
        k = 0.55 + 0.45 * y / 127
        draw.line([(0, y), (127, y)], fill=tuple(int(c * k) for c in color))
    light = tuple(min(255, c + 90) for c in color)
    draw.ellipse([24 + 6 * index, 20, 84 + 6 * index, 80], fill=light)
    draw.rectangle([14, 92, 114, 108], fill=(250, 250, 245))
    draw.polygon([(96, 18), (118, 60), (74, 60)], outline=(255, 255, 255))
    return image
