"""Coverage report and base-architecture detection (issue 2 §5; USERS.md F3–F6)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from lora_ext.coverage import CoverageReport, detect_architecture
from lora_ext.errors import Problem
from lora_ext.formats import read_lora_file
from lora_ext.keys import ModelParts, TargetIndex, resolve

TO_K = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"


@pytest.mark.parametrize(
    ("metadata", "arch"),
    [
        ({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "SDXL"),
        ({"modelspec.architecture": "stable-diffusion-v2-768-v/lora"}, "SD2"),
        ({"modelspec.architecture": "stable-diffusion-v1/lora"}, "SD1"),
        ({"modelspec.architecture": "flux-1-dev/lora"}, "Flux"),
        ({"ss_base_model_version": "sdxl_base_v1-0"}, "SDXL"),
        ({"ss_base_model_version": "sd_v2_v"}, "SD2"),
        ({"ss_base_model_version": "sd_v1", "ss_v2": "False"}, "SD1"),
        ({"ss_v2": "True"}, "SD2"),
        ({"ss_v2": "False"}, "SD1"),
        ({"ss_sd_model_name": "ponyDiffusionV6XL.safetensors"}, "SDXL"),
        ({"ss_sd_model_name": "illustriousXL_v01"}, "SDXL"),
        ({}, "Unknown"),
        ({"ss_output_name": "x"}, "Unknown"),
    ],
)
def test_architecture_from_metadata(metadata, arch):
    found, evidence = detect_architecture(metadata, {})
    assert found == arch
    assert bool(evidence) == (arch != "Unknown")


@pytest.mark.parametrize(("width", "arch"), [(768, "SD1"), (1024, "SD2"), (2048, "SDXL"), (32, "Unknown")])
def test_architecture_from_cross_attention_width(width, arch):
    assert detect_architecture({}, {TO_K: (8, width)})[0] == arch


def test_architecture_from_key_families():
    assert detect_architecture({}, {"lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha": ()})[0] == "SDXL"
    assert (
        detect_architecture({}, {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (4, 3072)})[0]
        == "Flux"
    )
    assert (
        detect_architecture({}, {"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": (4, 8)})[
            0
        ]
        == "Flux"
    )


def test_shapes_win_over_wrong_metadata():
    arch, evidence = detect_architecture({"ss_base_model_version": "sd_v1"}, {TO_K: (8, 2048)})
    assert arch == "SDXL"
    assert any("sd_v1" in e for e in evidence) and any("2048" in e for e in evidence)


def sd1_file(tmp_path, extra=None):
    from lora_ext.demo import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1", 0)
    tensors = {}
    for name, module in list(pipe.unet.named_modules()) + [
        ("te." + n, m) for n, m in pipe.text_encoder.named_modules()
    ]:
        if name.endswith(("attn1.to_q", "self_attn.q_proj")):
            prefix = "lora_te_" + name[3:] if name.startswith("te.") else "lora_unet_" + name
            key = prefix.replace(".", "_")
            tensors[f"{key}.lora_up.weight"] = torch.randn(module.weight.shape[0], 2)
            tensors[f"{key}.lora_down.weight"] = torch.randn(2, module.weight.shape[1])
            tensors[f"{key}.alpha"] = torch.tensor(1.0)
    tensors.update(extra or {})
    path = str(tmp_path / "cov.safetensors")
    save_file(tensors, path, metadata={"ss_base_model_version": "sd_v1"})
    return path, ModelParts.from_diffusers(pipe)


def test_report_of_a_clean_resolution(tmp_path):
    path, parts = sd1_file(tmp_path)
    report = resolve(read_lora_file(path), TargetIndex.build(parts), "cov").report
    assert isinstance(report, CoverageReport)
    assert report.verdict == "ok" and report.unmatched == []
    assert report.layers == {"unet": 4, "te1": 2}
    assert report.keys_total == report.keys_matched == 18
    assert report.algorithms == ["lora"]
    assert report.file_architecture == "SD1" and report.model_architecture == "SD1"
    assert report.summary() == "cov: 18 keys, 18 matched (UNet 4, TE1 2), lora"
    lines = report.lines()
    assert lines[0] == report.summary() and any("architecture: file SD1" in line for line in lines)


def test_report_lists_unmatched_keys_and_is_json_safe(tmp_path):
    extra = {f"lora_unet_nowhere_{i}.lora_up.weight": torch.ones(1, 1) for i in range(12)}
    path, parts = sd1_file(tmp_path, extra)
    result = resolve(read_lora_file(path), TargetIndex.build(parts), "cov")
    report = result.report
    assert report.verdict == "partial"
    assert sorted(report.unmatched) == sorted(extra)
    summary = report.summary()
    assert summary.startswith("cov: 12 of 30 keys unmatched (e.g. lora_unet_nowhere_0.lora_up.weight, ")
    assert summary.endswith(", …); 18 matched (UNet 4, TE1 2), lora; is this LoRA for another model?")
    lines = report.lines(max_unmatched=5)
    assert "  unmatched keys (12):" in lines and "    ... and 7 more" in lines
    data = json.loads(json.dumps(report.to_dict()))
    assert data["verdict"] == "partial" and len(data["unmatched"]) == 12
    assert data["problems"][0]["severity"] == "warning"


def test_refused_report_summary_names_the_reason(tmp_path):
    path, _ = sd1_file(tmp_path)
    from lora_ext.demo import build_tiny_pipeline

    xl = ModelParts.from_diffusers(build_tiny_pipeline("sdxl", 0))
    report = resolve(read_lora_file(path), TargetIndex.build(xl), "cov").report
    assert report.verdict == "refused"
    assert report.summary().startswith("cov: refused: cov.safetensors is an SD1 LoRA")
    assert all(isinstance(p, Problem) for p in report.problems)
    json.dumps(report.to_dict())


def test_architecture_from_text_encoder_width_and_transformer_depth():
    te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"
    assert detect_architecture({}, {te: (4, 768)})[0] == "SD1"
    assert detect_architecture({}, {te: (4, 1024)})[0] == "SD2"
    assert detect_architecture({}, {te: (4, 32)})[0] == "Unknown"
    deep = "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_down.weight"
    arch, evidence = detect_architecture({}, {deep: (4, 640)})
    assert arch == "SDXL" and "SDXL layout" in evidence[0]
