"""LoRA / LoCon / Tucker / DyLoRA deltas against the plain oracle (FORMATS.md §9.1–§9.2, §10.3, §10.10)."""

from __future__ import annotations

import pytest
import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms import AdapterShapeError, layer_delta
from tests import oracles

torch.set_num_threads(1)
MULTIPLIERS = (-1.5, 0.3, 1.0)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30))


def gen(seed: int):
    return torch.Generator().manual_seed(seed)


CASES = {
    # name: (w_shape, up_shape, down_shape, mid_shape)
    "linear": ((12, 10), (12, 4), (4, 10), None),
    "conv1x1": ((12, 10, 1, 1), (12, 4, 1, 1), (4, 10, 1, 1), None),
    "conv3x3": ((8, 6, 3, 3), (8, 3, 1, 1), (3, 6, 3, 3), None),
    "tucker": ((8, 6, 3, 3), (8, 3, 1, 1), (3, 6, 1, 1), (3, 3, 3, 3)),
}


def make(case: str, alpha: float | None, seed: int = 0, dtype=torch.float16):
    w_shape, up_s, down_s, mid_s = CASES[case]
    g = gen(seed)
    tensors = {
        "up": torch.randn(up_s, generator=g).to(dtype),
        "down": torch.randn(down_s, generator=g).to(dtype),
    }
    if mid_s:
        tensors["mid"] = torch.randn(mid_s, generator=g).to(dtype)
    w0 = torch.randn(w_shape, generator=g)
    return LayerAdapter("lora", tensors, alpha=alpha), w0


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("m", MULTIPLIERS)
@pytest.mark.parametrize("alpha", [None, 2.0, 0.0])
def test_lora_matches_oracle(case, m, alpha):
    adapter, w0 = make(case, alpha)
    t = adapter.tensors
    want = oracles.lora(t["up"], t["down"], alpha, m, w0.shape, mid=t.get("mid"))
    got = layer_delta(adapter, w0, m)
    assert got.weight.dtype == torch.float32 and got.weight.shape == w0.shape
    assert got.bias is None
    assert rel_err(got.weight, want) <= 1e-5


@pytest.mark.parametrize("case", list(CASES))
def test_zero_multiplier_gives_exact_zero(case):
    adapter, w0 = make(case, 3.0)
    assert torch.count_nonzero(layer_delta(adapter, w0, 0.0).weight) == 0


@pytest.mark.parametrize("case", ["linear", "tucker"])
def test_dyn_keeps_first_ranks_and_full_rank_scale(case):
    adapter, w0 = make(case, alpha=2.0)
    t = adapter.tensors
    want = oracles.lora(t["up"], t["down"], 2.0, 0.7, w0.shape, mid=t.get("mid"), dyn=2)
    got = layer_delta(adapter, w0, 0.7, dyn=2)
    assert rel_err(got.weight, want) <= 1e-5
    assert (
        rel_err(
            layer_delta(adapter, w0, 0.7, dyn=2).weight,
            oracles.lora(t["up"], t["down"], 2.0, 0.7, w0.shape, mid=t.get("mid")),
        )
        > 1e-3
    )


def test_scale_part_overrides_alpha_over_rank():
    adapter, w0 = make("linear", alpha=2.0)
    adapter.tensors["scale"] = torch.tensor(0.25)
    t = adapter.tensors
    want = oracles.lora(t["up"], t["down"], None, 1.0, w0.shape) * 0.25
    assert rel_err(layer_delta(adapter, w0, 1.0).weight, want) <= 1e-5


def test_bias_part_joins_raw_delta_before_scaling():
    adapter, w0 = make("linear", alpha=2.0)
    extra = torch.randn(w0.shape, generator=gen(5))
    adapter.tensors["bias"] = extra
    t = adapter.tensors
    s = 2.0 / 4
    want = oracles.lora(t["up"], t["down"], 2.0, -1.5, w0.shape) + (-1.5) * s * oracles.f64(extra)
    assert rel_err(layer_delta(adapter, w0, -1.5).weight, want) <= 1e-5


@pytest.mark.parametrize("case", list(CASES))
def test_linear_in_multiplier_and_sign_symmetric(case):
    adapter, w0 = make(case, alpha=1.0)
    one = layer_delta(adapter, w0, 0.6).weight
    assert torch.equal(layer_delta(adapter, w0, 1.2).weight, 2 * one)
    assert torch.equal(layer_delta(adapter, w0, -0.6).weight, -one)


def test_conv_factors_on_linear_target_and_reverse():
    """SD1-style 1×1 conv proj LoRA on an SD2 linear proj, and linear factors on a 1×1 conv weight."""
    conv, _ = make("conv1x1", alpha=None)
    lin_w0 = torch.randn(12, 10)
    got = layer_delta(conv, lin_w0, 1.0).weight
    t = conv.tensors
    assert got.shape == (12, 10)
    assert rel_err(got, oracles.lora(t["up"], t["down"], None, 1.0, (12, 10))) <= 1e-5
    lin, _ = make("linear", alpha=None)
    conv_w0 = torch.randn(12, 10, 1, 1)
    assert layer_delta(lin, conv_w0, 1.0).weight.shape == (12, 10, 1, 1)


def test_inpainting_conv_in_zero_pads_extra_input_channels():
    adapter = LayerAdapter(
        "lora", {"up": torch.randn(8, 2, 1, 1), "down": torch.randn(2, 4, 3, 3)}, alpha=None
    )
    w0 = torch.randn(8, 9, 3, 3)
    got = layer_delta(adapter, w0, 1.0).weight
    t = adapter.tensors
    assert got.shape == w0.shape
    assert torch.count_nonzero(got[:, 4:]) == 0
    assert rel_err(got[:, :4], oracles.lora(t["up"], t["down"], None, 1.0, (8, 4, 3, 3))) <= 1e-5


def test_shape_mismatch_raises_named_error():
    adapter, _ = make("linear", alpha=None)
    with pytest.raises(AdapterShapeError, match=r"\[12, 10\].*\[7, 10\]"):
        layer_delta(adapter, torch.randn(7, 10), 1.0)
