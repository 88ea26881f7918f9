"""Every algorithm's ΔW against the plain oracle of FORMATS.md §9–§10 (tests/oracles.py), rel. error ≤ 1e-5."""

from __future__ import annotations

import pytest
import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms import ALGORITHM_NAMES, AdapterShapeError, delta_is_w_dependent, layer_delta
from tests import oracles
from tests.test_algo_cases import CASES

torch.set_num_threads(1)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("m", [-1.5, 0.3, 1.0])
@pytest.mark.parametrize("case", sorted(CASES))
def test_delta_matches_oracle(case, m):
    adapter, w0, want = CASES[case](seed=len(case))
    got = layer_delta(adapter, w0, m)
    assert got.weight.dtype == torch.float32 and got.weight.shape == w0.shape
    assert rel_err(got.weight, want(m)) <= 1e-5


@pytest.mark.parametrize("case", sorted(CASES))
def test_zero_multiplier_is_exactly_zero(case):
    adapter, w0, _ = CASES[case](seed=3)
    assert torch.count_nonzero(layer_delta(adapter, w0, 0.0).weight) == 0


def test_every_algorithm_has_a_case():
    assert set(ALGORITHM_NAMES) == {
        "lora",
        "loha",
        "lokr",
        "full",
        "norm",
        "ia3",
        "glora",
        "oft",
        "boft",
        "oft_diag",
    }
    covered = {CASES[c](seed=0)[0].algo for c in CASES}
    assert covered == set(ALGORITHM_NAMES)


def test_lokr_both_full_ignores_alpha():
    adapter, w0, _ = CASES["lokr-both-full-linear"](seed=1)
    unscaled = layer_delta(LayerAdapter("lokr", adapter.tensors, alpha=None), w0, 1.0).weight
    assert torch.equal(layer_delta(adapter, w0, 1.0).weight, unscaled)


def test_full_bias_delta_scaled_by_multiplier_only():
    g = torch.Generator().manual_seed(0)
    diff, diff_b = torch.randn(8, 6, generator=g), torch.randn(8, generator=g)
    adapter = LayerAdapter("full", {"diff": diff, "diff_b": diff_b, "scale": torch.tensor(2.0)})
    got = layer_delta(adapter, torch.randn(8, 6), -0.5, b0=torch.zeros(8))
    assert rel_err(got.weight, oracles.full(diff, -0.5) * 2.0) <= 1e-6
    assert rel_err(got.bias, oracles.full(diff_b, -0.5)) <= 1e-6
    only_bias = layer_delta(LayerAdapter("full", {"diff_b": diff_b}), torch.randn(8, 6), 1.0)
    assert only_bias.weight is None and torch.equal(only_bias.bias, diff_b)


@pytest.mark.parametrize("algo", ["loha", "lokr", "lora-tucker"])
def test_four_channel_conv_in_deltas_zero_padded_for_inpainting(algo):
    """A LoRA trained on a 4-channel conv_in applied to a 9-channel inpainting conv_in (FORMATS §10.10)."""
    g = torch.Generator().manual_seed(0)
    w4, w9 = torch.randn(8, 4, 3, 3, generator=g), torch.randn(8, 9, 3, 3, generator=g)
    if algo == "loha":
        t = {
            k: torch.randn(s, generator=g)
            for k, s in {
                "hada_w1_a": (8, 2),
                "hada_w1_b": (2, 36),
                "hada_w2_a": (8, 2),
                "hada_w2_b": (2, 36),
            }.items()
        }
    elif algo == "lokr":
        t = {"lokr_w1": torch.randn(2, 2, generator=g), "lokr_w2": torch.randn(4, 2, 3, 3, generator=g)}
    else:
        t = {
            "up": torch.randn(8, 2, 1, 1, generator=g),
            "mid": torch.randn(2, 2, 3, 3, generator=g),
            "down": torch.randn(2, 4, 1, 1, generator=g),
        }
    adapter = LayerAdapter(algo.split("-")[0], t, alpha=1.0)
    padded = layer_delta(adapter, w9, 0.5).weight
    assert padded.shape == w9.shape and torch.count_nonzero(padded[:, 4:]) == 0
    assert torch.equal(padded[:, :4], layer_delta(adapter, w4, 0.5).weight)  # fmt: skip


def test_deltas_are_fresh_tensors():
    """The patcher accumulates into the returned tensors; they must never alias adapter parts or W₀."""
    diff = torch.randn(8, 6)
    w0 = torch.randn(8, 6)
    for adapter in (
        LayerAdapter("full", {"diff": diff, "diff_b": torch.randn(8)}),
        LayerAdapter("norm", {"w_norm": diff[0]}),
    ):
        got = layer_delta(adapter, w0 if adapter.algo == "full" else w0[0], 1.0)
        for t in (got.weight, got.bias):
            if t is not None:
                assert all(t.data_ptr() != p.data_ptr() for p in (*adapter.tensors.values(), w0))


def test_full_conv_in_delta_zero_padded_for_inpainting():
    diff = torch.randn(8, 4, 3, 3)
    got = layer_delta(LayerAdapter("full", {"diff": diff}), torch.randn(8, 9, 3, 3), 0.5).weight
    assert torch.equal(got[:, :4], 0.5 * diff) and torch.count_nonzero(got[:, 4:]) == 0


