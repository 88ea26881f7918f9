"""Text-encoder keys written with A1111's own layer names (OpenCLIP-native for SD2 / SDXL clip_g, embedder index
prefixes for SDXL) reach the same layers on diffusers (HF CLIP) and A1111 (OpenCLIP, fused attention) trees."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import a1111_model, a1111_target_path

from lora_ext.demo import build_tiny_pipeline
from lora_ext.formats import read_lora_file
from lora_ext.keys import ModelParts, TargetIndex, resolve

L = "text_model.encoder.layers"
# family -> [(key module name as written, component, canonical HF name it must reach)]
CASES = {
    "sd1": [
        ("transformer_text_model_encoder_layers_0_mlp_fc1", "te1", f"{L}.0.mlp.fc1"),
        ("lora_te_text_model_encoder_layers_1_self_attn_k_proj", "te1", f"{L}.1.self_attn.k_proj"),
    ],
    "sd2": [
        ("model_transformer_resblocks_0_attn_q_proj", "te1", f"{L}.0.self_attn.q_proj"),
        ("model_transformer_resblocks_0_attn_k_proj", "te1", f"{L}.0.self_attn.k_proj"),
        ("model_transformer_resblocks_0_attn_v_proj", "te1", f"{L}.0.self_attn.v_proj"),
        ("model_transformer_resblocks_0_attn_out_proj", "te1", f"{L}.0.self_attn.out_proj"),
        ("model_transformer_resblocks_1_mlp_c_fc", "te1", f"{L}.1.mlp.fc1"),
        ("model_transformer_resblocks_1_mlp_c_proj", "te1", f"{L}.1.mlp.fc2"),
        ("lora_te_model_transformer_resblocks_1_attn_v_proj", "te1", f"{L}.1.self_attn.v_proj"),
    ],
    "sdxl": [
        ("0_transformer_text_model_encoder_layers_0_self_attn_q_proj", "te1", f"{L}.0.self_attn.q_proj"),
        ("1_model_transformer_resblocks_0_attn_v_proj", "te2", f"{L}.0.self_attn.v_proj"),
        ("1_model_transformer_resblocks_1_mlp_c_fc", "te2", f"{L}.1.mlp.fc1"),
        ("lora_te2_model_transformer_resblocks_1_attn_out_proj", "te2", f"{L}.1.self_attn.out_proj"),
    ],
}


def _write(tmp_path, family: str, pipe) -> str:
    torch.manual_seed(0)
    encoders = {"te1": pipe.text_encoder, "te2": getattr(pipe, "text_encoder_2", None)}
    tensors = {}
    for written, component, canonical in CASES[family]:
        layer = dict(encoders[component].named_modules())[canonical]
        tensors[f"{written}.lora_up.weight"] = torch.randn(layer.out_features, 2)
        tensors[f"{written}.lora_down.weight"] = torch.randn(2, layer.in_features)
    if family == "sd2":  # all of in_proj_weight at once: no per-slice target, so reported, never misapplied
        d = pipe.text_encoder.config.hidden_size
        tensors["model_transformer_resblocks_1_attn.lora_up.weight"] = torch.randn(3 * d, 2)
        tensors["model_transformer_resblocks_1_attn.lora_down.weight"] = torch.randn(2, d)
    path = str(tmp_path / f"{family}.safetensors")
    save_file(tensors, path)
    return path


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_a1111_native_te_names_resolve_on_both_trees(tmp_path, family):
    pipe = build_tiny_pipeline(family, 0)
    file = read_lora_file(_write(tmp_path, family, pipe))
    expected = {(component, canonical) for _, component, canonical in CASES[family]}
    whole_mha = {k for k in file.tensors if k.startswith("model_transformer_resblocks_1_attn.")}

    on_diffusers = resolve(file, TargetIndex.build(ModelParts.from_diffusers(pipe, family=family)), "x")
    assert {(t.component, t.canonical) for t in on_diffusers.layers} == expected
    assert set(on_diffusers.unmatched) == whole_mha

    on_a1111 = resolve(file, TargetIndex.build(ModelParts.from_a1111(a1111_model(family, 0))), "x")
    assert {(t.component, t.canonical) for t in on_a1111.layers} == expected
    assert set(on_a1111.unmatched) == whole_mha
    for target in on_a1111.layers:
        assert (target.path, target.rows) == a1111_target_path(family, target.component, target.canonical)
