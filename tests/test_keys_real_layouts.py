"""Name maps on full-size SD1 / SD2 / SDXL layouts (built on the meta device: structure only, no memory, no data).

The tiny models have one resnet per down level; these check FORMATS.md §6–§8 where the real block counts matter:
kohya target counts (SD1 192 + 72, SDXL 722 + 72 + 192), the §7.1 / §7.2 table rows (SD1 ``up_blocks.0`` upsampler
at ``.1.conv``, SDXL at ``.2.conv``), compvis trees built by ``ldm`` mapping back to the same canonical names, and
OpenCLIP MHA row slices at real width.
"""

from __future__ import annotations

import functools

import pytest
import torch
from tiny_models import OpenCLIPTextModel
from torch import nn

from lora_ext.keys import ModelParts, TargetIndex

SD1_UNET = dict(cross_attention_dim=768, attention_head_dim=8)
SDXL_UNET = dict(
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    cross_attention_dim=2048,
    attention_head_dim=(5, 10, 20),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)


@functools.cache
def diffusers_index(family: str) -> TargetIndex:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**(SDXL_UNET if family == "sdxl" else SD1_UNET))
        te1 = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12
            )
        )
        encoders = {"te1": te1}
        if family == "sdxl":
            encoders["te2"] = CLIPTextModel(
                CLIPTextConfig(
                    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20
                )
            )
    return TargetIndex.build(ModelParts(family, unet, encoders))


def kohya_unet_targets(index: TargetIndex) -> list:
    return [
        t
        for t in index.by_component("unet")
        if ".attentions." in t.canonical and isinstance(t.module, (nn.Linear, nn.Conv2d))
    ]


def kohya_te_targets(index: TargetIndex, component: str) -> list:
    ends = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    return [
        t for t in index.by_component(component) if t.canonical.endswith(ends) and ".layers." in t.canonical
    ]


def test_kohya_target_counts_match_formats_section_6():
    sd1, xl = diffusers_index("sd1"), diffusers_index("sdxl")
    assert len(kohya_unet_targets(sd1)) == 192 and len(kohya_te_targets(sd1, "te1")) == 72
    assert len(kohya_unet_targets(xl)) == 722
    assert len(kohya_te_targets(xl, "te1")) + len(kohya_te_targets(xl, "te2")) == 264


@pytest.mark.parametrize(
    ("family", "compvis", "canonical"),
    [
        ("sd1", "input_blocks_0_0", "conv_in"),
        ("sd1", "input_blocks_1_1_proj_in", "down_blocks.0.attentions.0.proj_in"),
        ("sd1", "input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv"),
        (
            "sd1",
            "input_blocks_8_1_transformer_blocks_0_attn2_to_k",
            "down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k",
        ),
        ("sd1", "input_blocks_11_0_in_layers_2", "down_blocks.3.resnets.1.conv1"),
        ("sd1", "middle_block_1_proj_out", "mid_block.attentions.0.proj_out"),
        ("sd1", "middle_block_2_emb_layers_1", "mid_block.resnets.1.time_emb_proj"),
        ("sd1", "output_blocks_2_1_conv", "up_blocks.0.upsamplers.0.conv"),
        ("sd1", "output_blocks_5_2_conv", "up_blocks.1.upsamplers.0.conv"),
        ("sd1", "output_blocks_3_0_skip_connection", "up_blocks.1.resnets.0.conv_shortcut"),
        (
            "sd1",
            "output_blocks_11_1_transformer_blocks_0_ff_net_2",
            "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2",
        ),
        ("sd1", "time_embed_2", "time_embedding.linear_2"),
        ("sd1", "out_2", "conv_out"),
        (
            "sdxl",
            "input_blocks_4_1_transformer_blocks_1_attn2_to_k",
            "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k",
        ),
        ("sdxl", "input_blocks_6_0_op", "down_blocks.1.downsamplers.0.conv"),
        (
            "sdxl",
            "input_blocks_8_1_transformer_blocks_9_ff_net_0_proj",
            "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.0.proj",
        ),
        (
            "sdxl",
            "output_blocks_0_1_transformer_blocks_9_ff_net_2",
            "up_blocks.0.attentions.0.transformer_blocks.9.ff.net.2",
        ),
        ("sdxl", "output_blocks_2_2_conv", "up_blocks.0.upsamplers.0.conv"),
        ("sdxl", "output_blocks_5_2_conv", "up_blocks.1.upsamplers.0.conv"),
        ("sdxl", "output_blocks_8_0_out_layers_3", "up_blocks.2.resnets.2.conv2"),
        ("sdxl", "label_emb_0_0", "add_embedding.linear_1"),
    ],
)
def test_compvis_names_of_full_size_unets(family, compvis, canonical):
    target = diffusers_index(family).lookup("unet", compvis)
    assert target is not None and target.canonical == canonical and target.path == canonical


