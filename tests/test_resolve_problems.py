"""Bad LoRA files resolve to a refusal with a message naming the file and the reason; no exception escapes."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from lora_ext.engine import LoraLoader
from lora_ext.errors import Problem
from lora_ext.formats import read_lora_file
from lora_ext.keys import ModelParts, TargetIndex, resolve


def sd1_parts():
    from lora_ext.demo import build_tiny_pipeline

    return ModelParts.from_diffusers(build_tiny_pipeline("sd1", 0))


def q_key(prefix="lora_unet_"):
    return prefix + "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


def good_tensors():
    return {
        f"{q_key()}.lora_up.weight": torch.randn(32, 2),
        f"{q_key()}.lora_down.weight": torch.randn(2, 32),
    }


def errors(result):
    return [p for p in result.problems if p.severity == "error"]


def test_nan_and_inf_tensors_refuse_the_file(tmp_path):
    parts = sd1_parts()
    index = TargetIndex.build(parts)
    for bad in (float("nan"), float("inf")):
        tensors = good_tensors()
        tensors[f"{q_key()}.lora_up.weight"][3, 1] = bad
        path = str(tmp_path / f"bad{bad}.safetensors")
        save_file(tensors, path)
        result = resolve(read_lora_file(path), index, "bad")
        assert result.layers == {}
        (problem,) = errors(result)
        assert problem.subject == path
        assert os.path.basename(path) in problem.message and "NaN or infinite" in problem.message
        assert f"{q_key()}.lora_up.weight" in problem.message
        assert result.report.verdict == "refused"


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16, torch.float16])
def test_low_precision_files_resolve_and_their_nans_refuse(tmp_path, dtype):
    index = TargetIndex.build(sd1_parts())
    good = {k: v.to(dtype) for k, v in good_tensors().items()}
    path = str(tmp_path / "low.safetensors")
    save_file(good, path)
    result = resolve(read_lora_file(path), index, "low")
    assert result.report.verdict == "ok"
    (adapter,) = result.layers.values()
    assert adapter.tensors["up"].dtype == dtype
    bad = dict(good)
    bad[f"{q_key()}.lora_up.weight"] = bad[f"{q_key()}.lora_up.weight"].float()
    bad[f"{q_key()}.lora_up.weight"][0, 0] = float("nan")
    bad[f"{q_key()}.lora_up.weight"] = bad[f"{q_key()}.lora_up.weight"].to(dtype)
    save_file(bad, path)
    result = resolve(read_lora_file(path), index, "low")
    assert result.report.verdict == "refused" and "NaN or infinite" in errors(result)[0].message


def test_unknown_key_set(tmp_path):
    path = str(tmp_path / "mystery.safetensors")
    save_file({"foo.bar.baz": torch.ones(2), "something_else": torch.ones(1)}, path)
    result = resolve(read_lora_file(path), TargetIndex.build(sd1_parts()), "mystery")
    assert result.layers == {}
    assert sorted(result.unmatched) == ["foo.bar.baz", "something_else"]
    (problem,) = errors(result)
    assert "mystery.safetensors" in problem.message and "none of its 2 keys" in problem.message
    assert result.report.verdict == "refused"


def test_sdxl_file_on_sd1_model_is_refused_by_metadata(tmp_path):
    path = str(tmp_path / "xl.safetensors")
    save_file(good_tensors(), path, metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    result = resolve(read_lora_file(path), TargetIndex.build(sd1_parts()), "xl")
    assert result.layers == {}
    (problem,) = errors(result)
    assert "xl.safetensors" in problem.message and "SDXL" in problem.message and "SD1" in problem.message
    assert result.report.file_architecture == "SDXL" and result.report.model_architecture == "SD1"


def test_sdxl_file_on_sd1_model_is_refused_by_keys(tmp_path):
    tensors = good_tensors()
    te2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
    tensors[f"{te2}.lora_up.weight"] = torch.randn(32, 2)
    tensors[f"{te2}.lora_down.weight"] = torch.randn(2, 32)
    path = str(tmp_path / "xl2.safetensors")
    save_file(tensors, path)
    result = resolve(read_lora_file(path), TargetIndex.build(sd1_parts()), "xl2")
    assert result.layers == {} and result.report.verdict == "refused"
    assert "second text encoder" in " ".join(result.report.architecture_evidence)
    assert "Use it with an SDXL checkpoint." in errors(result)[0].message


def test_sd1_file_on_sdxl_model_is_refused(tmp_path):
    from lora_ext.demo import build_tiny_pipeline

    path = str(tmp_path / "one.safetensors")
    save_file(good_tensors(), path, metadata={"modelspec.architecture": "stable-diffusion-v1/lora"})
    parts = ModelParts.from_diffusers(build_tiny_pipeline("sdxl", 0))
    result = resolve(read_lora_file(path), TargetIndex.build(parts), "one")
    assert result.layers == {}
    assert "SD1" in errors(result)[0].message and "SDXL" in errors(result)[0].message


def test_partial_match_lists_unmatched_keys(tmp_path):
    tensors = good_tensors()
    tensors["lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight"] = torch.ones(2, 2)
    path = str(tmp_path / "partial.safetensors")
    save_file(tensors, path)
    result = resolve(read_lora_file(path), TargetIndex.build(sd1_parts()), "partial")
    assert len(result.layers) == 1
    assert result.unmatched == ["lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight"]
    assert result.report.verdict == "partial"
    assert result.report.summary().startswith("partial: 1 of 3 keys unmatched")


def test_alpha_zero_is_a_warning_and_kept(tmp_path):
    tensors = good_tensors()
    tensors[f"{q_key()}.alpha"] = torch.tensor(0.0)
    path = str(tmp_path / "zero.safetensors")
    save_file(tensors, path)
    result = resolve(read_lora_file(path), TargetIndex.build(sd1_parts()), "zero")
    (adapter,) = result.layers.values()
    assert adapter.alpha == 0.0
    assert [p.severity for p in result.problems] == ["warning"]
    assert "alpha = 0" in result.problems[0].message


def test_incomplete_module_is_reported(tmp_path):
    path = str(tmp_path / "half.safetensors")
    save_file({f"{q_key()}.lora_up.weight": torch.randn(32, 2)}, path)
    result = resolve(read_lora_file(path), TargetIndex.build(sd1_parts()), "half")
    assert result.layers == {} and result.unmatched == [f"{q_key()}.lora_up.weight"]
    assert result.report.verdict == "refused"


def test_loader_returns_problems_for_every_bad_input_without_raising(tmp_path):
    parts = sd1_parts()
    loader = LoraLoader(max_cached=2)
    (tmp_path / "dir.safetensors").mkdir()
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    for name in ("dir.safetensors", "empty.safetensors", "junk.safetensors", "missing.safetensors"):
        result = loader.resolve(str(tmp_path / name), parts, name)
        assert isinstance(result, Problem), name
        assert result.subject.endswith(name)


def test_file_for_another_base_with_matching_names_is_refused_by_shapes(tmp_path):
    """Same module names, other widths (tiny SD1 LoRA on tiny SD2): refused with the shape reason, nothing applied."""
    from lora_ext.demo import build_tiny_pipeline

    sd1 = build_tiny_pipeline("sd1", 0)
    tensors = {}
    for name, module in sd1.text_encoder.named_modules():
        if name.endswith(("q_proj", "k_proj", "v_proj", "out_proj")):
            key = "lora_te_" + name.replace(".", "_")
            tensors[f"{key}.lora_up.weight"] = torch.randn(module.weight.shape[0], 2)
            tensors[f"{key}.lora_down.weight"] = torch.randn(2, module.weight.shape[1])
    path = str(tmp_path / "sd1_te.safetensors")
    save_file(tensors, path)
    sd2 = ModelParts.from_diffusers(build_tiny_pipeline("sd2", 0), family="sd2")
    result = resolve(read_lora_file(path), TargetIndex.build(sd2), "sd1_te")
    assert result.layers == {} and result.report.verdict == "refused"
    (problem,) = errors(result)
    assert "sd1_te.safetensors does not fit the loaded SD2 model" in problem.message
    assert "32 vs layer 64" in problem.message or "vs layer 64x64" in problem.message


def test_a_few_misfit_layers_are_skipped_with_a_warning(tmp_path):
    tensors = good_tensors()
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k"
    tensors[f"{key}.lora_up.weight"] = torch.randn(32, 2)
    tensors[f"{key}.lora_down.weight"] = torch.randn(2, 32)
    bad = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v"
    tensors[f"{bad}.lora_up.weight"] = torch.randn(48, 2)
    tensors[f"{bad}.lora_down.weight"] = torch.randn(2, 32)
    path = str(tmp_path / "mixed.safetensors")
    save_file(tensors, path)
    result = resolve(read_lora_file(path), TargetIndex.build(sd1_parts()), "mixed")
    assert len(result.layers) == 2
    assert sorted(result.unmatched) == [f"{bad}.lora_down.weight", f"{bad}.lora_up.weight"]
    assert result.report.verdict == "partial"
    assert any("do not fit" in p.message and p.severity == "warning" for p in result.problems)


def test_huge_finite_values_are_not_mistaken_for_inf(tmp_path):
    tensors = good_tensors()
    tensors[f"{q_key()}.lora_up.weight"][:2, 0] = 3e38  # the float32 sum overflows; the elements are finite
    path = str(tmp_path / "huge.safetensors")
    save_file(tensors, path)
    result = resolve(read_lora_file(path), TargetIndex.build(sd1_parts()), "huge")
    assert len(result.layers) == 1 and not errors(result)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_non_finite_found_in_every_float_dtype(tmp_path, dtype):
    tensors = {k: v.to(dtype) for k, v in good_tensors().items()}
    tensors[f"{q_key()}.lora_down.weight"][1, 5] = float("-inf")
    path = str(tmp_path / "neg.safetensors")
    save_file(tensors, path)
    result = resolve(read_lora_file(path), TargetIndex.build(sd1_parts()), "neg")
    assert result.layers == {} and "NaN or infinite" in errors(result)[0].message


def test_safetensors_without_tensors(tmp_path):
    path = str(tmp_path / "hollow.safetensors")
    save_file({}, path, metadata={"ss_output_name": "hollow"})
    result = resolve(read_lora_file(path), TargetIndex.build(sd1_parts()), "hollow")
    assert result.layers == {} and "holds no tensors" in errors(result)[0].message
