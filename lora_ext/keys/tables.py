"""Key-convention tables: pure data consumed by the one resolver (``lora_ext.keys.resolver``).

Sources: FORMATS.md §3 (format matrix), §6–§8 (name maps). Order matters where noted: the first match wins.
"""

from __future__ import annotations

import re

#: Kohya-style prefixes (module key has no dots; the part follows the first dot) -> component.
#: Longest first so ``lora_te1_`` wins over ``lora_te_``.
FLAT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("lora_unet_", "unet"),
    ("lora_te1_", "te1"),
    ("lora_te2_", "te2"),
    ("lora_te_", "te1"),
    ("lycoris_", "unet"),  # SimpleTuner / create_lycoris (row 23)
    ("oft_unet_", "unet"),  # kohya OFT (row 16)
    ("lora_transformer_", "unet"),
    ("diffusion_model_", "unet"),  # A1111 layer names used as keys (row 4 variant, NTC sliders)
    # A1111's own text-encoder layer names used as keys (its network_layer_mapping): SDXL embedder index 0 / 1,
    # SD1 HF CLIP, SD2 OpenCLIP. An SDXL refiner's only embedder (index 0) is OpenCLIP-bigG.
    ("0_transformer_text_model_", "te1"),
    ("0_model_transformer_resblocks_", "te2"),
    ("1_model_transformer_resblocks_", "te2"),
    ("transformer_text_model_", "te1"),
    ("model_transformer_resblocks_", "te1"),
)

#: Flat prefixes whose tail is part of the module path: re-inserted after stripping.
FLAT_PREFIX_KEEP: dict[str, str] = {
    "0_transformer_text_model_": "text_model_",
    "0_model_transformer_resblocks_": "transformer_resblocks_",
    "1_model_transformer_resblocks_": "transformer_resblocks_",
    "transformer_text_model_": "text_model_",
    "model_transformer_resblocks_": "transformer_resblocks_",
}

#: Key prefixes that name no particular text encoder ("the" text encoder): te1 normally, and the only encoder of a
#: model that has te2 alone (SDXL refiner, clip_g; FORMATS.md §8, as ComfyUI maps them). ``lora_te1_`` and ComfyUI
#: ``clip_l`` keys name CLIP-L itself and stay unmatched on a refiner.
UNNUMBERED_TE_PREFIXES: tuple[str, ...] = (
    "lora_te_",
    "text_encoder.",
    "text_model.",
    "base_model.model.text_model.",
)

#: Dotted prefixes -> component (the module path follows, dotted). Longest first.
DOTTED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("text_encoders.clip_l.transformer.", "te1"),  # ComfyUI native (row 24)
    ("text_encoders.clip_h.transformer.", "te1"),
    ("text_encoders.clip_g.transformer.", "te2"),
    ("base_model.model.text_model.", "te1"),  # raw PEFT on a text encoder: keep text_model. (re-added below)
    ("base_model.model.", "unet"),  # raw PEFT (row 21)
    ("diffusion_model.", "unet"),  # ComfyUI native
    ("text_encoder_2.", "te2"),  # diffusers (rows 18-20)
    ("text_encoder.", "te1"),
    ("unet.", "unet"),
    ("model.diffusion_model.", "unet"),
)

#: Prefixes that are re-inserted after stripping (the dotted prefix above consumed part of the module path).
DOTTED_PREFIX_KEEP: dict[str, str] = {"base_model.model.text_model.": "text_model."}

#: Unprefixed dotted module paths (attn-procs ≤0.20 UNet files) -> component, by their first segment.
BARE_ROOTS: dict[str, str] = {
    "down_blocks": "unet",
    "up_blocks": "unet",
    "mid_block": "unet",
    "text_model": "te1",
}

