"""diffusers / PEFT files made by the real tools resolve with zero unmatched keys and exactly the wrapped layers.

Conventions (FORMATS.md §3): row 18 (PEFT ≥0.24, ``unet.…lora_A``), row 19 (0.21–0.23 ``lora.down`` /
``lora_linear_layer``, what ``convert_state_dict_to_diffusers`` writes), row 20 (attn-procs ≤0.20, written from the
key table), row 21 (raw PEFT ``base_model.model.`` + ``adapter_config.json``), row 22 (PEFT DoRA magnitude).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file
from tiny_models import a1111_model

from lora_ext.demo import build_tiny_pipeline
from lora_ext.formats import read_lora_file
from lora_ext.keys import ModelParts, TargetIndex, resolve

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "ff.net.2"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1"]


def wrapped(module) -> set[str]:
    return {name for name, m in module.named_modules() if isinstance(m, LoraLayer)}


def randomize_b(module) -> None:
    gen = torch.Generator().manual_seed(3)
    for name, p in module.named_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen))


def make_peft_lora(tmp_path, family: str, style: str, use_dora: bool = False):
    """Train-free real PEFT adapters on the tiny pipeline, saved by diffusers' ``save_lora_weights``.

    style: "peft" (≥0.24 keys) or "diffusers_old" (``convert_state_dict_to_diffusers``: 0.21–0.23 keys).
    Returns (path, expected {(component, path)}, configs).
    """
    from diffusers.utils import convert_state_dict_to_diffusers

    pipe = build_tiny_pipeline(family, 0)
    unet_cfg = LoraConfig(
        r=2, lora_alpha=4, target_modules=UNET_TARGETS, alpha_pattern={"to_k": 8}, use_dora=use_dora
    )
    te_cfg = LoraConfig(r=2, lora_alpha=3, target_modules=TE_TARGETS, use_dora=use_dora)
    pipe.unet.add_adapter(unet_cfg)
    encoders = {"te1": pipe.text_encoder}
    if family == "sdxl":
        encoders["te2"] = pipe.text_encoder_2
    for te in encoders.values():
        te.add_adapter(te_cfg)
    expected = {("unet", n) for n in wrapped(pipe.unet)}
    for component, te in encoders.items():
        expected |= {(component, n) for n in wrapped(te)}
    randomize_b(pipe.unet)

    def state(module):
        sd = get_peft_model_state_dict(module)
        return convert_state_dict_to_diffusers(sd) if style == "diffusers_old" else sd

    kwargs = dict(
        unet_lora_layers=state(pipe.unet),
        text_encoder_lora_layers=state(pipe.text_encoder),
        unet_lora_adapter_metadata=unet_cfg.to_dict(),
        text_encoder_lora_adapter_metadata=te_cfg.to_dict(),
    )
    if family == "sdxl":
        kwargs["text_encoder_2_lora_layers"] = state(pipe.text_encoder_2)
        kwargs["text_encoder_2_lora_adapter_metadata"] = te_cfg.to_dict()
    folder = tmp_path / f"{family}_{style}"
    type(pipe).save_lora_weights(str(folder), **kwargs)
    return folder / "pytorch_lora_weights.safetensors", expected


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("style", ["peft", "diffusers_old"])
def test_diffusers_saved_lora_resolves(tmp_path, family, style):
    path, expected = make_peft_lora(tmp_path, family, style)
    file = read_lora_file(path)
    prefix = {"unet.", "text_encoder."} | ({"text_encoder_2."} if family == "sdxl" else set())
    assert {k.split(".", 1)[0] + "." for k in file.tensors} == prefix
    marker = ".lora_A." if style == "peft" else ".lora.down."
    assert any(marker in k for k in file.tensors)

    pipe = build_tiny_pipeline(family, 0)
    result = resolve(file, TargetIndex.build(ModelParts.from_diffusers(pipe)), "d")
    assert result.unmatched == []
    assert {(t.component, t.path) for t in result.layers} == expected
    for target, adapter in result.layers.items():
        assert adapter.algo == "lora" and set(adapter.tensors) == {"up", "down"}
        if target.component == "unet":
            assert adapter.alpha == (8.0 if target.path.endswith("to_k") else 4.0)
        else:
            assert adapter.alpha == 3.0
        module = target.module
        assert adapter.tensors["up"].shape[0] == module.weight.shape[0]
        assert adapter.tensors["down"].shape[1] == module.weight.shape[1]


def test_diffusers_lora_resolves_on_a1111_tree_too(tmp_path):
    path, expected = make_peft_lora(tmp_path, "sdxl", "peft")
    result = resolve(
        read_lora_file(path), TargetIndex.build(ModelParts.from_a1111(a1111_model("sdxl", 0))), "d"
    )
    assert result.unmatched == []
    assert {(t.component, t.canonical) for t in result.layers} == expected


@pytest.mark.parametrize("style", ["peft", "diffusers_old"])
def test_peft_dora_magnitude_is_output_axis(tmp_path, style):
    path, expected = make_peft_lora(tmp_path, "sd1", style, use_dora=True)
    file = read_lora_file(path)
    assert any("lora_magnitude_vector" in k for k in file.tensors)
    result = resolve(
        file, TargetIndex.build(ModelParts.from_diffusers(build_tiny_pipeline("sd1", 0))), "dora"
    )
    assert result.unmatched == []
    assert {(t.component, t.path) for t in result.layers} == expected
    for target, adapter in result.layers.items():
        assert adapter.dora_axis == "out"
        assert adapter.tensors["dora_scale"].numel() == target.module.weight.shape[0]


def attn_procs_file(tmp_path, pipe) -> tuple[str, set]:
    """diffusers ≤0.20 attn-procs keys (FORMATS.md §3 row 20), written from the key table."""
    torch.manual_seed(5)
    tensors, expected = {}, set()
    procs = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out.0": "to_out"}
    for name, module in pipe.unet.named_modules():
        for real, proc in procs.items():
            if name.endswith(f".{real}") and ".attn" in name:
                base = name[: -len(real) - 1]
                w = module.weight
                tensors[f"{base}.processor.{proc}_lora.down.weight"] = torch.randn(2, w.shape[1])
                tensors[f"{base}.processor.{proc}_lora.up.weight"] = torch.randn(w.shape[0], 2)
                expected.add(("unet", name))
    te_procs = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "out_proj": "to_out"}
    for name, module in pipe.text_encoder.named_modules():
        for real, proc in te_procs.items():
            if name.endswith(f"self_attn.{real}"):
                base = name[: -len(real) - 1]
                w = module.weight
                tensors[f"text_encoder.{base}.{proc}_lora.down.weight"] = torch.randn(2, w.shape[1])
                tensors[f"text_encoder.{base}.{proc}_lora.up.weight"] = torch.randn(w.shape[0], 2)
                expected.add(("te1", name))
    path = str(tmp_path / "procs.safetensors")
    save_file(tensors, path)
    return path, expected


def test_attn_procs_format(tmp_path):
    pipe = build_tiny_pipeline("sd1", 0)
    path, expected = attn_procs_file(tmp_path, pipe)
    result = resolve(read_lora_file(path), TargetIndex.build(ModelParts.from_diffusers(pipe)), "procs")
    assert result.unmatched == []
    assert {(t.component, t.path) for t in result.layers} == expected
    assert all(a.alpha is None for a in result.layers.values())


@pytest.mark.parametrize("component", ["unet", "te1"])
def test_raw_peft_with_adapter_config(tmp_path, component):
    pipe = build_tiny_pipeline("sd1", 0)
    if component == "unet":
        config = LoraConfig(r=4, lora_alpha=2, target_modules=["to_q", "to_v"], alpha_pattern={"to_v": 16})
        model = get_peft_model(pipe.unet, config)
    else:
        config = LoraConfig(r=4, lora_alpha=2, target_modules=["q_proj", "fc2"], use_rslora=True)
        model = get_peft_model(pipe.text_encoder, config)
    expected = {(component, n.removeprefix("base_model.model.")) for n in wrapped(model)}
    model.save_pretrained(str(tmp_path))
    file = read_lora_file(tmp_path / "adapter_model.safetensors")
    assert all(k.startswith("base_model.model.") for k in file.tensors)
    assert json.loads(file.metadata["adapter_config.json"])["lora_alpha"] == 2

    clean = build_tiny_pipeline("sd1", 0)
    result = resolve(file, TargetIndex.build(ModelParts.from_diffusers(clean)), "raw")
    assert result.unmatched == []
    assert {(t.component, t.path) for t in result.layers} == expected
    for target, adapter in result.layers.items():
        if component == "unet":
            assert adapter.alpha == (16.0 if target.path.endswith("to_v") else 2.0)
        else:  # rsLoRA: PEFT scales by alpha/sqrt(r); expressed as alpha'/r
            assert adapter.alpha / 4 == pytest.approx(2 / math.sqrt(4))


def test_peft_file_without_alpha_metadata_has_no_alpha(tmp_path):
    """No .alpha tensors and no adapter metadata -> alpha None (s = 1), never PEFT's "most common alpha"."""
    pipe = build_tiny_pipeline("sd1", 0)
    pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=7, target_modules=["to_q"]))
    folder = tmp_path / "noalpha"
    type(pipe).save_lora_weights(str(folder), unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    file = read_lora_file(folder / "pytorch_lora_weights.safetensors")
    assert "lora_adapter_metadata" not in file.metadata
    result = resolve(file, TargetIndex.build(ModelParts.from_diffusers(build_tiny_pipeline("sd1", 0))), "n")
    assert result.layers and all(a.alpha is None for a in result.layers.values())
