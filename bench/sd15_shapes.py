"""An SD1.5-shaped model with random weights and rank-32 kohya LoRAs over its 264 standard target modules.

UNet: a real diffusers ``UNet2DConditionModel`` with the SD1.5 configuration; TE: an HF ``CLIPTextModel`` with the
SD1.5 (CLIP ViT-L/14) text configuration. Weights are random (normal, std 0.02), created without running the
default initialisers (which take minutes on two cores). Targets follow FORMATS.md §6: 192 UNet modules (16
transformers × 12) and 72 text-encoder modules (12 layers × 6).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)

SD15_TE = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    bos_token_id=0,
    eos_token_id=2,
)

UNET_TARGET_PARENTS = ("Transformer2DModel",)
TE_TARGET_PARENTS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")


def random_fill(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model


def build_sd15(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(UNet, text encoder), float32 on CPU, random weights."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with init_empty_weights():
        unet = UNet2DConditionModel(**SD15_UNET)
        te = CLIPTextModel(CLIPTextConfig(**SD15_TE))
    unet = random_fill(unet.to_empty(device="cpu"), seed)
    te = random_fill(te.to_empty(device="cpu"), seed + 1)
    te.text_model.embeddings.position_ids = torch.arange(77).unsqueeze(
        0
    )  # a buffer to_empty left uninitialised
    return unet.eval(), te.eval()


def collect_targets(roots: list[tuple[str, nn.Module]]) -> dict[str, nn.Module]:
    """kohya module key -> Linear/Conv2d for every ``(prefix, root)``: the layers inside the attention, MLP and
    transformer modules (FORMATS.md §6), named ``prefix`` + their path with dots as underscores."""
    out: dict[str, nn.Module] = {}
    for prefix, root in roots:
        for name, module in root.named_modules():
            if type(module).__name__ not in UNET_TARGET_PARENTS + TE_TARGET_PARENTS:
                continue
            for child_name, child in module.named_modules():
                if isinstance(child, (nn.Linear, nn.Conv2d)) and child_name:
                    out[f"{prefix}.{name}.{child_name}".replace(".", "_")] = child
    return out


def target_modules(unet: nn.Module, te: nn.Module) -> dict[str, nn.Module]:
    """kohya module key (``lora_unet_…`` / ``lora_te_…``) -> Linear/Conv2d, the 264 standard SD1.5 targets."""
    return collect_targets([("lora_unet", unet), ("lora_te", te)])


def write_kohya_lora(
    targets: dict[str, nn.Module],
    path: Path,
    rank: int = 32,
    alpha: float = 16.0,
    seed: int = 0,
    base: str = "sd_v1",
) -> Path:
    """A kohya LoRA file (fp16 factors, ``alpha`` per module) over ``targets``; conv 1×1 targets get 4-D factors.

    base: ``ss_base_model_version`` ("sd_v1", "sdxl_base_v1-0").
    """
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for key, module in targets.items():
        w = module.weight
        kernel = tuple(w.shape[2:])
        down = torch.randn(rank, w.shape[1], *kernel, generator=gen) * 0.02
        up = torch.randn(w.shape[0], rank, *([1] * len(kernel)), generator=gen) * 0.02
        tensors[f"{key}.lora_down.weight"] = down.half()
        tensors[f"{key}.lora_up.weight"] = up.half()
        tensors[f"{key}.alpha"] = torch.tensor(alpha, dtype=torch.float16)
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(alpha),
            "ss_base_model_version": base, "ss_v2": "False"}  # fmt: skip
    save_file(tensors, str(path), meta)
    return path
