"""Tiny, deterministic diffusers models of the SD1, SD2 and SDXL families (shared/docs/STACK.md "Facts that shape tests").

Every builder seeds torch before construction, so the same ``(family, seed)`` gives bit-identical float32 weights
within one diffusers/transformers version. Nothing is downloaded: the tokenizer is built from a vocabulary written in
code. diffusers and transformers are imported inside the functions, so ``lora_ext.demo`` imports without them.

Family layouts (mirroring the real models at toy sizes):

- sd1: UNet levels (32, 64), attention at level 0 only (CrossAttnDownBlock2D, DownBlock2D), 4 heads, 1x1-conv
  ``proj_in``/``proj_out``, context dim 32; one CLIP text encoder (hidden 32, 2 layers, 4 heads, quick_gelu).
- sd2: as sd1 but ``use_linear_projection=True``, 8 channels per head (heads (4, 8)), context dim 64; one text
  encoder of hidden 64 with gelu (OpenCLIP-H style).
- sdxl: UNet levels (32, 64, 64), level 0 without attention, transformer depth 2, ``addition_embed_type="text_time"``;
  te1 = CLIPTextModel (hidden 32, quick_gelu), te2 = CLIPTextModelWithProjection (hidden 32, gelu, projection 32);
  context = concat(te1, te2) = 64; ``projection_class_embeddings_input_dim`` = 6 * 8 + 32 = 80.

The VAE has two levels (32, 64), so a 64x64 image has a 4x32x32 latent; the UNet ``sample_size`` is 32.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from torch import nn

Family = Literal["sd1", "sd2", "sdxl"]
FAMILIES: tuple[Family, ...] = ("sd1", "sd2", "sdxl")

#: Token ids shared by every tiny tokenizer and text encoder (bos 0, eos 1 = the real end-of-text id).
BOS_ID = 0
EOS_ID = 1
MAX_TOKENS = 77


@dataclass(frozen=True)
class TextEncoderSpec:
    """Size of one tiny CLIP text encoder (all dims in features)."""

    hidden: int
    act: str
    projection: int | None = (
        None  # CLIPTextModelWithProjection's text_projection width, or None for CLIPTextModel
    )


@dataclass(frozen=True)
class FamilySpec:
    """Every size that distinguishes one tiny family from another."""

    channels: tuple[int, ...]
    attention: tuple[bool, ...]  # per UNet level, True = Transformer2DModel blocks at that level
    heads: tuple[int, ...]  # attention heads per level (diffusers' ``attention_head_dim`` = head count)
    depth: int  # transformer blocks per Transformer2DModel
    context_dim: int
    linear_proj: bool
    encoders: dict[str, TextEncoderSpec]
    time_embed_dim: int | None = None  # SDXL ``addition_time_embed_dim``


SPECS: dict[str, FamilySpec] = {
    "sd1": FamilySpec(
        channels=(32, 64),
        attention=(True, False),
        heads=(4, 4),
        depth=1,
        context_dim=32,
        linear_proj=False,
        encoders={"te1": TextEncoderSpec(32, "quick_gelu")},
    ),
    "sd2": FamilySpec(
        channels=(32, 64),
        attention=(True, False),
        heads=(4, 8),
        depth=1,
        context_dim=64,
        linear_proj=True,
        encoders={"te1": TextEncoderSpec(64, "gelu")},
    ),
    "sdxl": FamilySpec(
        channels=(32, 64, 64),
        attention=(False, True, True),
        heads=(4, 8, 8),
        depth=2,
        context_dim=64,
        linear_proj=True,
        encoders={
            "te1": TextEncoderSpec(32, "quick_gelu"),
            "te2": TextEncoderSpec(32, "gelu", projection=32),
        },
        time_embed_dim=8,
    ),
}

#: Channels per attention head in the compvis/SGM configs that correspond to the sd2 and sdxl specs.
HEAD_CHANNELS = 8


def family_spec(family: str) -> FamilySpec:
    """The size table of ``family``; raises ValueError for an unknown family (a programming error)."""
    if family not in SPECS:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {FAMILIES}")
    return SPECS[family]


def tiny_unet(family: Family = "sd1", seed: int = 0) -> nn.Module:
    """A float32 ``UNet2DConditionModel`` of ``family``; input latents ``[B, 4, 32, 32]``, context ``[B, 77, ctx]``."""
    from diffusers import UNet2DConditionModel

    spec = family_spec(family)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in spec.attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(spec.attention))
    extra: dict = {}
    if spec.time_embed_dim is not None:
        pooled = spec.encoders["te2"].projection
        extra = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=spec.time_embed_dim,
            projection_class_embeddings_input_dim=6 * spec.time_embed_dim + pooled,
        )
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=spec.channels,
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=spec.context_dim,
        attention_head_dim=spec.heads,
        transformer_layers_per_block=spec.depth,
        use_linear_projection=spec.linear_proj,
        norm_num_groups=32,
        **extra,
    )
    return unet.eval()


def text_encoder_config(family: Family, component: str = "te1"):
    """The ``CLIPTextConfig`` of one tiny text encoder (hidden as in ``SPECS``, 2 layers, 4 heads, 77 positions)."""
    from transformers import CLIPTextConfig

    enc = family_spec(family).encoders[component]
    return CLIPTextConfig(
        vocab_size=len(tiny_vocab()[0]),
        hidden_size=enc.hidden,
        intermediate_size=2 * enc.hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        hidden_act=enc.act,
        projection_dim=enc.projection or enc.hidden,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )


def tiny_text_encoders(family: Family = "sd1", seed: int = 0) -> dict[str, nn.Module]:
    """``{"te1": CLIPTextModel}`` (SDXL also ``"te2": CLIPTextModelWithProjection``), float32, eval mode."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    out: dict[str, nn.Module] = {}
    for i, (component, enc) in enumerate(family_spec(family).encoders.items()):
        torch.manual_seed(seed + 100 * (i + 1))
        cls = CLIPTextModelWithProjection if enc.projection else CLIPTextModel
        out[component] = cls(text_encoder_config(family, component)).eval()
    return out


