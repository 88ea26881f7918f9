"""One set of architecture rules serves the coverage report and the library (lora_ext.architecture).

Expected values come from the architectures themselves: SD1's CLIP-L width is 768, SD2's OpenCLIP-H 1024, SDXL's
concatenated context 2048; Flux has double/single blocks, SD3 joint blocks; SDXL has a second text encoder.
"""

from __future__ import annotations

import pytest

from lora_ext.architecture import detect
from lora_ext.coverage import detect_architecture
from lora_ext.library.arch import KEYS, WEAK, detect_file

TO_K = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
TE_Q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"


def _entries(shapes: dict[str, tuple[int, ...]]) -> dict[str, dict]:
    """Header-entry form of ``shapes``, as ``SafetensorsHeader.entries`` holds it."""
    return {k: {"dtype": "F32", "shape": list(s), "data_offsets": [0, 0]} for k, s in shapes.items()}


KEYED = [
    ({TO_K: (4, 768)}, "SD1"),
    ({TO_K: (4, 1024)}, "SD2"),
    ({TO_K: (4, 2048)}, "SDXL"),
    ({TO_K.replace("to_k", "to_v"): (4, 2048)}, "SDXL"),
    ({TE_Q: (4, 1024)}, "SD2"),
    ({TE_Q.replace("self_attn_q_proj", "mlp_fc1"): (4, 768)}, "SD1"),
    ({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 1280)}, "SDXL"),
    ({"lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_down.weight": (4, 640)}, "SDXL"),
    ({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (4, 3072)}, "Flux"),
    ({"lora_transformer_single_transformer_blocks_0_attn_to_q.lora_down.weight": (4, 3072)}, "Flux"),
    (
        {
            "lora_unet_joint_blocks_0_context_block_attn_qkv.lora_down.weight": (4, 1536),
            "text_encoders.clip_g.transformer.text_model.encoder.layers.0.mlp.fc1.lora_A.weight": (4, 1280),
        },
        "SD3",
    ),
]


@pytest.mark.parametrize(("shapes", "arch"), KEYED)
def test_coverage_and_library_agree_on_keys(shapes, arch):
    """Both callers read the same rules, from shapes or from header entries."""
    assert detect_architecture({}, shapes)[0] == arch
    assert detect_file({}, _entries(shapes)) == (KEYS, arch, "keys")
    assert detect({}, shapes, a1111_fallback=False) == detect({}, _entries(shapes), a1111_fallback=False)


def test_keys_beat_metadata_for_both_callers():
    metadata = {"modelspec.architecture": "stable-diffusion-v1/lora"}
    arch, evidence = detect_architecture(metadata, {TO_K: (4, 2048)})
    assert arch == "SDXL" and evidence[0] == "modelspec.architecture = stable-diffusion-v1/lora"
    assert detect_file(metadata, _entries({TO_K: (4, 2048)})) == (KEYS, "SDXL", "keys")


def test_diffusers_dit_keys_are_other_not_sdxl():
    """``transformer.transformer_blocks.1`` of a DiT is not SDXL transformer depth."""
    dit = {"transformer.transformer_blocks.1.attn.to_q.lora_A.weight": (4, 1152)}
    found = detect({}, dit, a1111_fallback=True)
    assert (found.arch, found.signal, found.hint) == ("Other", "keys", True)
    assert detect_architecture({}, dit)[0] == "Unknown"


@pytest.mark.parametrize(
    ("metadata", "coverage", "library"),
    [
        ({"ss_network_dim": "4"}, "Unknown", (WEAK, "SD1", "metadata")),
        ({"ss_v2": "False"}, "SD1", (WEAK, "SD1", "metadata")),
        ({"ss_v2": "True"}, "SD2", (WEAK, "SD2", "ss_v2")),
        ({"modelspec.architecture": "pixart-sigma/lora"}, "Unknown", (2, "Other", "modelspec")),
        ({}, "Unknown", (WEAK + 1, "Unknown", "none")),
    ],
)
def test_callers_differ_only_in_weak_rules(metadata, coverage, library):
    """A1111's weak fallback is the library's; coverage never turns a guess into a refusal."""
    assert detect_architecture(metadata, {})[0] == coverage
    assert detect_file(metadata, {}) == library
