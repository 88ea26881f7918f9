"""DoRA on top of any family (FORMATS.md §9.12, §10.8): axis rules, norm of W + s·ΔW_raw, linear blend in m.

Plain-formula checks use tests/oracles.py; the PEFT check merges a real peft DoRA layer (output axis, magnitude
``[out]`` for Linear and ``[1, out, 1, 1]`` for Conv2d) and compares with W₀ + ΔW at m = 1 (PEFT folds m into the
scaling instead, so only m = 1 is common ground).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms import AdapterShapeError, layer_delta
from tests import oracles
from tests.test_algo_cases import CASES

torch.set_num_threads(1)
MULTIPLIERS = (-1.5, 0.3, 1.0)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30))


def lora_dora(out: int, cin: int, g: torch.Tensor, seed: int = 0, axis=None, alpha=4.0):
    gen = torch.Generator().manual_seed(seed)
    up, down = torch.randn(out, 2, generator=gen), torch.randn(2, cin, generator=gen)
    w0 = torch.randn(out, cin, generator=gen)
    adapter = LayerAdapter("lora", {"up": up, "down": down, "dora_scale": g}, alpha=alpha, dora_axis=axis)
    return adapter, w0, oracles.lora(up, down, alpha, 1.0, w0.shape)


@pytest.mark.parametrize("m", MULTIPLIERS)
@pytest.mark.parametrize("axis", ["out", None])
def test_peft_style_magnitude_uses_output_axis(m, axis):
    g = torch.rand(8) + 0.5
    adapter, w0, scaled = lora_dora(8, 6, g, axis=axis)
    got = layer_delta(adapter, w0, m).weight
    assert rel_err(got, oracles.dora(w0, scaled, g, "out", m)) <= 1e-5


@pytest.mark.parametrize(
    "out, cin, g_shape, axis",
    [
        (8, 6, (1, 6), "in"),  # LyCORIS input-axis magnitude
        (8, 6, (6,), "in"),  # 1-D of length in only
        (8, 6, (8, 1), "out"),  # LyCORIS ≥ 3.2 output-axis magnitude
        (6, 6, (6,), "out"),  # 1-D with out = in
        (6, 6, (1, 6), "in"),  # row vector on a square weight
        (6, 6, (6, 1), "out"),
    ],
)
@pytest.mark.parametrize("m", MULTIPLIERS)
def test_axis_from_magnitude_shape(out, cin, g_shape, axis, m):
    g = torch.rand(g_shape) + 0.5
    adapter, w0, scaled = lora_dora(out, cin, g)
    assert rel_err(layer_delta(adapter, w0, m).weight, oracles.dora(w0, scaled, g, axis, m)) <= 1e-5


def test_declared_axis_wins_over_shape():
    g = torch.rand(6) + 0.5
    adapter, w0, scaled = lora_dora(6, 6, g, axis="in")
    assert rel_err(layer_delta(adapter, w0, 1.0).weight, oracles.dora(w0, scaled, g, "in", 1.0)) <= 1e-5


@pytest.mark.parametrize("g_shape", [(1, 8, 1, 1), (8, 1, 1, 1), (1, 6, 1, 1)])
def test_conv_magnitudes(g_shape):
    """PEFT's [1, out, 1, 1] conv magnitude (out ≠ in) is output axis even undeclared; [1, in, 1, 1] is input."""
    gen = torch.Generator().manual_seed(1)
    up, down = torch.randn(8, 2, 1, 1, generator=gen), torch.randn(2, 6, 3, 3, generator=gen)
    w0 = torch.randn(8, 6, 3, 3, generator=gen)
    g = torch.rand(g_shape, generator=gen) + 0.5
    adapter = LayerAdapter("lora", {"up": up, "down": down, "dora_scale": g}, alpha=1.0)
    axis = "in" if g_shape == (1, 6, 1, 1) else "out"
    want = oracles.dora(w0, oracles.lora(up, down, 1.0, 1.0, w0.shape), g, axis, -0.7)
    assert rel_err(layer_delta(adapter, w0, -0.7).weight, want) <= 1e-5


@pytest.mark.parametrize(
    "case", ["loha-conv3x3", "lokr-tucker", "glora-new-linear", "oft-linear", "boft-conv1x1"]
)
@pytest.mark.parametrize("m", MULTIPLIERS)
def test_dora_on_other_families(case, m):
    adapter, w0, want = CASES[case](seed=4)
    g = torch.rand(w0.shape[0], *[1] * (w0.dim() - 1), generator=torch.Generator().manual_seed(2)) + 0.5
    dora = LayerAdapter(adapter.algo, adapter.tensors | {"dora_scale": g}, alpha=adapter.alpha)
    assert rel_err(layer_delta(dora, w0, m).weight, oracles.dora(w0, want(1.0), g, "out", m)) <= 1e-5


def test_zero_multiplier_exact_and_linear_in_m():
    adapter, w0, _ = lora_dora(8, 6, torch.rand(8, 1) + 0.5)
    assert torch.count_nonzero(layer_delta(adapter, w0, 0.0).weight) == 0
    one = layer_delta(adapter, w0, 0.35).weight
    assert torch.equal(layer_delta(adapter, w0, 0.7).weight, 2 * one)
    assert torch.equal(layer_delta(adapter, w0, -0.35).weight, -one)


def test_magnitude_fitting_no_axis_is_a_shape_error():
    adapter, w0, _ = lora_dora(8, 6, torch.ones(5))
    with pytest.raises(AdapterShapeError, match=r"\[5\].*\[8, 6\]"):
        layer_delta(adapter, w0, 1.0)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 8)
        self.conv = nn.Conv2d(6, 8, 3, padding=1)


def test_matches_peft_dora_merge_at_one():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = _Tiny()
    pristine = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = LoraConfig(
        r=2, lora_alpha=6, target_modules=["lin", "conv"], use_dora=True, init_lora_weights=False
    )
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if "magnitude" not in name else 1.0) + (
                    2.0 if "magnitude" in name else 0.0
                ))  # fmt: skip
    state = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}
    merged = peft_model.merge_and_unload()
    for layer in ("lin", "conv"):
        pick = {n.split(".lora_")[1].split(".")[0]: t for n, t in state.items() if f".{layer}." in n}
        adapter = LayerAdapter(
            "lora",
            {"up": pick["B"], "down": pick["A"], "dora_scale": pick["magnitude_vector"]},
            alpha=6.0,
            dora_axis="out",
        )
        w0 = pristine[f"{layer}.weight"]
        got = w0 + layer_delta(adapter, w0, 1.0).weight
        want = getattr(merged, layer).weight.detach()
        assert float((got - want).abs().max() / (want - w0).abs().max()) <= 1e-5
