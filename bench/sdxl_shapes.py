"""An SDXL-shaped model with random weights and the kohya targets of an SDXL LoRA.

UNet: a real diffusers ``UNet2DConditionModel`` with the SDXL base configuration (2.6 B parameters); text encoders:
HF ``CLIPTextModel`` (CLIP ViT-L/14, as in SD1.5) and ``CLIPTextModelWithProjection`` (OpenCLIP bigG: 1280 wide,
32 layers). Weights are random, as in ``bench.sd15_shapes``. Targets: 722 UNet modules (70 transformer blocks × 10,
plus ``proj_in``/``proj_out`` of 11 transformers), 72 modules of the first text encoder and 192 of the second; keys
use kohya's diffusers-named form (``lora_unet_down_blocks_…``, ``lora_te1_…``, ``lora_te2_…``).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.sd15_shapes import SD15_TE, collect_targets, random_fill

SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
)

SDXL_TE2 = dict(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1280,
    bos_token_id=0,
    eos_token_id=2,
)


def build_sdxl(seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, nn.Module]:
    """{"unet", "text_encoder", "text_encoder_2"} on CPU in ``dtype``, random weights (made directly in ``dtype``,
    so an fp16 model never needs the 14 GB of its float32 version)."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with init_empty_weights():
        parts = {
            "unet": UNet2DConditionModel(**SDXL_UNET),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**SD15_TE)),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TE2)),
        }
    for i, (name, model) in enumerate(parts.items()):
        model = random_fill(model.to(dtype).to_empty(device="cpu"), seed + i)
        if name != "unet":  # a buffer to_empty left uninitialised
            model.text_model.embeddings.position_ids = torch.arange(77).unsqueeze(0)
        parts[name] = model.eval()
    return parts


def sdxl_targets(parts: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """kohya module key -> Linear/Conv2d for the 986 SDXL targets."""
    return collect_targets(
        [
            ("lora_unet", parts["unet"]),
            ("lora_te1", parts["text_encoder"]),
            ("lora_te2", parts["text_encoder_2"]),
        ]
    )
