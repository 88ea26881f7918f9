"""The remaining key conventions of FORMATS.md §3, written from its key tables onto the real tiny models.

ComfyUI native keys (row 24), kohya names with PEFT suffixes (row 25), kohya OFT ``oft_unet_`` (row 16), cloneofsimo
positional ``.pt`` lists and safeloras (row 26, §10.12) and bundled embeddings (row 27).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import a1111_model, diffusers_to_compvis_path
from torch import nn

from lora_ext.demo import build_tiny_pipeline
from lora_ext.formats import read_lora_file
from lora_ext.keys import ModelParts, TargetIndex, resolve

ATTN_SUFFIXES = (".to_q", ".to_k", ".to_v", ".to_out.0")
TE_SUFFIXES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "mlp.fc1",
    "mlp.fc2",
)


def attn_linears(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in unet.named_modules() if n.endswith(ATTN_SUFFIXES) and isinstance(m, nn.Linear)]


def te_linears(te: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in te.named_modules() if n.endswith(TE_SUFFIXES)]


def pair(module: nn.Module, rank: int = 2):
    return torch.randn(module.weight.shape[0], rank), torch.randn(rank, module.weight.shape[1])


def diffusers_parts(family: str):
    return ModelParts.from_diffusers(build_tiny_pipeline(family, 0), family=family)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_comfyui_native_keys(tmp_path, family):
    pipe = build_tiny_pipeline(family, 0)
    tensors, expected = {}, set()
    for name, module in attn_linears(pipe.unet):
        key = "diffusion_model." + diffusers_to_compvis_path(name, family)
        tensors[f"{key}.lora_up.weight"], tensors[f"{key}.lora_down.weight"] = pair(module)
        tensors[f"{key}.alpha"] = torch.tensor(1.0)
        expected.add(("unet", name))
    encoders = {"te1": ("clip_l", pipe.text_encoder)}
    if family == "sdxl":
        encoders["te2"] = ("clip_g", pipe.text_encoder_2)
    for component, (clip, te) in encoders.items():
        for name, module in te_linears(te):
            key = f"text_encoders.{clip}.transformer.{name}"
            tensors[f"{key}.lora_up.weight"], tensors[f"{key}.lora_down.weight"] = pair(module)
            expected.add((component, name))
    path = str(tmp_path / "comfy.safetensors")
    save_file(tensors, path)
    file = read_lora_file(path)
    for parts in (diffusers_parts(family), ModelParts.from_a1111(a1111_model(family, 0))):
        result = resolve(file, TargetIndex.build(parts), "comfy")
        assert result.unmatched == []
        assert {(t.component, t.canonical) for t in result.layers} == expected


def test_kohya_names_with_peft_suffixes(tmp_path):
    pipe = build_tiny_pipeline("sd1", 0)
    tensors, expected = {}, set()
    for name, module in attn_linears(pipe.unet):
        key = "lora_unet_" + name.replace(".", "_")
        tensors[f"{key}.lora_B.weight"], tensors[f"{key}.lora_A.weight"] = pair(module, rank=3)
        expected.add(("unet", name))
    path = str(tmp_path / "ab.safetensors")
    save_file(tensors, path)
    result = resolve(read_lora_file(path), TargetIndex.build(diffusers_parts("sd1")), "ab")
    assert result.unmatched == []
    assert {(t.component, t.path) for t in result.layers} == expected
    for target, adapter in result.layers.items():
        assert adapter.tensors["up"].shape == (target.module.weight.shape[0], 3)
        assert adapter.tensors["down"].shape == (3, target.module.weight.shape[1])


@pytest.mark.parametrize("names", ["diffusers", "compvis"])
def test_kohya_oft_prefix(tmp_path, names):
    pipe = build_tiny_pipeline("sdxl", 0)
    tensors, expected = {}, set()
    for name, module in attn_linears(pipe.unet):
        written = diffusers_to_compvis_path(name, "sdxl") if names == "compvis" else name
        key = "oft_unet_" + written.replace(".", "_")
        out = module.weight.shape[0]
        tensors[f"{key}.oft_blocks"] = torch.randn(out // 8, 8, 8) * 0.01
        tensors[f"{key}.alpha"] = torch.tensor(1e-3)
        expected.add(("unet", name))
    path = str(tmp_path / "oft.safetensors")
    save_file(tensors, path)
    result = resolve(read_lora_file(path), TargetIndex.build(diffusers_parts("sdxl")), "oft")
    assert result.unmatched == []
    assert {(t.component, t.path) for t in result.layers} == expected
    assert {a.algo for a in result.layers.values()} == {"oft"}
    assert all(a.alpha == pytest.approx(1e-3) for a in result.layers.values())


def cloneofsimo_order(model: nn.Module, classes: set[str]) -> list[nn.Module]:
    """cloneofsimo ``_find_modules``: ancestors of a target class in ``modules()`` order, their Linear descendants."""
    found = []
    for ancestor in model.modules():
        if type(ancestor).__name__ in classes:
            found.extend(m for m in ancestor.modules() if isinstance(m, nn.Linear))
    return found


def test_cloneofsimo_pt_lists(tmp_path):
    pipe = build_tiny_pipeline("sd1", 0)
    names = {id(m): n for n, m in pipe.unet.named_modules()}
    te_names = {id(m): n for n, m in pipe.text_encoder.named_modules()}
    unet_mods = cloneofsimo_order(pipe.unet, {"CrossAttention", "Attention", "GEGLU"})
    te_mods = cloneofsimo_order(pipe.text_encoder, {"CLIPAttention"})
    assert [te_names[id(m)].rsplit(".", 1)[-1] for m in te_mods[:4]] == [
        "k_proj",
        "v_proj",
        "q_proj",
        "out_proj",
    ]
    torch.manual_seed(4)
    unet_list = [t for m in unet_mods for t in pair(m)]
    te_list = [t for m in te_mods for t in pair(m)]
    torch.save(unet_list, tmp_path / "lora.pt")
    torch.save(te_list, tmp_path / "lora.text_encoder.pt")

    for parts in (diffusers_parts("sd1"), ModelParts.from_a1111(a1111_model("sd1", 0))):
        index = TargetIndex.build(parts)
        unet = resolve(read_lora_file(tmp_path / "lora.pt"), index, "c")
        assert unet.unmatched == []
        by_canonical = {t.canonical: a for t, a in unet.layers.items()}
        assert len(by_canonical) == len(unet_mods)
        for i, module in enumerate(unet_mods):
            adapter = by_canonical[names[id(module)]]
            assert torch.equal(adapter.tensors["up"], unet_list[2 * i]) and adapter.alpha is None
        te = resolve(read_lora_file(tmp_path / "lora.text_encoder.pt"), index, "c")
        assert te.unmatched == []
        by_canonical = {t.canonical: a for t, a in te.layers.items()}
        for i, module in enumerate(te_mods):
            assert torch.equal(by_canonical[te_names[id(module)]].tensors["down"], te_list[2 * i + 1])


def test_cloneofsimo_safeloras(tmp_path):
    pipe = build_tiny_pipeline("sd1", 0)
    names = {id(m): ("unet", n) for n, m in pipe.unet.named_modules()}
    names.update({id(m): ("te1", n) for n, m in pipe.text_encoder.named_modules()})
    tensors, expected = {}, {}
    for prefix, mods in (
        ("unet", cloneofsimo_order(pipe.unet, {"Attention", "GEGLU"})),
        ("text_encoder", cloneofsimo_order(pipe.text_encoder, {"CLIPAttention"})),
    ):
        for i, module in enumerate(mods):
            tensors[f"{prefix}:{i}:up"], tensors[f"{prefix}:{i}:down"] = pair(module)
            expected[names[id(module)]] = f"{prefix}:{i}:up"
    metadata = {"unet": '["Attention", "GEGLU"]', "text_encoder": '["CLIPAttention"]', "unet:0:rank": "2"}
    path = str(tmp_path / "safeloras.safetensors")
    save_file(tensors, path, metadata=metadata)
    result = resolve(read_lora_file(path), TargetIndex.build(diffusers_parts("sd1")), "s")
    assert result.unmatched == []
    assert {(t.component, t.path): a.keys[0] for t, a in result.layers.items()} == expected


def test_cloneofsimo_list_that_fits_no_model_is_unmatched(tmp_path):
    torch.save([torch.ones(5, 1), torch.ones(1, 7)], tmp_path / "odd.pt")
    result = resolve(read_lora_file(tmp_path / "odd.pt"), TargetIndex.build(diffusers_parts("sd1")), "odd")
    assert result.layers == {} and sorted(result.unmatched) == ["0", "1"]
    assert result.report.verdict == "refused"


def test_bundled_embeddings_are_handed_over(tmp_path):
    pipe = build_tiny_pipeline("sdxl", 0)
    name, module = attn_linears(pipe.unet)[0]
    key = "lora_unet_" + name.replace(".", "_")
    up, down = pair(module)
    tensors = {
        f"{key}.lora_up.weight": up,
        f"{key}.lora_down.weight": down,
        "bundle_emb.mychar.clip_l": torch.randn(2, 32),
        "bundle_emb.mychar.clip_g": torch.randn(2, 32),
        "bundle_emb.oldstyle.string_to_param.*": torch.randn(1, 32),
    }
    path = str(tmp_path / "bundle.safetensors")
    save_file(tensors, path)
    result = resolve(read_lora_file(path), TargetIndex.build(diffusers_parts("sdxl")), "b")
    assert result.unmatched == []
    assert set(result.embeddings) == {"mychar", "oldstyle"}
    assert set(result.embeddings["mychar"]) == {"clip_l", "clip_g"}
    assert torch.equal(
        result.embeddings["oldstyle"]["string_to_param"], tensors["bundle_emb.oldstyle.string_to_param.*"]
    )
    assert result.report.keys_matched == 5 and result.report.embeddings == ["mychar", "oldstyle"]


def test_text_encoder_paths_with_and_without_text_model_prefix(tmp_path):
    """transformers 5 drops ``text_model.``: keys and module trees without it resolve to the same layers."""
    pipe = build_tiny_pipeline("sd1", 0)
    tensors, expected = {}, set()
    for name, module in te_linears(pipe.text_encoder):
        short = name.removeprefix("text_model.")
        tensors[f"text_encoder.{short}.lora_A.weight"] = torch.randn(2, module.weight.shape[1])
        tensors[f"text_encoder.{short}.lora_B.weight"] = torch.randn(module.weight.shape[0], 2)
        expected.add(("te1", name))
    path = str(tmp_path / "short.safetensors")
    save_file(tensors, path)
    file = read_lora_file(path)
    full = resolve(file, TargetIndex.build(ModelParts.from_diffusers(pipe)), "short")
    assert full.unmatched == [] and {(t.component, t.canonical) for t in full.layers} == expected
    bare = ModelParts("sd1", None, {"te1": pipe.text_encoder.text_model})  # a CLIPTextTransformer root
    on_bare = resolve(file, TargetIndex.build(bare), "short")
    assert on_bare.unmatched == []
    assert {(t.component, t.canonical) for t in on_bare.layers} == expected
    assert all(not t.path.startswith("text_model.") for t in on_bare.layers)
