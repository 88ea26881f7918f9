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


def _is_helper(name: str) -> bool:
    return name.startswith("lora_ext-stage")


def _count_fills(monkeypatch, strategy: str, requests) -> list[int]:
    """How many copies of W₀ (``_fill`` calls) each request makes in a serial apply."""
    counts: list[int] = []
    real = patcher_module._fill

    def counting(prepared):
        counts[-1] += 1
        return real(prepared)

    monkeypatch.setattr(patcher_module, "_fill", counting)
    net, loras = _net_and_loras(torch.float32, seed=2)
    patcher = Patcher(strategy, overlap=False)
    for request in requests(*loras):
        counts.append(0)
        assert patcher.apply(request).ok
    monkeypatch.setattr(patcher_module, "_fill", real)
    return counts


def _gated(monkeypatch, step: str, total: int, error: Exception | None = None) -> list[str]:
    """Make the helper thread's first call of ``patcher_module.<step>`` (``_fill``: a copy of W₀, ``_stream``: a shared
    streamed slot) wait until the caller has run all ``total - 1`` others itself, and then raise ``error`` if given;
    the caller's calls first wait until the helper has started one. Returns the thread name of every call, in order."""
    threads: list[str] = []
    helper_started, caller_done = threading.Event(), threading.Event()
    real = getattr(patcher_module, step)

    def gated(*args):
        name = threading.current_thread().name
        threads.append(name)
        if _is_helper(name):
            helper_started.set()
            assert caller_done.wait(10), (
                f"the caller did not take over the {step} steps the helper had not started"
            )
            if error is not None:
                raise error
        else:
            assert helper_started.wait(10)
            if sum(not _is_helper(t) for t in threads) == total - 1:
                caller_done.set()
        return real(*args)

    monkeypatch.setattr(patcher_module, step, gated)
    return threads


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
    for overlap in (True, False):
        seen.clear()
        net, (a, b, _) = _net_and_loras(torch.float32, seed=2)
        patcher = Patcher(strategy, overlap=overlap)
        assert patcher.apply(active((a, 1.0))).ok
        assert patcher.apply(active((b, -0.4))).ok  # a switch: reused tensors are prepared the same way
        assert seen
        caller = threading.current_thread().name
        # Overlapping, the helper copies ahead and the caller takes over copies the helper has not reached yet.
        assert {name for name in seen if not _is_helper(name)} <= {caller}
        assert any(map(_is_helper, seen)) is overlap or (overlap and set(seen) == {caller})
        assert not _stage_threads()
        patcher.restore()


@pytest.mark.parametrize("switch", [False, True])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_caller_takes_over_the_copies_the_helper_has_not_started_with_the_bits_of_a_serial_apply(
    strategy, switch, monkeypatch
):
    """While the helper thread is busy with one copy of W₀, the caller runs all the others itself, from the back of
    the queue; the weights are bit-identical to a serial apply and the helper did exactly one copy."""
    requests = lambda a, b, c: [active((a, 1.0), (c, 0.5)), active((b, -0.4), (c, 0.5))]  # noqa: E731
    counts = _count_fills(monkeypatch, strategy, requests)
    assert counts[0] > 2 and counts[1] > 2
    states = []
    for overlap in (False, True):
        net, loras = _net_and_loras(torch.float32, seed=2)
        patcher = Patcher(strategy, overlap=overlap)
        for i, request in enumerate(requests(*loras)):
            gated = overlap and i == int(switch)
            if gated:
                threads = _gated(monkeypatch, "_fill", counts[i])
            assert patcher.apply(request).ok
            if gated:
                monkeypatch.undo()
        states.append(snapshot(net))
        patcher.restore()
    assert sum(map(_is_helper, threads)) == 1 and len(threads) == counts[int(switch)]
    assert states[0] == states[1]
    assert not _stage_threads()


