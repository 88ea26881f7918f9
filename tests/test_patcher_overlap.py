"""The patcher's helper thread (``lora_ext/patching/staging.py``): preparing slots one ahead on another thread changes
no bit, leaves no thread behind, and a failure on that thread still ends in the pristine model (issue 3)."""

from __future__ import annotations

import random
import threading

import pytest
import torch
from test_patcher_models import D_MHA, active, plain_lora, random_lora, snapshot, tiny_net

import lora_ext.patcher as patcher_module
from lora_ext.patcher import Patcher
from lora_ext.patching.staging import Stager

STRATEGIES = ("swap", "copy")


def _net_and_loras(dtype: torch.dtype, seed: int):
    """A tiny net and three LoRAs over it (random algorithms and plain), built from fixed seeds."""
    net = tiny_net(dtype)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    return net, [random_lora(net, "a", rng), plain_lora(net, "b"), random_lora(net, "c", rng)]


def _stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lora_ext-stage")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_overlapped_and_serial_apply_switch_and_restore_give_identical_bits(strategy, dtype):
    runs = []
    for overlap in (True, False):
        net, (a, b, c) = _net_and_loras(dtype, seed=5)
        pristine = snapshot(net)
        patcher = Patcher(strategy, overlap=overlap)
        states = []
        for request in (active((a, 1.0)), active((b, 0.7), (c, -0.5)), active((a, 0.3), (b, 0.7))):
            assert patcher.apply(request).ok
            states.append(snapshot(net))
        patcher.restore()
        assert snapshot(net) == pristine and patcher.held_bytes() == 0
        runs.append(states)
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1] != runs[0][2]  # every step really changed the weights


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_preparation_runs_on_the_helper_thread_only_when_overlapping_and_no_thread_outlives_apply(
    strategy, monkeypatch
):
    seen: list[str] = []
    real = patcher_module._fill

    def recording(prepared):
        seen.append(threading.current_thread().name)
        return real(prepared)

    monkeypatch.setattr(patcher_module, "_fill", recording)
    for overlap, expect_helper in ((True, True), (False, False)):
        seen.clear()
        net, (a, b, _) = _net_and_loras(torch.float32, seed=2)
        patcher = Patcher(strategy, overlap=overlap)
        assert patcher.apply(active((a, 1.0))).ok
        assert patcher.apply(active((b, -0.4))).ok  # a switch: reused tensors are prepared the same way
        assert seen
        on_helper = {name.startswith("lora_ext-stage") for name in seen}
        assert on_helper == {expect_helper}
        assert not _stage_threads()
        patcher.restore()


@pytest.mark.parametrize("switch", [False, True])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_failure_on_the_helper_thread_restores_the_pristine_model_and_names_the_layer(
    strategy, switch, monkeypatch
):
    net, (a, b, _) = _net_and_loras(torch.float32, seed=9)
    pristine = snapshot(net)
    patcher = Patcher(strategy, overlap=True)
    if switch:
        assert patcher.apply(active((a, 1.0), (b, 0.5))).ok
    real = patcher_module._fill
    calls: list[str] = []

    def flaky(prepared):
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            raise MemoryError("simulated: no memory for the new tensor")
        return real(prepared)

    monkeypatch.setattr(patcher_module, "_fill", flaky)
    result = patcher.apply(active((a, -0.6), (b, 1.5)))
    assert result.failed and not patcher.is_patched
    assert calls[2].startswith("lora_ext-stage")
    message = result.problems[-1].message
    assert "at layer " in message and "no memory" in message
    assert snapshot(net) == pristine and patcher.held_bytes() == 0
    assert not _stage_threads()
    monkeypatch.setattr(patcher_module, "_fill", real)
    assert patcher.apply(active((a, 1.0))).ok  # usable afterwards


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_helper_thread_prepares_without_autograd_so_patched_parameters_stay_leaves(strategy):
    net, (a, _, _) = _net_and_loras(torch.float32, seed=4)
    assert all(
        p.requires_grad for p in net.parameters()
    )  # the case where a grad-mode clone would record history
    patcher = Patcher(strategy, overlap=True)
    assert patcher.apply(active((a, 1.0))).ok
    for name, p in net.named_parameters():
        assert p.grad_fn is None and p.requires_grad and p.is_leaf, name
    out = net(torch.randn(2, 12), torch.randn(1, 4, 5, 5), torch.randn(3, 1, D_MHA))
    sum(o.sum() for o in out).backward()
    patcher.restore()


def test_stager_takes_results_in_order_and_reraises_the_helpers_exception():
    def step(i: int) -> tuple[int, bool]:
        if i == 2:
            raise ValueError("step 2 failed")
        return i, torch.is_grad_enabled()

    with Stager(True, torch.no_grad) as stager:
        takes = [stager.submit(True, step, i) for i in range(4)]
        assert takes[0]() == (0, False) and takes[1]() == (1, False)
        with pytest.raises(ValueError, match="step 2 failed"):
            takes[2]()
    assert not _stage_threads()
    with Stager(True, torch.no_grad) as stager:
        inline = stager.submit(
            False, step, 1
        )  # not background: runs on the caller's thread, in the caller's modes
        assert inline() == (1, True)
