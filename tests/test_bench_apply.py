"""``python -m bench apply`` runs end to end (issue 3's benchmark), on scaled-down SD1.5 and SDXL configurations so it
takes seconds: every LoRA layer resolves, diffusers wraps every target, and the report names every target it judges.
Timings are printed, never asserted."""

from __future__ import annotations

import pytest

import bench.apply as bench_apply
import bench.sd15_shapes as sd15
import bench.sdxl_shapes as sdxl

TINY_TE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TINY_UNET = dict(block_out_channels=(32, 64, 64, 64), attention_head_dim=2, cross_attention_dim=32)
TINY_XL_UNET = dict(
    block_out_channels=(32, 64, 64),
    transformer_layers_per_block=(1, 2, 2),
    attention_head_dim=(2, 4, 4),
    cross_attention_dim=96,  # 32 (te1) + 64 (te2)
    projection_class_embeddings_input_dim=64 + 6 * 256,
)
TINY_TE2 = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, projection_dim=64
)


@pytest.fixture
def tiny_shapes(monkeypatch):
    for table, values in ((sd15.SD15_TE, TINY_TE), (sd15.SD15_UNET, TINY_UNET), (sdxl.SDXL_UNET, TINY_XL_UNET),
                          (sdxl.SDXL_TE2, TINY_TE2)):  # fmt: skip
        for key, value in values.items():
            monkeypatch.setitem(table, key, value)


@pytest.mark.parametrize(
    "model, expected",
    [
        (
            "sd15",
            {"UNET": 16 * 12, "TE": 2 * 6},
        ),  # 16 transformers × (8 attention + 2 ff + proj_in/out); 6 per layer
        # blocks: down 2×2 + 2×2, mid 2, up 3×2 + 3×2 = 22 (× 10) + proj_in/out of 11 transformers
        ("sdxl", {"UNET": 22 * 10 + 11 * 2, "TE1": 2 * 6, "TE2": 3 * 6}),
    ],
)
def test_bench_apply_runs_and_reports_every_target(tiny_shapes, capsys, model, expected):
    argv = ["--model", model, "--repeats", "1", "--diffusers-repeats", "1", "--dtypes", "fp32,fp16"]
    assert bench_apply.main(argv) == 0
    out = capsys.readouterr().out
    counts = " + ".join(f"{n} {part}" for part, n in expected.items())
    assert f"{sum(expected.values())} targets ({counts})" in out
    for dtype in ("fp32", "fp16"):
        assert f"== {dtype}: floors M = " in out
    for line in ("swap apply", "swap restore", "swap switch", "swap unchanged", "copy apply", "copy restore"):
        assert out.count(f"  {line} ") == 2, line
    assert (
        out.count("diffusers load_lora_weights + fuse_lora") == 1
    )  # fp32 only; it asserts every layer was wrapped