def test_ldm_sd1_unet_maps_back_to_the_diffusers_names():
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        ldm = UNetModel(
            image_size=64,
            in_channels=4,
            out_channels=4,
            model_channels=320,
            attention_resolutions=[4, 2, 1],
            num_res_blocks=2,
            channel_mult=[1, 2, 4, 4],
            num_heads=8,
            use_spatial_transformer=True,
            transformer_depth=1,
            context_dim=768,
            legacy=False,
        )
    compvis = TargetIndex.build(ModelParts("sd1", ldm, {}))
    diffusers = diffusers_index("sd1")
    assert {t.canonical for t in compvis.targets} == {t.canonical for t in diffusers.by_component("unet")}
    for target in compvis.targets:
        twin = diffusers.lookup("unet", target.canonical)
        assert diffusers.lookup("unet", target.path) is twin  # the compvis name reaches the same layer
        assert tuple(target.module.weight.shape) == tuple(twin.module.weight.shape)


def test_openclip_h_slices_at_full_width():
    with torch.device("meta"):
        model = OpenCLIPTextModel(vocab=49408, width=1024, layers=24, heads=16, mlp_width=4096, proj=1024)
    index = TargetIndex.build(ModelParts("sd2", None, {"te1": model}))
    q = index.lookup("te1", "text_model_encoder_layers_22_self_attn_q_proj")
    v = index.lookup("te1", "text_model.encoder.layers.22.self_attn.v_proj")
    assert q.path == v.path == "transformer.resblocks.22.attn"
    assert (q.rows, v.rows) == ((0, 1024), (2048, 3072))
    assert (
        index.lookup("te1", "text_model_encoder_layers_22_mlp_fc2").path
        == "transformer.resblocks.22.mlp.c_proj"
    )
    assert len(kohya_te_targets(index, "te1")) == 24 * 6


def sgm_name(canonical: str) -> str:
    """FORMATS.md §7 general rule (two resnets per down level, three per up level), attention blocks only."""
    import re

    m = re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", canonical)
    if m:
        return f"input_blocks.{3 * int(m[1]) + int(m[2]) + 1}.1.{m[3]}"
    m = re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", canonical)
    if m:
        return f"output_blocks.{3 * int(m[1]) + int(m[2])}.1.{m[3]}"
    return canonical.replace("mid_block.attentions.0.", "middle_block.1.")


def test_full_size_sdxl_kohya_file_resolves_completely(tmp_path):
    from safetensors.torch import save_file

    from lora_ext.formats import read_lora_file
    from lora_ext.keys import resolve

    index = diffusers_index("sdxl")
    tensors = {}
    prefixes = {"te1": "lora_te1_", "te2": "lora_te2_"}
    targets = kohya_unet_targets(index) + kohya_te_targets(index, "te1") + kohya_te_targets(index, "te2")
    for target in targets:
        name = sgm_name(target.canonical) if target.component == "unet" else target.canonical
        key = (prefixes.get(target.component, "lora_unet_") + name).replace(".", "_")
        out, inp = target.module.weight.shape[:2]
        tensors[f"{key}.lora_up.weight"] = torch.zeros(out, 1, dtype=torch.float16)
        tensors[f"{key}.lora_down.weight"] = torch.zeros(
            1, inp, *target.module.weight.shape[2:], dtype=torch.float16
        )
        tensors[f"{key}.alpha"] = torch.tensor(1.0)
    path = tmp_path / "xl_full.safetensors"
    save_file(tensors, str(path), metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    result = resolve(read_lora_file(path), index, "xl_full")
    assert result.unmatched == []
    assert result.report.layers == {"unet": 722, "te1": 72, "te2": 192}
    assert result.report.summary() == "xl_full: 2958 keys, 2958 matched (UNet 722, TE1 72, TE2 192), lora"


@pytest.mark.parametrize(
    ("family", "canonical", "block"),
    [
        ("sd1", "conv_in", "IN00"),
        ("sd1", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "IN01"),
        ("sd1", "down_blocks.1.attentions.1.proj_in", "IN05"),
        ("sd1", "down_blocks.2.downsamplers.0.conv", "IN09"),
        ("sd1", "down_blocks.3.resnets.1.conv1", "IN11"),
        ("sd1", "mid_block.attentions.0.transformer_blocks.0.attn2.to_k", "MID"),
        ("sd1", "up_blocks.0.upsamplers.0.conv", "OUT02"),
        ("sd1", "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2", "OUT03"),
        ("sd1", "up_blocks.3.attentions.2.proj_out", "OUT11"),
        ("sd1", "time_embedding.linear_1", ""),
        ("sd1", "conv_out", ""),
        ("sd1", "text_model.encoder.layers.3.mlp.fc1", "BASE"),
        ("sdxl", "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k", "IN04"),
        ("sdxl", "down_blocks.2.attentions.1.proj_in", "IN08"),
        ("sdxl", "up_blocks.0.attentions.2.transformer_blocks.9.ff.net.2", "OUT02"),
        ("sdxl", "up_blocks.1.attentions.0.proj_out", "OUT03"),
        ("sdxl", "add_embedding.linear_1", ""),
    ],
)
def test_block_weight_labels_follow_the_compvis_block_index(family, canonical, block):
    """LoRA Block Weight labels (USERS §7.1) come from the compvis index of the real layouts (FORMATS §7)."""
    index = diffusers_index(family)
    matches = [t for t in index.targets if t.canonical == canonical]
    assert matches, canonical
    assert {t.block for t in matches} == {block}
