"""SDXL refiner (only clip_g, te2): unnumbered text-encoder keys reach it, CLIP-L keys do not (FORMATS.md §8)."""

from __future__ import annotations

import torch
from safetensors.torch import save_file
from tiny_models import a1111_model, a1111_target_path
from torch import nn

from lora_ext.demo import build_tiny_pipeline
from lora_ext.formats import read_lora_file
from lora_ext.keys import ModelParts, TargetIndex, resolve

Q0 = "text_model.encoder.layers.0.self_attn.q_proj"
FC1 = "text_model.encoder.layers.0.mlp.fc1"
V1 = "text_model.encoder.layers.1.self_attn.v_proj"
OUT1 = "text_model.encoder.layers.1.self_attn.out_proj"


def _pair(layer: nn.Linear, prefix: str, style: str = "kohya") -> dict[str, torch.Tensor]:
    up, down = torch.randn(layer.out_features, 2), torch.randn(2, layer.in_features)
    if style == "kohya":
        return {
            f"{prefix}.lora_up.weight": up,
            f"{prefix}.lora_down.weight": down,
            f"{prefix}.alpha": torch.tensor(2.0),
        }
    return {f"{prefix}.lora_B.weight": up, f"{prefix}.lora_A.weight": down}


def _refiner_file(tmp_path, te1: nn.Module, te2: nn.Module) -> tuple[str, set[str], set[str]]:
    """A file with kohya ``lora_te_``/``lora_te2_`` and diffusers ``text_encoder.`` keys sized for clip_g, plus
    ``lora_te1_`` keys sized for CLIP-L. Returns (path, canonical names te2 must get, keys that must stay unmatched)."""
    torch.manual_seed(0)
    g, l_ = dict(te2.named_modules()), dict(te1.named_modules())
    tensors: dict[str, torch.Tensor] = {}
    tensors |= _pair(g[Q0], "lora_te_" + Q0.replace(".", "_"))
    tensors |= _pair(g[FC1], "lora_te2_" + FC1.replace(".", "_"))
    tensors |= _pair(g[V1], "text_encoder." + V1, style="peft")
    clip_l = _pair(l_[OUT1], "lora_te1_" + OUT1.replace(".", "_"))
    tensors |= clip_l
    path = str(tmp_path / "refiner.safetensors")
    save_file(tensors, path, metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    return path, {Q0, FC1, V1}, set(clip_l)


def test_unnumbered_te_keys_reach_the_refiners_only_encoder_on_diffusers(tmp_path):
    pipe = build_tiny_pipeline("sdxl", 0)
    path, expected, clip_l_keys = _refiner_file(tmp_path, pipe.text_encoder, pipe.text_encoder_2)
    refiner = ModelParts.from_diffusers({"unet": pipe.unet, "text_encoder_2": pipe.text_encoder_2})
    assert refiner.family == "sdxl" and list(refiner.text_encoders) == ["te2"]
    resolved = resolve(read_lora_file(path), TargetIndex.build(refiner), "refiner")
    assert {(t.component, t.canonical) for t in resolved.layers} == {("te2", n) for n in expected}
    assert set(resolved.unmatched) == clip_l_keys  # CLIP-L keys have no layer on a refiner

    base = ModelParts.from_diffusers(pipe)  # on the base model nothing moves: lora_te_ is CLIP-L there
    on_base = resolve(read_lora_file(path), TargetIndex.build(base), "base")
    by_name = {t.canonical: t.component for t in on_base.layers}
    assert by_name.get(FC1) == "te2" and by_name.get(OUT1) == "te1"
    assert all(t.component != "te2" or t.canonical == FC1 for t in on_base.layers)


def test_a1111_refiner_tree_names_its_openclip_embedder_te2(tmp_path):
    pipe = build_tiny_pipeline("sdxl", 0)
    path, expected, clip_l_keys = _refiner_file(tmp_path, pipe.text_encoder, pipe.text_encoder_2)
    model = a1111_model("sdxl", 0)
    embedders = list(model.conditioner.embedders)
    model.conditioner.embedders = nn.ModuleList(embedders[1:])  # the refiner: bigG plus size conditioners
    parts = ModelParts.from_a1111(model)
    assert list(parts.text_encoders) == ["te2"] and parts.text_encoders["te2"] is embedders[1].wrapped.model
    resolved = resolve(read_lora_file(path), TargetIndex.build(parts), "refiner")
    assert {t.canonical for t in resolved.layers} == expected
    for target in resolved.layers:
        assert target.component == "te2"
        assert (target.path, target.rows) == a1111_target_path("sdxl", "te2", target.canonical)
    assert set(resolved.unmatched) == clip_l_keys
