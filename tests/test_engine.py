"""``LoraLoader``: LRU of parsed files keyed by (path, size, mtime), resolution cached per model (USERS.md P4)."""

from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

from lora_ext.adapters import LoraFile, ResolvedLora
from lora_ext.engine import LoraLoader
from lora_ext.errors import Problem
from lora_ext.keys import ModelParts

KEY = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


def write(path, scale: float = 1.0) -> str:
    save_file(
        {f"{KEY}.lora_up.weight": torch.full((32, 2), scale), f"{KEY}.lora_down.weight": torch.ones(2, 32)},
        str(path),
    )
    return str(path)


def bump_mtime(path: str) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))


def test_load_is_cached_until_the_file_changes(tmp_path):
    loader = LoraLoader(max_cached=4)
    path = write(tmp_path / "a.safetensors")
    first = loader.load(path)
    assert isinstance(first, LoraFile)
    assert loader.load(path) is first
    write(path, scale=2.0)
    bump_mtime(path)
    second = loader.load(path)
    assert second is not first
    assert float(second.tensors[f"{KEY}.lora_up.weight"][0, 0]) == 2.0


def test_lru_evicts_the_least_recently_used(tmp_path):
    loader = LoraLoader(max_cached=2)
    a, b, c = (write(tmp_path / f"{n}.safetensors") for n in "abc")
    loader.load(a)
    loader.load(b)
    loader.load(a)  # a is now the most recent
    loader.load(c)
    assert loader.cached_paths() == [a, c]


def test_zero_cache_keeps_nothing(tmp_path):
    loader = LoraLoader(max_cached=0)
    path = write(tmp_path / "a.safetensors")
    assert loader.load(path) is not loader.load(path)
    assert loader.cached_paths() == []


def test_resolve_is_cached_per_model_and_invalidated(tmp_path):
    from lora_ext.demo import build_tiny_pipeline

    loader = LoraLoader(max_cached=4)
    path = write(tmp_path / "a.safetensors")
    parts = ModelParts.from_diffusers(build_tiny_pipeline("sd1", 0))
    first = loader.resolve(path, parts, "a")
    assert isinstance(first, ResolvedLora) and len(first.layers) == 1
    assert loader.resolve(path, parts, "a") is first
    other = ModelParts.from_diffusers(build_tiny_pipeline("sd1", 0))
    on_other = loader.resolve(path, other, "a")
    assert on_other is not first
    (target,) = on_other.layers
    assert target.module is other.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    loader.invalidate(path)
    assert loader.resolve(path, parts, "a") is not first


def test_resolve_problem_for_missing_and_broken_files(tmp_path):
    from lora_ext.demo import build_tiny_pipeline

    loader = LoraLoader()
    parts = ModelParts.from_diffusers(build_tiny_pipeline("sd1", 0))
    missing = loader.resolve(str(tmp_path / "gone.safetensors"), parts, "gone")
    assert isinstance(missing, Problem) and "does not exist" in missing.message
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\xff" * 20)
    result = loader.resolve(str(broken), parts, "broken")
    assert isinstance(result, Problem) and result.subject == str(broken)


def test_index_is_reused_for_the_same_modules_and_rebuilt_for_others():
    from lora_ext.demo import build_tiny_pipeline

    loader = LoraLoader()
    pipe = build_tiny_pipeline("sd1", 0)
    first = loader.index_for(ModelParts.from_diffusers(pipe))
    assert loader.index_for(ModelParts.from_diffusers(pipe)) is first
    assert loader.index_for(ModelParts.from_diffusers(pipe, family="sd2")) is not first
    assert loader.index_for(ModelParts.from_diffusers(build_tiny_pipeline("sd1", 0))) is not first


def test_forget_models_frees_the_model_and_keeps_parsed_files(tmp_path):
    import gc
    import weakref

    from lora_ext.demo import build_tiny_pipeline

    loader = LoraLoader(max_cached=4)
    path = write(tmp_path / "a.safetensors")
    pipe = build_tiny_pipeline("sd1", 0)
    resolved = loader.resolve(path, ModelParts.from_diffusers(pipe), "a")
    assert isinstance(resolved, ResolvedLora) and resolved.layers
    parsed = loader.load(path)
    unet = weakref.ref(pipe.unet)
    del pipe, resolved
    gc.collect()
    assert unet() is not None  # the cached resolution and index still hold the old model's modules
    loader.forget_models()
    gc.collect()
    assert unet() is None  # a checkpoint switch can free the old model
    assert loader.load(path) is parsed  # without reading the LoRA file again
