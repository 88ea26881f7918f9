"""Random key sets and shapes never make the resolver raise, and whatever it keeps the math can take (or reject
with its own typed ``AdapterShapeError``, which the patcher reports): a damaged or odd file cannot crash a host."""

from __future__ import annotations

import random

import torch
from tiny_models import a1111_model

from lora_ext.adapters import LoraFile
from lora_ext.algorithms import AdapterShapeError, layer_delta
from lora_ext.demo import build_tiny_pipeline
from lora_ext.keys import ModelParts, TargetIndex, resolve
from lora_ext.keys.key_parser import parse_key

MODULES = [
    "lora_unet_down_blocks_0_attentions_0_proj_in",
    "lora_unet_down_blocks_0_resnets_0_conv1",
    "lora_unet_conv_in",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    "text_encoder.text_model.encoder.layers.0.mlp.fc1",
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "model_transformer_resblocks_0_attn_q_proj",
]
#: Part families (one algorithm's parts plus the common ones); a file takes a random subset of one family, sometimes
#: with a stray part of another.
FAMILIES = [
    ["lora_up.weight", "lora_down.weight", "lora_mid.weight", "lora_A.weight", "lora_B.weight"],
    ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"],
    ["lokr_w1", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"],
    ["diff", "diff_b"],
    ["w_norm", "b_norm"],
    ["weight", "on_input"],
    ["a1.weight", "a2.weight", "b1.weight", "b2.weight", "bm.weight"],
    ["oft_blocks", "rescale"],
    ["oft_diag"],
]
COMMON = ["alpha", "dora_scale", "scale", "bias"]


def _random_file(rng: random.Random, dims: dict[str, list[int]]) -> LoraFile:
    """Random parts of one module; sizes drawn from small numbers and the module's own weight sizes."""
    module = rng.choice(MODULES)
    sizes = [0, 1, 2, 4, *dims[module] * 3]
    tensors = {}
    family = rng.choice(FAMILIES)
    parts = rng.sample(family, rng.randint(1, len(family))) + rng.sample(COMMON, rng.randint(0, 2))
    if rng.random() < 0.2:
        parts.append(rng.choice(rng.choice(FAMILIES)))
    for part in dict.fromkeys(parts):
        shape = tuple(rng.choice(sizes) for _ in range(rng.choice([0, 1, 2, 2, 2, 3, 4])))
        dtype = rng.choice([torch.float32, torch.float16, torch.bfloat16, torch.int64])
        tensors[f"{module}.{part}"] = torch.randn(shape).to(dtype)
    return LoraFile(path="/loras/odd.safetensors", tensors=tensors)


def _weight_sizes(index: TargetIndex) -> dict[str, list[int]]:
    out = {}
    for module in MODULES:
        parsed = parse_key(f"{module}.alpha")
        target = index.lookup(parsed.component, parsed.module)
        out[module] = list(getattr(target.module, target.weight).shape) if target is not None else []
    return out


def test_random_files_never_raise_and_kept_adapters_fit():
    indexes = [
        TargetIndex.build(ModelParts.from_diffusers(build_tiny_pipeline("sd1", 0))),
        TargetIndex.build(ModelParts.from_a1111(a1111_model("sd2", 0))),
    ]
    rng = random.Random(7)
    dims = _weight_sizes(indexes[0])
    kept = 0
    for _ in range(300):
        file = _random_file(rng, dims)
        for index in indexes:
            result = resolve(file, index, "odd")
            assert result.report.verdict in ("ok", "partial", "refused")
            result.report.summary()
            for target, adapter in result.layers.items():
                w0 = getattr(target.module, target.weight).detach()
                if target.rows is not None:
                    w0 = w0[target.rows[0] : target.rows[1]]
                try:
                    layer_delta(adapter, w0, 1.0)
                except AdapterShapeError:
                    pass
                kept += 1
    assert kept >= 10  # the generator does produce usable adapters, so the check above is exercised
