"""The shared fixtures themselves: tiny pipelines, A1111-shaped trees, name maps and LoRA writers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import (
    OpenCLIPTextModel,
    a1111_model,
    a1111_target_path,
    a1111_text_roots,
    compvis_path_map,
    diffusers_to_a1111_state,
    hf_clip_to_openclip_state,
    openclip_to_hf_state,
)

from lora_ext.demo import build_tiny_pipeline, tiny_text_encoders, tiny_tokenizer, tiny_unet
from lora_ext.demo.tiny import family_spec

FAMILIES = ("sd1", "sd2", "sdxl")


# ---------------------------------------------------------------------------------------------- diffusers pipelines


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_pipeline_generates_64px_image_offline(family):
    pipe = build_tiny_pipeline(family)
    out = pipe(
        "a photo of a cat",
        height=64,
        width=64,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    image = out.images[0]
    assert image.shape == (64, 64, 3)
    assert np.isfinite(image).all() and image.std() > 0.01


def test_tiny_pipeline_is_deterministic_and_prompt_sensitive():
    def run(prompt):
        pipe = build_tiny_pipeline("sd1", seed=0)
        gen = torch.Generator().manual_seed(0)
        return pipe(
            prompt, height=64, width=64, num_inference_steps=2, generator=gen, output_type="np"
        ).images[0]

    a, b, c = run("a red cat"), run("a red cat"), run("a blue dog")
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_builders_are_seeded():
    a, b, c = tiny_unet("sd1", seed=0), tiny_unet("sd1", seed=0), tiny_unet("sd1", seed=1)
    wa, wb, wc = (m.down_blocks[0].attentions[0].proj_in.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_family_layouts_follow_the_real_ones():
    sd1, sd2, sdxl = (tiny_unet(f) for f in FAMILIES)
    assert isinstance(sd1.down_blocks[0].attentions[0].proj_in, torch.nn.Conv2d)
    assert isinstance(sd2.down_blocks[0].attentions[0].proj_in, torch.nn.Linear)
    assert sd2.config.cross_attention_dim > sd1.config.cross_attention_dim
    assert [type(b).__name__ for b in sdxl.down_blocks] == [
        "DownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
    ]
    assert len(sdxl.down_blocks[1].attentions[0].transformer_blocks) == 2
    assert sdxl.config.addition_embed_type == "text_time"
    tes = tiny_text_encoders("sdxl")
    assert type(tes["te1"]).__name__ == "CLIPTextModel"
    assert type(tes["te2"]).__name__ == "CLIPTextModelWithProjection"
    assert tes["te1"].config.hidden_size + tes["te2"].config.hidden_size == sdxl.config.cross_attention_dim


def test_tokenizer_uses_real_special_ids():
    tok = tiny_tokenizer()
    ids = tok("a photo of a cat").input_ids
    assert ids[0] == 0 and ids[-1] == 1 and len(ids) > 3
    assert tok.model_max_length == 77


def test_demo_package_imports_without_diffusers():
    import subprocess
    import sys

    code = "import sys, lora_ext.demo; assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------- A1111-shaped trees


@pytest.mark.parametrize(
    ("family", "flags"),
    [("sd1", (True, False, False)), ("sd2", (False, True, False)), ("sdxl", (False, False, True))],
)
def test_a1111_tree_has_contract_paths_and_flags(family, flags):
    model = a1111_model(family)
    assert (model.is_sd1, model.is_sd2, model.is_sdxl) == flags
    assert model.is_ssd is False and model.is_sd3 is False
    names = dict(model.named_modules())
    assert "model.diffusion_model.input_blocks.0.0" in names
    if family == "sd1":
        assert type(model.cond_stage_model.wrapped.transformer).__name__ == "CLIPTextModel"
        assert "cond_stage_model.wrapped.transformer.text_model.encoder.layers.1.self_attn.q_proj" in names
        assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q" in names
        assert isinstance(names["model.diffusion_model.input_blocks.1.1.proj_in"], torch.nn.Conv2d)
    if family == "sd2":
        attn = names["cond_stage_model.wrapped.model.transformer.resblocks.1.attn"]
        assert isinstance(attn, torch.nn.MultiheadAttention) and attn.batch_first
        for child in ("ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj", "attn.out_proj"):
            assert f"cond_stage_model.wrapped.model.transformer.resblocks.0.{child}" in names
        assert isinstance(names["model.diffusion_model.input_blocks.1.1.proj_in"], torch.nn.Linear)
        assert not hasattr(model.cond_stage_model, "model") and hasattr(
            model.cond_stage_model.wrapped, "model"
        )
    if family == "sdxl":
        embedders = model.conditioner.embedders
        assert model.cond_stage_model is model.conditioner
        assert type(embedders[0].wrapped.transformer).__name__ == "CLIPTextModel"
        assert isinstance(embedders[1].wrapped.model, OpenCLIPTextModel)
        assert any(not hasattr(e, "wrapped") for e in embedders)
        assert "conditioner.embedders.1.wrapped.model.transformer.resblocks.0.attn" in names
        # level 0 has no attention; deeper levels have depth-2 transformers; SGM label_emb
        assert "model.diffusion_model.input_blocks.1.1" not in names
        assert "model.diffusion_model.input_blocks.3.1.transformer_blocks.1.attn2.to_k" in names
        assert "model.diffusion_model.label_emb.0.2" in names
        assert "model.diffusion_model.output_blocks.1.2.conv" in names


def test_a1111_layer_names_follow_the_contract_table():
    """A1111_CONTRACT §9.1: layer names are ``named_modules()`` paths with "." -> "_" (SDXL: embedder index prefix)."""

    def names(module, prefix=""):
        return {prefix + n.replace(".", "_") for n, _ in module.named_modules()}

    sd1, sd2, sdxl = (a1111_model(f) for f in FAMILIES)
    assert "transformer_text_model_encoder_layers_1_self_attn_q_proj" in names(sd1.cond_stage_model.wrapped)
    assert "diffusion_model_input_blocks_1_1_transformer_blocks_0_attn2_to_k" in names(sd1.model)
    assert {"model_transformer_resblocks_1_attn", "model_transformer_resblocks_1_mlp_c_fc"} <= names(
        sd2.cond_stage_model.wrapped
    )
    xl = set()
    for i, embedder in enumerate(sdxl.conditioner.embedders):
        if hasattr(embedder, "wrapped"):
            xl |= names(embedder.wrapped, f"{i}_")
    assert "0_transformer_text_model_encoder_layers_0_mlp_fc1" in xl
    assert "1_model_transformer_resblocks_1_attn" in xl and "1_model_transformer_resblocks_1_mlp_c_proj" in xl


@pytest.mark.parametrize("family", FAMILIES)
def test_compvis_and_diffusers_unets_agree_with_same_weights(family):
    torch.manual_seed(1)
    unet = tiny_unet(family)
    model = a1111_model(family, unet=unet, text_encoders=tiny_text_encoders(family))
    x, t = torch.randn(2, 4, 32, 32), torch.tensor([10, 700])
    ctx = torch.randn(2, 77, family_spec(family).context_dim)
    kwargs, y = {}, None
    if family == "sdxl":
        text_embeds = torch.randn(2, 32)
        time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64], [32, 48, 8, 0, 64, 64]])
        kwargs = {"added_cond_kwargs": {"text_embeds": text_embeds, "time_ids": time_ids}}
        y = torch.cat([text_embeds, unet.add_time_proj(time_ids.flatten()).reshape(2, -1)], dim=1)
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=ctx, **kwargs).sample
        got = model.model(x, t, ctx, y)
    assert ref.abs().mean() > 0.05
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_a1111_text_encoders_match_diffusers_ones(family):
    tes = tiny_text_encoders(family)
    model = a1111_model(family, text_encoders=tes)
    ids = torch.randint(2, 300, (2, 77))
    ids[:, 9] = 1
    for component, root in a1111_text_roots(model).items():
        with torch.no_grad():
            ref = tes[component](input_ids=ids)
            got = root(ids) if isinstance(root, OpenCLIPTextModel) else root(input_ids=ids).last_hidden_state
            torch.testing.assert_close(got, ref.last_hidden_state, atol=1e-5, rtol=1e-4)
            if isinstance(root, OpenCLIPTextModel) and hasattr(ref, "text_embeds"):
                torch.testing.assert_close(root.pooled(ids), ref.text_embeds, atol=1e-5, rtol=1e-4)
        assert root is not tes[component]


def test_openclip_state_round_trips_and_fuses_qkv_in_order():
    te = tiny_text_encoders("sdxl")["te2"]
    hf = te.state_dict()
    oc = hf_clip_to_openclip_state(hf)
    w = oc["transformer.resblocks.1.attn.in_proj_weight"]
    d = te.config.hidden_size
    assert w.shape == (3 * d, d)
    assert torch.equal(w[d : 2 * d], hf["text_model.encoder.layers.1.self_attn.k_proj.weight"])
    back = openclip_to_hf_state(oc, with_projection=True)
    for key, value in back.items():
        assert torch.equal(value, hf[key]), key


@pytest.mark.parametrize("family", FAMILIES)
def test_name_map_covers_every_diffusers_module(family):
    unet = tiny_unet(family)
    mapping = compvis_path_map(family, unet)
    compvis = dict(a1111_model(family).model.diffusion_model.named_modules())
    assert len(set(mapping.values())) == len(mapping)
    diffusers = dict(unet.named_modules())
    for src, dst in mapping.items():
        assert isinstance(compvis[dst], type(diffusers[src])), (src, dst)
    assert a1111_target_path(family, "unet", next(iter(mapping)))[0] == mapping[next(iter(mapping))]


def test_a1111_target_path_slices_openclip_qkv():
    path, rows = a1111_target_path("sd2", "te1", "text_model.encoder.layers.1.self_attn.v_proj")
    assert path == "transformer.resblocks.1.attn" and rows == (128, 192)
    assert a1111_target_path("sd2", "te1", "text_model.encoder.layers.0.mlp.fc2") == (
        "transformer.resblocks.0.mlp.c_proj",
        None,
    )
    assert (
        a1111_target_path("sdxl", "te1", "text_model.encoder.layers.0.mlp.fc2")[0]
        == "text_model.encoder.layers.0.mlp.fc2"
    )
    assert (
        a1111_target_path("sd1", "unet", "down_blocks.0.resnets.0.conv1")[0] == "input_blocks.1.0.in_layers.2"
    )
    assert a1111_target_path("sdxl", "unet", "up_blocks.1.upsamplers.0.conv")[0] == "output_blocks.3.2.conv"


# ---------------------------------------------------------------------------------------------- LoRA writers


def _keys(path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def _meta(path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def _module_keys(path) -> set[str]:
    return {k.split(".", 1)[0] for k in _keys(path)}


def _fused_changes(family, folder, weight_name):
    """Layers that diffusers' own loader changes when it fuses the file: {(component, module path)}."""
    pipe = build_tiny_pipeline(family)
    parts = {"unet": pipe.unet, "te1": pipe.text_encoder}
    if family == "sdxl":
        parts["te2"] = pipe.text_encoder_2
    before = {c: {k: v.clone() for k, v in m.state_dict().items()} for c, m in parts.items()}
    pipe.load_lora_weights(str(folder), weight_name=weight_name)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    after = {c: m.state_dict() for c, m in parts.items()}
    changed = {
        (c, k.rsplit(".", 1)[0])
        for c in parts
        for k in before[c]
        if not torch.equal(before[c][k], after[c][k])
    }
    return changed, after