#: File part (as written after the module path) -> normalized part name (adapters.ALGORITHMS).
#: For dotted keys the longest suffix that matches wins.
PART_NAMES: dict[str, str] = {
    # LoRA / LoCon / Tucker, with every spelling of up/down
    "lora_up.weight": "up",
    "lora_down.weight": "down",
    "lora_mid.weight": "mid",
    "lora_B.weight": "up",
    "lora_A.weight": "down",
    "lora.up.weight": "up",
    "lora.down.weight": "down",
    "lora_linear_layer.up.weight": "up",
    "lora_linear_layer.down.weight": "down",
    "lora_up.bias": "bias",
    "alpha": "alpha",
    "scale": "scale",
    "bias": "bias",
    "dora_scale": "dora_scale",
    "lora_magnitude_vector": "dora_scale",
    "lora_magnitude_vector.weight": "dora_scale",
    # LoHa
    "hada_w1_a": "hada_w1_a",
    "hada_w1_b": "hada_w1_b",
    "hada_w2_a": "hada_w2_a",
    "hada_w2_b": "hada_w2_b",
    "hada_t1": "hada_t1",
    "hada_t2": "hada_t2",
    # LoKr
    "lokr_w1": "lokr_w1",
    "lokr_w1_a": "lokr_w1_a",
    "lokr_w1_b": "lokr_w1_b",
    "lokr_w2": "lokr_w2",
    "lokr_w2_a": "lokr_w2_a",
    "lokr_w2_b": "lokr_w2_b",
    "lokr_t2": "lokr_t2",
    # full / diff
    "diff": "diff",
    "diff_b": "diff_b",
    # norm
    "w_norm": "w_norm",
    "b_norm": "b_norm",
    # (IA)^3 (kohya-style keys only: a bare ".weight" in a dotted key is not a LoRA part)
    "weight": "weight",
    "on_input": "on_input",
    # GLoRA
    "a1.weight": "a1",
    "a2.weight": "a2",
    "b1.weight": "b1",
    "b2.weight": "b2",
    "bm.weight": "bm",
    # OFT family
    "oft_blocks": "oft_blocks",
    "rescale": "rescale",
    "oft_diag": "oft_diag",
}

#: Parts that may not end a dotted key on their own (too ambiguous without a kohya prefix).
DOTTED_FORBIDDEN_PARTS = frozenset({"weight", "bias", "scale"})

#: Regex rewrites applied to dotted keys before splitting (attn-procs ≤0.20, row 20). Order matters.
DOTTED_REWRITES: tuple[tuple[str, str], ...] = (
    (r"\.processor\.(to_q|to_k|to_v)_lora\.", r".\1.lora."),
    (r"\.processor\.to_out_lora\.", r".to_out.0.lora."),
    (r"\.self_attn\.to_q_lora\.", r".self_attn.q_proj.lora."),
    (r"\.self_attn\.to_k_lora\.", r".self_attn.k_proj.lora."),
    (r"\.self_attn\.to_v_lora\.", r".self_attn.v_proj.lora."),
    (r"\.self_attn\.to_out_lora\.", r".self_attn.out_proj.lora."),
    (r"\.processor\.", r"."),
)

#: Leading segments of a flattened UNet module key that are dropped before lookup (row 4 variant, row 24).
UNET_FLAT_STRIP: tuple[str, ...] = ("model_diffusion_model_", "diffusion_model_")

#: Part sets -> algorithm (first match wins; checked against the set of normalized parts of one module).
ALGO_BY_PART: tuple[tuple[str, str], ...] = (
    ("hada_w1_a", "loha"),
    ("lokr_w1", "lokr"),
    ("lokr_w1_a", "lokr"),
    ("lokr_w2", "lokr"),
    ("lokr_w2_a", "lokr"),
    ("oft_blocks", "oft"),  # "boft" when the tensor is 4-D
    ("oft_diag", "oft_diag"),
    ("a1", "glora"),
    ("diff", "full"),
    ("w_norm", "norm"),
    ("b_norm", "norm"),
    ("up", "lora"),
    ("down", "lora"),
    ("weight", "ia3"),
)