def tiny_vocab() -> tuple[dict[str, int], list[str]]:
    """A CLIP BPE vocabulary: bos/eos, every byte symbol bare and with ``</w>``, plus merges for a few words.

    Returns ``(vocab, merges)``; ``merges`` are the "a b" lines of ``merges.txt`` without the version header.
    """
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {"<|startoftext|>": BOS_ID, "<|endoftext|>": EOS_ID}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    merges: list[str] = []
    for word in _MERGED_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    # a merge may repeat (shared prefixes); keep the first occurrence, the BPE rank is its position
    return vocab, list(dict.fromkeys(merges))


_MERGED_WORDS = ("a", "cat", "dog", "photo", "of", "red", "blue", "style", "color", "detail", "lora", "the")


def tiny_tokenizer():
    """A ``CLIPTokenizer`` (model_max_length 77, bos 0, eos = pad = unk 1) built offline from ``tiny_vocab()``."""
    from transformers import CLIPTokenizer

    vocab, merges = tiny_vocab()
    with tempfile.TemporaryDirectory(prefix="lora_ext_tok_") as tmp:
        vocab_file = Path(tmp, "vocab.json")
        merges_file = Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        return CLIPTokenizer(
            vocab_file=str(vocab_file),
            merges_file=str(merges_file),
            model_max_length=MAX_TOKENS,
            bos_token="<|startoftext|>",
            eos_token="<|endoftext|>",
            unk_token="<|endoftext|>",
            pad_token="<|endoftext|>",
        )


def tiny_vae(seed: int = 0) -> nn.Module:
    """A float32 ``AutoencoderKL`` with levels (32, 64): 3x64x64 images <-> 4x32x32 latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed + 7)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        latent_channels=4,
        sample_size=64,
        norm_num_groups=32,
    ).eval()


def tiny_scheduler():
    """The SD ``DDIMScheduler`` (scaled_linear 0.00085..0.012, no clipping, steps_offset 1)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def build_tiny_pipeline(family: Family = "sd1", seed: int = 0):
    """A CPU float32 ``StableDiffusionPipeline`` (sdxl: ``StableDiffusionXLPipeline``) of tiny models, no safety checker.

    ``pipe(prompt, height=64, width=64, num_inference_steps=2)`` runs offline in a fraction of a second.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    encoders = tiny_text_encoders(family, seed)
    common = dict(
        vae=tiny_vae(seed),
        text_encoder=encoders["te1"],
        tokenizer=tiny_tokenizer(),
        unet=tiny_unet(family, seed),
        scheduler=tiny_scheduler(),
    )
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            text_encoder_2=encoders["te2"],
            tokenizer_2=tiny_tokenizer(),
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
            **common,
        )
    else:
        pipe = StableDiffusionPipeline(
            safety_checker=None, feature_extractor=None, requires_safety_checker=False, **common
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe
