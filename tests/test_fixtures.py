"""The shared fixtures themselves: tiny pipelines, A1111-shaped trees, name maps and LoRA writers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import (
    OpenCLIPTextModel,
    a1111_model,
    a1111_target_path,
    a1111_text_roots,
    compvis_path_map,
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
