"""Properties every delta has (FORMATS.md §10.1, §10.13): linear in m, odd in m, float32 without autocast."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms import layer_delta
from tests.test_algo_cases import CASES

torch.set_num_threads(1)

# |m| ≥ 1e-6: below that the float32 deltas turn subnormal and doubling them is no longer exact
MULTIPLIER = st.floats(min_value=-8.0, max_value=8.0, allow_nan=False).filter(
    lambda m: m == 0 or abs(m) >= 1e-6
)
# built once: hypothesis re-runs the body many times and the cases are pure
BUILT = {name: build(seed=11) for name, build in CASES.items()}
BUILT["lora-dora"] = (
    LayerAdapter(
        "lora", {"up": torch.randn(8, 2), "down": torch.randn(2, 6), "dora_scale": torch.rand(8, 1) + 0.5}
    ),
    torch.randn(8, 6),
    None,
)


@pytest.mark.parametrize("case", sorted(BUILT))
@settings(max_examples=15, deadline=None)
@given(m=MULTIPLIER)
def test_doubling_m_doubles_delta_and_negating_m_negates_it(case, m):
    adapter, w0, _ = BUILT[case]
    one = layer_delta(adapter, w0, m).weight
    assert torch.equal(layer_delta(adapter, w0, 2 * m).weight, 2 * one)
    assert torch.equal(layer_delta(adapter, w0, -m).weight, -one)


@pytest.mark.parametrize("case", ["loha-conv3x3", "glora-new-linear", "boft-linear", "ia3-in-conv3x3"])
def test_result_is_float32_and_ignores_enclosing_autocast(case):
    adapter, w0, _ = BUILT[case]
    plain = layer_delta(adapter, w0, 0.8).weight
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inside = layer_delta(adapter, w0, 0.8).weight
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)


def test_adapter_and_weight_are_left_untouched():
    adapter, w0, _ = BUILT["oft-constrained-rescaled-conv3x3"]
    before = {k: v.clone() for k, v in adapter.tensors.items()}
    w_before = w0.clone()
    layer_delta(adapter, w0, -1.0)
    assert torch.equal(w0, w_before)
    assert all(torch.equal(adapter.tensors[k], v) for k, v in before.items())


def test_grad_tracking_tensors_give_a_detached_delta():
    up = torch.randn(8, 2, requires_grad=True)
    adapter = LayerAdapter("lora", {"up": up, "down": torch.randn(2, 6)})
    assert not layer_delta(adapter, torch.randn(8, 6), 1.0).weight.requires_grad