@pytest.mark.parametrize("switch", [False, True])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_failure_on_the_helper_thread_restores_the_pristine_model_and_names_the_layer(
    strategy, switch, monkeypatch
):
    requests = lambda a, b, c: [active((a, 1.0), (b, 0.5)), active((a, -0.6), (b, 1.5))]  # noqa: E731
    counts = _count_fills(monkeypatch, strategy, requests)
    net, (a, b, c) = _net_and_loras(torch.float32, seed=2)
    pristine = snapshot(net)
    patcher = Patcher(strategy, overlap=True)
    if switch:
        assert patcher.apply(requests(a, b, c)[0]).ok
    threads = _gated(
        monkeypatch, "_fill", counts[int(switch)], MemoryError("simulated: no memory for the new tensor")
    )
    result = patcher.apply(requests(a, b, c)[int(switch)])
    assert result.failed and not patcher.is_patched
    assert sum(map(_is_helper, threads)) == 1  # the one that raised
    message = result.problems[-1].message
    assert "at layer " in message and "no memory" in message
    assert snapshot(net) == pristine and patcher.held_bytes() == 0
    assert not _stage_threads()
    monkeypatch.undo()
    assert patcher.apply(requests(a, b, c)[1]).ok  # usable afterwards


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


def test_stager_caller_runs_the_steps_the_helper_has_not_started_from_the_back_and_reraises_at_their_turn():
    started, release = threading.Event(), threading.Event()
    order: list[int] = []

    def busy() -> str:
        started.set()
        assert release.wait(10)
        return threading.current_thread().name

    def step(i: int) -> tuple[int, str, bool]:
        order.append(i)
        if i == 1:
            release.set()
        if i == 2:
            raise ValueError("step 2 failed")
        return i, threading.current_thread().name, torch.is_grad_enabled()

    caller = threading.current_thread().name
    with Stager(True, torch.no_grad) as stager:
        first = stager.submit(True, busy)
        takes = [stager.submit(True, step, i, stealable=True) for i in (1, 2, 3)]
        assert started.wait(10)
        assert _is_helper(
            first()
        )  # while waiting for it, the caller ran 3, 2, 1 itself (in the helper's modes)
        assert order == [3, 2, 1]
        assert takes[0]() == (1, caller, False)
        with pytest.raises(ValueError, match="step 2 failed"):
            takes[1]()
        assert takes[2]() == (3, caller, False)
    assert not _stage_threads() and order == [3, 2, 1]  # nothing ran twice


def _streamed_slots(net) -> int:
    return sum(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for m in net.modules())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_swap_slots_are_computed_on_both_threads_with_the_bits_of_a_serial_apply(dtype, monkeypatch):
    """Low-precision swap slots with plain factors need no copy of W₀ first, so they are queued for the helper thread
    whole, and the caller computes every one the helper has not started when it would otherwise wait: in a fresh apply
    and in a switch (tensors reused). The helper is held in its first slot here, so the caller computes all others."""
    nets, patchers, loras = [], [], []
    for overlap in (False, True):
        net = tiny_net(dtype)
        torch.manual_seed(3)
        nets.append(net)
        patchers.append(Patcher("swap", overlap=overlap))
        loras.append((plain_lora(net, "p", rank=2), plain_lora(net, "q", rank=3)))
    for step in (lambda p, q: active((p, 1.0)), lambda p, q: active((p, -0.5), (q, 0.8))):
        assert patchers[0].apply(step(*loras[0])).ok
        before = patcher_module._stream
        threads = _gated(monkeypatch, "_stream", _streamed_slots(nets[1]))
        assert patchers[1].apply(step(*loras[1])).ok
        monkeypatch.setattr(patcher_module, "_stream", before)
        assert sum(map(_is_helper, threads)) == 1 and len(threads) == _streamed_slots(nets[1]), threads
        assert snapshot(nets[1]) == snapshot(nets[0])
    patchers[1].restore()
    assert not _stage_threads()


