"""Review round: cases the mutation check (listed in the round-2 review report) showed the algorithm tests let through.

Each test pins one rule of FORMATS.md §9–§10 that a plausible wrong implementation would break. Expected values come
from tests/oracles.py (float64, written independently of ``lora_ext.algorithms``), or, for the ``scale`` part, from the
relation "ΔW with scale c = c · ΔW with α missing" across every family whose α missing case is oracle-tested.
"""

from __future__ import annotations

import pytest
import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms import layer_delta
from tests import oracles
from tests.test_algo_cases import CASES

torch.set_num_threads(1)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30))


def test_lokr_rank_comes_from_w2_b_when_both_factors_are_factored():
    """§9.4: r = lokr_w2_b.shape[0] when W2 is factored, even if W1 is factored with another rank (last one wins)."""
    g = torch.Generator().manual_seed(5)
    t = {
        "lokr_w1_a": torch.randn(2, 1, generator=g),
        "lokr_w1_b": torch.randn(1, 2, generator=g),  # rank 1
        "lokr_w2_a": torch.randn(4, 3, generator=g),
        "lokr_w2_b": torch.randn(3, 3, generator=g),  # rank 3
    }
    w0 = torch.randn(8, 6, generator=g)
    got = layer_delta(LayerAdapter("lokr", t, alpha=1.5), w0, 0.8).weight
    want = oracles.lokr(
        1.5, 0.8, w0.shape, w1a=t["lokr_w1_a"], w1b=t["lokr_w1_b"], w2a=t["lokr_w2_a"], w2b=t["lokr_w2_b"]
    )
    assert rel_err(got, want) <= 1e-5
    # s = 1.5 / 3, not 1.5 / 1
    unscaled = layer_delta(LayerAdapter("lokr", t, alpha=None), w0, 0.8).weight
    assert torch.allclose(got, unscaled * 0.5, rtol=1e-5, atol=1e-6)


def test_delta_on_a_device_type_without_autocast():
    """layer_delta disables autocast on the weight's device; a device type that has no autocast (here ``meta``) must
    not make it raise (the patcher tolerates such devices too)."""
    adapter = LayerAdapter("lora", {"up": torch.randn(8, 2), "down": torch.randn(2, 6)}, alpha=1.0)
    delta = layer_delta(adapter, torch.empty(8, 6, device="meta"), 1.0)
    assert delta.weight.device.type == "meta" and delta.weight.shape == (8, 6)


@pytest.mark.parametrize("case", sorted(c for c in CASES if not c.startswith(("oft", "boft"))))
def test_scale_part_replaces_the_family_scale_outside_the_oft_family(case):
    """A1111 applies a module's ``scale`` tensor in ``finalize_updown`` for every family except OFT (FORMATS.md §10):
    ΔW = m·scale·ΔW_raw whatever α says; bias deltas (``diff_b``, ``b_norm``) stay m·Δb_raw."""
    adapter, w0, _ = CASES[case](seed=2)
    unscaled = layer_delta(LayerAdapter(adapter.algo, adapter.tensors, alpha=None), w0, -0.7)
    scaled = layer_delta(
        LayerAdapter(adapter.algo, {**adapter.tensors, "scale": torch.tensor(0.3)}, adapter.alpha), w0, -0.7
    )
    assert rel_err(scaled.weight, 0.3 * unscaled.weight.double()) <= 1e-6
    if unscaled.bias is not None:
        assert torch.equal(scaled.bias, unscaled.bias)
