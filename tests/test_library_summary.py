"""Key summaries for the inspector: algorithms, rank, alpha and layer counts from real-looking key sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from lora_ext.library import LoraLibrary
from lora_ext.library.summary import classify

BLOCK = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


@pytest.mark.parametrize(
    "key, expected",
    [
        (f"{BLOCK}.lora_down.weight", (BLOCK, "lora", True)),
        (f"{BLOCK}.lora_up.weight", (BLOCK, "lora", False)),
        (f"{BLOCK}.alpha", (BLOCK, None, False)),
        (f"{BLOCK}.hada_w1_b", (BLOCK, "loha", True)),
        (f"{BLOCK}.lokr_w2_b", (BLOCK, "lokr", True)),
        (f"{BLOCK}.lokr_w1", (BLOCK, "lokr", False)),
        (f"{BLOCK}.dora_scale", (BLOCK, "dora", False)),
        (f"{BLOCK}.a1.weight", (BLOCK, "glora", True)),
        (f"{BLOCK}.oft_blocks", (BLOCK, "oft", False)),
        (f"{BLOCK}.diff_b", (BLOCK, "full", False)),
        ("lora_unet_x_norm1.w_norm", ("lora_unet_x_norm1", "norm", False)),
        ("lora_unet_x.on_input", ("lora_unet_x", "ia3", False)),
        ("lora_unet_x.weight", ("lora_unet_x", None, False)),
        ("unet.down_blocks.0.attn1.to_q.lora_A.weight", ("unet.down_blocks.0.attn1.to_q", "lora", True)),
        ("unet.mid_block.attn2.to_k.lora.down.weight", ("unet.mid_block.attn2.to_k", "lora", True)),
        (
            "text_encoder.layers.0.self_attn.k_proj.lora_linear_layer.up.weight",
            ("text_encoder.layers.0.self_attn.k_proj", "lora", False),
        ),
        (
            "down_blocks.0.attentions.1.transformer_blocks.0.attn1.processor.to_out_lora.up.weight",
            ("down_blocks.0.attentions.1.transformer_blocks.0.attn1.processor.to_out", "lora", False),
        ),
        ("unet.x.to_q.lora_magnitude_vector", ("unet.x.to_q", "dora", False)),
        ("alpha", ("alpha", None, False)),
    ],
)
def test_classify_key_conventions(key, expected):
    assert classify(key) == expected


def _write(path, tensors, metadata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


def test_summary_of_mixed_lycoris_file(tmp_path):
    f32 = np.float32
    tensors = {
        f"{BLOCK}.lokr_w1": np.ones((4, 4), f32),
        f"{BLOCK}.lokr_w2_a": np.ones((80, 8), f32),
        f"{BLOCK}.lokr_w2_b": np.ones((8, 80), f32),
        f"{BLOCK}.alpha": np.array(4.0, f32),
        "lora_unet_mid_block_attentions_0_proj_in.oft_blocks": np.ones((2, 4, 8, 8), f32),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": np.ones((16, 768), f32),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": np.ones((3072, 16), f32),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.dora_scale": np.ones((3072, 1), f32),
        "lora_te_text_model_encoder_layers_1_mlp_fc1.lora_down.weight": np.ones((16, 768), f32),
    }
    _write(tmp_path / "L" / "mixed.safetensors", tensors)
    library = LoraLibrary([tmp_path / "L"], cache_path=False)
    library.refresh()
    summary = library.entries()[0].summary
    assert summary.algorithms == ("boft", "dora", "lokr", "lora")
    assert summary.rank == 16 and summary.ranks == (8, 16)
    assert summary.alpha == 4.0  # first .alpha tensor, read as 4 bytes
    assert summary.layer_count == 4
    assert summary.key_count == len(tensors)
    assert summary.dtypes == ("F32",)
    assert summary.conventions == ("kohya",)


def test_alpha_from_diffusers_adapter_metadata_and_bf16_tensor(tmp_path):
    path = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    tensors = {
        f"{path}.lora_A.weight": np.ones((8, 768), np.float32),
        f"{path}.lora_B.weight": np.ones((320, 8), np.float32),
    }
    _write(
        tmp_path / "L" / "peft.safetensors",
        tensors,
        {"lora_adapter_metadata": json.dumps({"unet.lora_alpha": 4})},
    )
    bf16_one_and_half = np.frombuffer(np.array([1.5], np.float32).tobytes()[2:], dtype=np.uint16)
    # safetensors.numpy cannot write bf16: build the file by hand with the same layout
    header = {
        "m.lora_down.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "m.alpha": {"dtype": "BF16", "shape": [], "data_offsets": [16, 18]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    data = np.ones(4, np.float32).tobytes() + bf16_one_and_half.tobytes()
    (tmp_path / "L" / "bf16.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    library = LoraLibrary([tmp_path / "L"], cache_path=False)
    report = library.refresh()
    assert report.errors == []
    by_name = {e.name: e.summary for e in library.entries()}
    assert (by_name["peft"].alpha, by_name["peft"].rank, by_name["peft"].conventions) == (
        4.0,
        8,
        ("diffusers",),
    )
    assert (by_name["bf16"].alpha, by_name["bf16"].rank, by_name["bf16"].dtypes) == (1.5, 2, ("BF16", "F32"))