@pytest.mark.parametrize(
    ("family", "naming", "conv_dim"),
    [("sd1", "diffusers", None), ("sd2", "diffusers", 4), ("sdxl", "compvis", 4)],
)
def test_kohya_file_changes_exactly_the_expected_layers_in_diffusers(tmp_path, family, naming, conv_dim):
    """diffusers' kohya converter (an independent reader) must find every key and nothing else."""
    from lora_writers import write_kohya

    written = write_kohya(
        build_tiny_pipeline(family), tmp_path / "k.safetensors", naming=naming, conv_dim=conv_dim
    )
    changed, _ = _fused_changes(family, tmp_path, "k.safetensors")
    assert changed == set(written.expected)
    assert any(p.endswith("conv1") for _, p in written.expected) == bool(conv_dim)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_kohya_targets_equal_the_lycoris_tool_targets(tmp_path, family):
    from lora_writers import write_kohya, write_lycoris

    pipe = build_tiny_pipeline(family)
    ours = write_kohya(pipe, tmp_path / "ours.safetensors", naming="diffusers", conv_dim=4)
    tool = write_lycoris(pipe, tmp_path / "tool.safetensors", algo="locon", conv=True)
    assert ours.expected == tool.expected
    assert _module_keys(ours.path) == _module_keys(tool.path)
    counts = {c: sum(1 for comp, _ in ours.expected if comp == c) for c in ("unet", "te1", "te2")}
    assert counts["te1"] == 12 and counts["te2"] == (12 if family == "sdxl" else 0)