@pytest.mark.parametrize("m", [-1.5, 0.3, 1.0])
def test_norm_deltas(m):
    g = torch.Generator().manual_seed(0)
    w_norm, b_norm = torch.randn(8, generator=g), torch.randn(8, generator=g)
    got = layer_delta(
        LayerAdapter("norm", {"w_norm": w_norm, "b_norm": b_norm}), torch.ones(8), m, b0=torch.zeros(8)
    )
    assert rel_err(got.weight, oracles.full(w_norm, m)) <= 1e-6
    assert rel_err(got.bias, oracles.full(b_norm, m)) <= 1e-6


def test_glora_layout_ambiguity_resolves_to_old():
    """r equal to the column count of flat(W): both layouts fit; FORMATS §9.8 says old wins."""
    g = torch.Generator().manual_seed(0)
    t = {k: torch.randn(6, 6, generator=g) for k in ("a1", "a2", "b1")} | {
        "b2": torch.randn(8, 6, generator=g)
    }
    w0 = torch.randn(8, 6, generator=g)
    got = layer_delta(LayerAdapter("glora", t, alpha=3.0), w0, 1.0).weight
    assert rel_err(got, oracles.glora_old(w0, t["a1"], t["a2"], t["b1"], t["b2"], 3.0, 1.0)) <= 1e-5


def test_oft_labelled_blocks_of_rank_four_run_as_boft():
    adapter, w0, want = CASES["boft-linear"](seed=2)
    relabelled = LayerAdapter("oft", adapter.tensors, alpha=adapter.alpha)
    assert rel_err(layer_delta(relabelled, w0, 1.0).weight, want(1.0)) <= 1e-5


def test_oft_constraint_changes_the_rotation():
    adapter, w0, _ = CASES["oft-linear"](seed=2)
    clamped = LayerAdapter("oft", adapter.tensors, alpha=1e-3)
    assert (
        rel_err(
            layer_delta(clamped, w0, 1.0).weight, oracles.diag_oft(w0, adapter.tensors["oft_blocks"], None, 1)
        )
        > 0.1
    )


def test_oft_ignores_scale_part_but_lora_family_uses_it():
    adapter, w0, want = CASES["oft-linear"](seed=2)
    with_scale = LayerAdapter("oft", adapter.tensors | {"scale": torch.tensor(3.0)})
    assert rel_err(layer_delta(with_scale, w0, 1.0).weight, want(1.0)) <= 1e-5
    adapter, w0, want = CASES["loha-linear"](seed=2)
    with_scale = LayerAdapter("loha", adapter.tensors | {"scale": torch.tensor(3.0)}, alpha=adapter.alpha)
    assert rel_err(layer_delta(with_scale, w0, 1.0).weight, want(1.0) * 3.0 / adapter.alpha * 2) <= 1e-5


def test_w_dependence_flag():
    assert delta_is_w_dependent(CASES["ia3-in-linear"](seed=0)[0])
    assert delta_is_w_dependent(CASES["boft-linear"](seed=0)[0])
    assert not delta_is_w_dependent(CASES["loha-linear"](seed=0)[0])
    dora = LayerAdapter(
        "lora", {"up": torch.ones(8, 1), "down": torch.ones(1, 6), "dora_scale": torch.ones(8, 1)}
    )
    assert delta_is_w_dependent(dora)


@pytest.mark.parametrize(
    "adapter, w_shape",
    [
        (LayerAdapter("oft", {"oft_blocks": torch.zeros(3, 4, 4)}), (8, 6)),
        (LayerAdapter("boft", {"oft_blocks": torch.zeros(3, 3, 2, 2)}), (6, 6)),
        (LayerAdapter("ia3", {"weight": torch.ones(5)}), (8, 6)),
        (LayerAdapter("lora", {"up": torch.ones(8, 2), "down": torch.ones(3, 6)}), (8, 6)),
        (LayerAdapter("loha", {"hada_w1_a": torch.ones(8, 2), "hada_w1_b": torch.ones(2, 5),
                               "hada_w2_a": torch.ones(8, 2), "hada_w2_b": torch.ones(2, 5)}), (8, 6)),
        (LayerAdapter("glora", {"a1": torch.ones(5, 2), "a2": torch.ones(2, 5), "b1": torch.ones(8, 2),
                                "b2": torch.ones(2, 5)}), (8, 6)),
        (LayerAdapter("lokr", {"lokr_w1": torch.ones(2, 2), "lokr_w2": torch.ones(4, 4)}), (8, 6)),
    ],
)  # fmt: skip
def test_mismatched_adapters_raise_shape_error_naming_the_weight(adapter, w_shape):
    with pytest.raises(AdapterShapeError, match=r"\[" + ", ".join(map(str, w_shape)) + r"\]"):
        layer_delta(adapter, torch.randn(*w_shape), 1.0)


@pytest.mark.parametrize(
    "adapter, missing",
    [
        (LayerAdapter("lokr", {"lokr_w1": torch.ones(2, 2)}), "lokr_w2"),
        (LayerAdapter("lora", {"up": torch.ones(8, 2)}), "down"),
        (LayerAdapter("oft", {"rescale": torch.ones(8, 1)}), "oft_blocks"),
    ],
)
def test_missing_parts_raise_shape_error_naming_the_part(adapter, missing):
    with pytest.raises(AdapterShapeError, match=missing):
        layer_delta(adapter, torch.randn(8, 6), 1.0)


def test_unknown_algorithm_is_a_value_error():
    with pytest.raises(ValueError, match="unknown LoRA algorithm 'xyz'"):
        layer_delta(LayerAdapter("xyz", {}), torch.zeros(2, 2), 1.0)