@pytest.mark.parametrize("switch", [False, True])
def test_a_failure_in_a_slot_computed_on_the_helper_thread_restores_the_pristine_model(switch, monkeypatch):
    net = tiny_net(torch.float16)
    a, b = plain_lora(net, "a", rank=2), plain_lora(net, "b", rank=3)
    pristine = snapshot(net)
    patcher = Patcher("swap", overlap=True)
    if switch:  # reused tensors: the model sees them while the helper writes them
        assert patcher.apply(active((a, 1.0), (b, 0.5))).ok
    threads = _gated(
        monkeypatch,
        "_stream",
        _streamed_slots(net),
        RuntimeError("simulated: a product failed on the helper thread"),
    )
    result = patcher.apply(active((a, -0.6), (b, 1.5)))
    assert result.failed and not patcher.is_patched
    assert sum(map(_is_helper, threads)) == 1
    assert "a product failed on the helper thread" in result.problems[-1].message
    assert snapshot(net) == pristine and patcher.held_bytes() == 0
    assert not _stage_threads()


def test_overlap_by_default_only_when_the_kernels_leave_a_core_idle(monkeypatch):
    monkeypatch.setattr(patcher_module.os, "cpu_count", lambda: 4)
    for threads, expected in ((1, True), (3, True), (4, False), (8, False)):
        monkeypatch.setattr(patcher_module.torch, "get_num_threads", lambda t=threads: t)
        assert Patcher()._overlaps() is expected
    assert Patcher(overlap=False)._overlaps() is False and Patcher(overlap=True)._overlaps() is True


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_compute_slot_reads_w0_from_the_pristine_tensor_when_the_destination_does_not_hold_it(dtype):
    """A destination full of NaN plus ``w0`` gives the same bits as a destination holding W₀: on the streamed path
    (low precision, plain factors only) and on the others."""
    from lora_ext.patching.compute import compute_slot, streams_rows
    from lora_ext.patching.plan import build_plan

    net, (a, b, _) = _net_and_loras(dtype, seed=17)
    slots, _ = build_plan(active((b, 0.8), (a, -0.4)) if dtype != torch.bfloat16 else active((b, 0.8)))
    streamed = 0
    for slot in slots.values():
        w0 = getattr(slot.module, slot.weight_attr).detach()
        holding = w0.clone()
        compute_slot(slot, holding, None, fuse=False)
        empty = torch.full_like(w0, float("nan"))
        compute_slot(slot, empty, None, fuse=False, w0=w0)
        assert torch.equal(empty.view(torch.uint8), holding.view(torch.uint8)), slot.label
        streamed += streams_rows(slot, empty)
    assert (streamed > 0) == (dtype != torch.float32)


def _jobs(count: int, dtype: torch.dtype, strategy: str):
    """``count`` equal Linear layers with a plain LoRA each, reserved as ``Patcher.apply`` reserves them."""
    from lora_ext.adapters import LayerAdapter, ResolvedLora, Target
    from lora_ext.patching.plan import build_plan

    layers = {}
    for i in range(count):
        layer = torch.nn.Linear(40, 30).to(dtype)
        adapter = LayerAdapter("lora", {"up": torch.randn(30, 2), "down": torch.randn(2, 40)}, 1.0)
        layers[Target("unet", f"l{i}", f"l{i}", module=layer)] = adapter
    slots, problems = build_plan(active((ResolvedLora("x", "/l/x.safetensors", layers), 1.0)))
    assert not problems and len(slots) == count
    patcher = Patcher(strategy)
    return [(key, patcher._reserve(slot, None)) for key, slot in slots.items()], slots


def test_only_streamed_swap_slots_are_queued_for_the_helper_thread_whole():
    jobs, slots = _jobs(40, torch.float16, "swap")
    assert all(not p.copies and p.w0 is not None for _, p in jobs)  # streamed: no copy of W₀ beforehand
    assert patcher_module._shareable(jobs) == set(slots)
    # fp32 slots are not streamed: the helper thread only copies W₀ for them (computing there would allocate there).
    jobs, slots = _jobs(40, torch.float32, "swap")
    assert all(p.copies and p.w0 is None for _, p in jobs)
    assert patcher_module._shareable(jobs) == set()
    # copy strategy: the Parameter itself is written, so only the caller computes.
    jobs, slots = _jobs(10, torch.float16, "copy")
    assert patcher_module._shareable(jobs) == set()