def test_kohya_key_variants(tmp_path):
    from lora_writers import write_kohya

    pipe = build_tiny_pipeline("sd1")
    compvis = write_kohya(pipe, tmp_path / "c.safetensors", naming="compvis")
    assert "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q" in _module_keys(compvis.path)
    assert compvis.expected == write_kohya(pipe, tmp_path / "d.safetensors").expected
    dm = write_kohya(pipe, tmp_path / "dm.safetensors", naming="diffusion_model", components=("unet",))
    assert all(k.startswith("diffusion_model_") for k in _module_keys(dm.path))
    peft = write_kohya(pipe, tmp_path / "p.safetensors", suffix="peft")
    assert any(k.endswith("_to_q.lora_A.weight") for k in _keys(peft.path))
    assert not any("lora_down" in k for k in _keys(peft.path))
    no_alpha = write_kohya(pipe, tmp_path / "n.safetensors", alpha=None, metadata=False)
    assert not any(k.endswith(".alpha") for k in _keys(no_alpha.path)) and _meta(no_alpha.path) == {}


def test_kohya_tucker_dora_oft_dylora_and_embeddings(tmp_path):
    from lora_writers import write_kohya
    from safetensors.torch import load_file

    pipe = build_tiny_pipeline("sd1")
    t = load_file(
        str(write_kohya(pipe, tmp_path / "t.safetensors", algo="tucker", conv_dim=4, dora="out").path)
    )
    key = "lora_unet_down_blocks_0_resnets_0_conv1"
    assert t[f"{key}.lora_mid.weight"].shape == (4, 4, 3, 3)
    assert t[f"{key}.lora_down.weight"].shape == (4, 32, 1, 1)
    assert t[f"{key}.dora_scale"].shape == (32, 1, 1, 1)
    assert t["lora_te_text_model_encoder_layers_0_mlp_fc1.dora_scale"].shape == (64, 1)
    t_in = load_file(str(write_kohya(pipe, tmp_path / "i.safetensors", dora="in").path))
    assert t_in["lora_te_text_model_encoder_layers_0_mlp_fc1.dora_scale"].shape == (1, 32)
    oft = write_kohya(pipe, tmp_path / "o.safetensors", algo="oft", naming="compvis")
    o = load_file(str(oft.path))
    assert o["oft_unet_input_blocks_1_1_proj_in.oft_blocks"].shape == (4, 8, 8)
    assert (
        all(c == "unet" for c, _ in oft.expected) and _meta(oft.path)["ss_network_module"] == "networks.oft"
    )
    dy = write_kohya(pipe, tmp_path / "dy.safetensors", dyn=True, rank=8, embeddings={"mytok": 2})
    assert _meta(dy.path)["ss_network_module"] == "networks.dylora"
    assert load_file(str(dy.path))["bundle_emb.mytok.string_to_param.*"].shape == (2, 32)
    xl = write_kohya(build_tiny_pipeline("sdxl"), tmp_path / "xl.safetensors", embeddings={"tok": 1})
    assert {"bundle_emb.tok.clip_l", "bundle_emb.tok.clip_g"} <= set(_keys(xl.path))
    assert any(k.startswith("lora_te2_") for k in _keys(xl.path))


def test_kohya_metadata_is_realistic_and_hash_matches_data(tmp_path):
    import hashlib

    from lora_writers import write_kohya

    path = write_kohya(build_tiny_pipeline("sdxl"), tmp_path / "style.safetensors").path
    meta = _meta(path)
    assert meta["ss_output_name"] == "style" and meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert json.loads(meta["ss_tag_frequency"])
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(raw[8 + n :]).hexdigest()


LYCORIS_CASES = [
    ("lora", {}, {"lora_down.weight", "lora_up.weight", "alpha"}),
    ("loha", {}, {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"}),
    ("loha", {"conv": True, "use_tucker": True}, {"hada_t1", "hada_t2"}),
    ("lokr", {}, {"lokr_w1", "alpha"}),
    ("lokr", {"full_matrix": True}, {"lokr_w1", "lokr_w2"}),
    ("lokr", {"conv": True, "use_tucker": True}, {"lokr_t2", "lokr_w2_a", "lokr_w2_b"}),
    ("full", {}, {"diff", "diff_b"}),
    ("ia3", {}, {"weight", "on_input"}),
    ("glora", {}, {"a1.weight", "a2.weight", "b1.weight", "b2.weight"}),
    ("diag-oft", {}, {"oft_blocks", "alpha"}),
    ("boft", {}, {"oft_blocks"}),
    ("norm", {}, {"w_norm", "b_norm"}),
    ("dora", {"wd_on_output": True}, {"dora_scale"}),
    ("dora", {"wd_on_output": False}, {"dora_scale"}),
]


@pytest.mark.parametrize(
    ("algo", "kw", "parts"), LYCORIS_CASES, ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(LYCORIS_CASES)]
)
def test_lycoris_writer_makes_nonzero_files(tmp_path, algo, kw, parts):
    from lora_writers import write_lycoris
    from safetensors.torch import load_file

    written = write_lycoris(build_tiny_pipeline("sd1"), tmp_path / "l.safetensors", algo=algo, **kw)
    tensors = load_file(str(written.path))
    found = {k.split(".", 1)[1] for k in tensors}
    assert parts <= found, found
    zero = [
        k
        for k, v in tensors.items()
        if v.is_floating_point() and not k.endswith(("alpha", "on_input")) and not v.any()
    ]
    assert zero == []
    assert len(_module_keys(written.path)) == len(written.expected) > 0
    assert _meta(written.path)["ss_network_module"] == "lycoris.kohya"
    if algo == "dora":
        scale = tensors["lora_te_text_model_encoder_layers_0_mlp_fc1.dora_scale"]
        assert scale.shape == ((64, 1) if kw["wd_on_output"] else (1, 32))


def test_lycoris_prefixed_keys(tmp_path):
    from lora_writers import write_lycoris_prefixed

    written = write_lycoris_prefixed(build_tiny_pipeline("sd1"), tmp_path / "s.safetensors", algo="lokr")
    keys = _module_keys(written.path)
    assert "lycoris_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in keys
    assert all(k.startswith("lycoris_") for k in keys) and len(keys) == len(written.expected)


def test_peft_file_and_older_diffusers_layouts_give_the_same_fused_weights(tmp_path):
    from lora_writers import peft_to_attn_procs, peft_to_diffusers_021, write_peft_lora

    written = write_peft_lora(
        build_tiny_pipeline("sd1"), tmp_path / "p.safetensors", components=("unet", "te1"), alpha=2
    )
    assert any(
        k.startswith("text_encoder.text_model.") and k.endswith("lora_B.weight") for k in _keys(written.path)
    )
    assert json.loads(_meta(written.path)["lora_adapter_metadata"])["unet.lora_alpha"] == 2
    changed, ref = _fused_changes("sd1", tmp_path, "p.safetensors")
    assert changed == set(written.expected)
    old = peft_to_diffusers_021(written.path, tmp_path / "old.safetensors")
    assert "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight" in _keys(old)
    assert "text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_linear_layer.up.weight" in _keys(
        old
    )
    _, got = _fused_changes("sd1", tmp_path, "old.safetensors")
    for c in ref:
        for k in ref[c]:
            torch.testing.assert_close(got[c][k], ref[c][k], atol=1e-6, rtol=0)
    procs = peft_to_attn_procs(written.path, tmp_path / "procs.safetensors")
    keys = _keys(procs)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight" in keys
    assert "text_encoder.text_model.encoder.layers.1.self_attn.to_q_lora.down.weight" in keys
    assert len(keys) == len(_keys(written.path))


def test_peft_dora_and_sdxl_text_encoder_2(tmp_path):
    from lora_writers import write_peft_lora

    written = write_peft_lora(
        build_tiny_pipeline("sdxl"),
        tmp_path / "d.safetensors",
        components=("unet", "te1", "te2"),
        use_dora=True,
    )
    keys = _keys(written.path)
    assert any(k.startswith("text_encoder_2.") for k in keys)
    assert any(k.endswith("to_q.lora_magnitude_vector") for k in keys)
    assert {c for c, _ in written.expected} == {"unet", "te1", "te2"}


def test_raw_peft_folder(tmp_path):
    from lora_writers import write_raw_peft

    written = write_raw_peft(tiny_unet("sd1"), tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    keys = _keys(written.path)
    assert all(k.startswith("base_model.model.") for k in keys)
    assert len({k.rsplit(".lora_", 1)[0] for k in keys}) == len(written.expected) == 32


def test_comfyui_cloneofsimo_and_safeloras(tmp_path):
    from lora_writers import write_cloneofsimo_pt, write_comfyui, write_safeloras

    pipe = build_tiny_pipeline("sdxl")
    comfy = write_comfyui(pipe, tmp_path / "c.safetensors")
    keys = set(_keys(comfy.path))
    assert "diffusion_model.input_blocks.3.1.transformer_blocks.0.attn1.to_q.lora_up.weight" in keys
    assert (
        "text_encoders.clip_g.transformer.text_model.encoder.layers.0.self_attn.q_proj.lora_up.weight" in keys
    )
    assert "diffusion_model.input_blocks.3.1.transformer_blocks.0.attn1.to_q.alpha" in keys
    te = write_cloneofsimo_pt(build_tiny_pipeline("sd1"), tmp_path / "te.pt", component="te1")
    weights = torch.load(str(te.path))
    assert isinstance(weights, list) and len(weights) == 2 * len(te.expected) == 2 * 8
    assert weights[0].dtype == torch.float16 and weights[0].shape == (32, 4) and weights[1].shape == (4, 32)
    unet = write_cloneofsimo_pt(pipe, tmp_path / "u.pt")
    assert ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj") in unet.expected
    safe = write_safeloras(pipe, tmp_path / "s.safetensors")
    meta = _meta(safe.path)
    assert "unet:0:up" in _keys(safe.path) and "text_encoder:0:down" in _keys(safe.path)
    assert meta["unet:0:rank"] == "4" and "CLIPAttention" in meta["text_encoder"]


# ---------------------------------------------------------------------------------------------- demo LoRAs


def test_demo_loras_have_kohya_keys_metadata_sidecars_and_previews(tmp_path):
    from PIL import Image

    from lora_ext.demo import write_demo_loras

    paths = write_demo_loras(tmp_path, "sd1")
    rel = [p.relative_to(tmp_path).as_posix() for p in paths]
    assert rel == [
        "demo_style.safetensors",
        "demo_color.safetensors",
        "demo_ink.safetensors",
        "subdir/demo_detail.safetensors",
    ]
    style = _meta(paths[0])
    assert style["ss_output_name"] == "demo_style" and style["ss_base_model_version"] == "sd_v1"
    assert "demo style" in json.loads(style["ss_tag_frequency"])["10_demo_style"]
    keys = set(_keys(paths[0]))
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight" in keys
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha" in keys
    assert any("resnets_0_conv1" in k for k in _keys(paths[1]))
    assert all(k.startswith("lora_te_") for k in _keys(paths[2]))
    sidecars = [json.loads(p.with_suffix(".json").read_text()) for p in paths]
    assert sidecars[0]["activation text"] and sidecars[0]["preferred weight"] == 0.8
    assert sidecars[1]["negative text"] and all(s["sd version"] == "SD1" for s in sidecars)
    assert Image.open(tmp_path / "demo_style.png").size == (128, 128)
    assert (tmp_path / "demo_color.preview.png").is_file() and (
        tmp_path / "subdir" / "demo_detail.png"
    ).is_file()
    xl = write_demo_loras(tmp_path / "xl", "sdxl")
    assert _meta(xl[0])["ss_base_model_version"] == "sdxl_base_v1-0"
    assert any(k.startswith("lora_te2_") for k in _keys(xl[0]))


def test_demo_loras_are_deterministic_and_idempotent(tmp_path):
    from safetensors.torch import load_file

    from lora_ext.demo import write_demo_loras

    first = write_demo_loras(tmp_path / "a", "sd1")
    other = write_demo_loras(
        tmp_path / "b", build_tiny_pipeline("sd1")
    )  # ARCHITECTURE.md's (folder, pipe) form
    for p, q in zip(first, other, strict=True):
        a, b = load_file(str(p)), load_file(str(q))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert _meta(p) == _meta(q)
    sidecar = first[0].with_suffix(".json")
    sidecar.write_text('{"activation text": "edited by user"}')
    stamps = [p.stat().st_mtime_ns for p in first]
    assert write_demo_loras(tmp_path / "a", "sd1") == first
    assert [p.stat().st_mtime_ns for p in first] == stamps
    assert "edited by user" in sidecar.read_text()


def test_demo_loras_visibly_change_the_tiny_image_in_diffusers(tmp_path):
    """diffusers' own kohya loader applies each demo file; every one must change the 2-step image."""
    from lora_ext.demo import write_demo_loras

    def image(pipe):
        gen = torch.Generator().manual_seed(0)
        return pipe(
            "a photo of a cat", height=64, width=64, num_inference_steps=2, generator=gen, output_type="np"
        ).images[0]

    base = image(build_tiny_pipeline("sd1"))
    for path in write_demo_loras(tmp_path, "sd1"):
        pipe = build_tiny_pipeline("sd1")
        pipe.load_lora_weights(str(path.parent), weight_name=path.name)
        assert np.abs(image(pipe) - base).max() > 0.05, path.name


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_to_a1111_state_loads_other_weights_in_place(family):
    model = a1111_model(family, seed=0)
    other_unet, other_tes = tiny_unet(family, seed=4), tiny_text_encoders(family, seed=4)
    state = diffusers_to_a1111_state(family, other_unet, other_tes)
    assert model.load_state_dict(state, strict=False).missing_keys == []
    reference = a1111_model(family, unet=other_unet, text_encoders=other_tes).state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(model.state_dict()[k], reference[k]) for k in reference)
