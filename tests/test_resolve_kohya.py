"""Kohya-style files (FORMATS.md §3 rows 1-5, §6) resolve onto diffusers and A1111-style trees of the same family.

Files are written from FORMATS' key tables by walking the real tiny diffusers models (kohya's targets: every Linear
and Conv2d inside a Transformer2DModel; CLIP attention and MLP projections), then read back with ``read_lora_file``.
Expected compvis paths come from ``tests/tiny_models`` (an independent name map), not from ``lora_ext.keys``.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import a1111_model, a1111_target_path, diffusers_to_compvis_path
from torch import nn

from lora_ext.formats import read_lora_file
from lora_ext.keys import ModelParts, TargetIndex, resolve

TE_CHILDREN = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "mlp.fc1",
    "mlp.fc2",
)
TE_PREFIX = {
    "sd1": {"te1": "lora_te"},
    "sd2": {"te1": "lora_te"},
    "sdxl": {"te1": "lora_te1", "te2": "lora_te2"},
}


def kohya_unet_modules(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """kohya ``networks/lora.py`` UNet targets: Linear/Conv2d inside Transformer2DModel blocks (diffusers paths)."""
    return [
        (name, m)
        for name, m in unet.named_modules()
        if ".attentions." in name and isinstance(m, (nn.Linear, nn.Conv2d)) and "norm" not in name
    ]


def kohya_te_modules(te: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for name, m in te.named_modules():
        if (
            isinstance(m, nn.Linear)
            and any(name.endswith(c) for c in TE_CHILDREN)
            and "encoder.layers." in name
        ):
            out.append((name, m))
    return out


def lora_pair(module: nn.Module, rank: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    w = module.weight
    if w.dim() == 4:
        return torch.randn(w.shape[0], rank, 1, 1), torch.randn(rank, w.shape[1], *w.shape[2:])
    return torch.randn(w.shape[0], rank), torch.randn(rank, w.shape[1])


def write_kohya(path, pipe, family: str, unet_names: str = "diffusers", unet_prefix: str = "lora_unet_"):
    """Write a kohya LoRA for ``pipe``; returns {(component, canonical)}: the layers it must resolve to."""
    torch.manual_seed(1)
    tensors: dict[str, torch.Tensor] = {}
    expected = set()
    for name, module in kohya_unet_modules(pipe.unet):
        written = diffusers_to_compvis_path(name, family) if unet_names == "compvis" else name
        key = unet_prefix + written.replace(".", "_")
        tensors[f"{key}.lora_up.weight"], tensors[f"{key}.lora_down.weight"] = lora_pair(module)
        tensors[f"{key}.alpha"] = torch.tensor(1.0)
        expected.add(("unet", name))
    encoders = {"te1": pipe.text_encoder}
    if family == "sdxl":
        encoders["te2"] = pipe.text_encoder_2
    for component, te in encoders.items():
        for name, module in kohya_te_modules(te):
            key = TE_PREFIX[family][component] + "_" + name.replace(".", "_")
            tensors[f"{key}.lora_up.weight"], tensors[f"{key}.lora_down.weight"] = lora_pair(module)
            tensors[f"{key}.alpha"] = torch.tensor(2.0)
            expected.add((component, name))
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora"})
    return expected


def parts_for(kind: str, family: str):
    from lora_ext.demo import build_tiny_pipeline

    if kind == "diffusers":
        pipe = build_tiny_pipeline(family, 0)
        return pipe, ModelParts.from_diffusers(pipe, family=family)
    return None, ModelParts.from_a1111(a1111_model(family, 0))


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("unet_names", ["diffusers", "compvis"])
def test_kohya_file_resolves_identically_on_diffusers_and_a1111(tmp_path, family, unet_names):
    from lora_ext.demo import build_tiny_pipeline

    pipe = build_tiny_pipeline(family, 0)
    path = tmp_path / "k.safetensors"
    expected = write_kohya(path, pipe, family, unet_names)
    file = read_lora_file(path)

    on_diffusers = resolve(file, TargetIndex.build(ModelParts.from_diffusers(pipe, family=family)), "k")
    assert on_diffusers.unmatched == []
    assert {(t.component, t.canonical) for t in on_diffusers.layers} == expected
    assert {(t.component, t.path) for t in on_diffusers.layers} == expected
    assert on_diffusers.report.verdict == "ok"

    a1111 = a1111_model(family, 0)
    on_a1111 = resolve(file, TargetIndex.build(ModelParts.from_a1111(a1111)), "k")
    assert on_a1111.unmatched == []
    assert {(t.component, t.canonical) for t in on_a1111.layers} == expected
    for target, adapter in on_a1111.layers.items():
        if target.component == "unet":
            assert target.path == diffusers_to_compvis_path(target.canonical, family)
        else:
            path, rows = a1111_target_path(family, target.component, target.canonical)
            assert target.path == path
            if rows is not None:
                assert target.rows == rows and target.weight == "in_proj_weight"
        assert adapter.algo == "lora" and adapter.alpha in (1.0, 2.0)
        # the tensors are the ones the same key gave on the diffusers tree
        twin = next(
            a
            for t, a in on_diffusers.layers.items()
            if (t.component, t.canonical) == (target.component, target.canonical)
        )
        assert adapter.keys == twin.keys
        assert torch.equal(adapter.tensors["up"], twin.tensors["up"])


@pytest.mark.parametrize("prefix", ["lora_unet_diffusion_model_", "lora_unet_"])
def test_compvis_named_sd1_with_diffusion_model_variant(tmp_path, prefix):
    from lora_ext.demo import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1", 0)
    path = tmp_path / "v.safetensors"
    expected = write_kohya(path, pipe, "sd1", "compvis", unet_prefix=prefix)
    result = resolve(read_lora_file(path), TargetIndex.build(ModelParts.from_diffusers(pipe)), "v")
    assert result.unmatched == []
    assert {(t.component, t.canonical) for t in result.layers} == expected


def test_sdxl_openclip_te2_gets_row_slices_of_in_proj(tmp_path):
    from lora_ext.demo import build_tiny_pipeline

    pipe = build_tiny_pipeline("sdxl", 0)
    path = tmp_path / "x.safetensors"
    write_kohya(path, pipe, "sdxl")
    model = a1111_model("sdxl", 0)
    result = resolve(read_lora_file(path), TargetIndex.build(ModelParts.from_a1111(model)), "x")
    slices = sorted(
        (t.canonical.rsplit(".", 1)[-1], t.rows)
        for t in result.layers
        if t.component == "te2" and t.rows and ".layers.0." in t.canonical
    )
    d = model.conditioner.embedders[1].wrapped.model.transformer.resblocks[0].attn.embed_dim
    assert slices == [("k_proj", (d, 2 * d)), ("q_proj", (0, d)), ("v_proj", (2 * d, 3 * d))]
    counts = result.report.layers
    assert counts == {"unet": len(kohya_unet_modules(pipe.unet)), "te1": 12, "te2": 12}