#: Parts each algorithm needs before it can be applied.
REQUIRED_PARTS: dict[str, tuple[str, ...]] = {
    "lora": ("up", "down"),
    "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
    "lokr": (),
    "full": ("diff",),
    "norm": (),
    "ia3": ("weight",),
    "glora": ("a1", "a2", "b1", "b2"),
    "oft": ("oft_blocks",),
    "boft": ("oft_blocks",),
    "oft_diag": ("oft_diag",),
}

#: diffusers ResnetBlock2D child -> compvis ResBlock child (FORMATS.md §7).
RESNET_CHILDREN: dict[str, str] = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

#: diffusers UNet top-level modules -> compvis (FORMATS.md §7).
UNET_TOP_LEVEL: dict[str, str] = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}

#: OpenCLIP resblock child -> HF CLIP encoder-layer child (FORMATS.md §8). ``attn`` q/k/v are row slices.
OPENCLIP_CHILDREN: dict[str, str] = {
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
}

#: OpenCLIP-native text-encoder module names (flattened, optionally under A1111's ``model_``) -> HF CLIP names, so
#: keys written with them reach HF and OpenCLIP trees alike. q/k/v are A1111's per-slice names of the fused
#: ``attn`` (FORMATS.md §8, §10.9). A whole-``attn`` key (all of ``in_proj_weight``) has no target and is reported.
OPENCLIP_FLAT_TO_HF: tuple[tuple[str, str], ...] = (
    (
        r"^(?:model_)?transformer_resblocks_(\d+)_attn_([qkv]|out)_proj$",
        r"text_model_encoder_layers_\1_self_attn_\2_proj",
    ),
    (r"^(?:model_)?transformer_resblocks_(\d+)_mlp_c_fc$", r"text_model_encoder_layers_\1_mlp_fc1"),
    (r"^(?:model_)?transformer_resblocks_(\d+)_mlp_c_proj$", r"text_model_encoder_layers_\1_mlp_fc2"),
    (r"^(?:model_)?transformer_resblocks_(\d+)_ln_([12])$", r"text_model_encoder_layers_\1_layer_norm\2"),
    (r"^(?:model_)?ln_final$", r"text_model_final_layer_norm"),
)

#: OpenCLIP text-tower top-level modules -> HF CLIP (without ``text_model.``).
OPENCLIP_TOP_LEVEL: dict[str, str] = {
    "ln_final": "final_layer_norm",
    "token_embedding": "embeddings.token_embedding",
}

#: Fused MultiheadAttention rows, in order (FORMATS.md §10.9).
MHA_SLICES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")


#: Bundled textual-inversion embeddings (row 27).
BUNDLE_PREFIX = "bundle_emb."

#: HF CLIPAttention registers its projections in this order.
CLONEOFSIMO_TE_ORDER = ("k_proj", "v_proj", "q_proj", "out_proj")
#: diffusers Attention / GEGLU Linear children, in registration order.
CLONEOFSIMO_UNET_ORDER = ("to_q", "to_k", "to_v", "to_out.0")

#: compvis UNet path prefix -> LoRA Block Weight label format (USERS §7.1): ``input_blocks.4.`` -> ``IN04``.
UNET_BLOCK_LABELS = (
    (re.compile(r"^input_blocks\.(\d+)\."), "IN{:02d}"),
    (re.compile(r"^middle_block\."), "MID"),
    (re.compile(r"^output_blocks\.(\d+)\."), "OUT{:02d}"),
)


def unet_block(compvis_path: str) -> str:
    """The block-weight label of a compvis UNet module path, or "" outside the IN/MID/OUT blocks."""
    for pattern, label in UNET_BLOCK_LABELS:
        match = pattern.match(compvis_path)
        if match:
            return label.format(*(int(g) for g in match.groups()))
    return ""
