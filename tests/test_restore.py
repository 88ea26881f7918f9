"""Restore is bit-exact and leaves nothing behind (issue 3 acceptance; USERS R1–R4, P5–P6).

Hundreds of random apply / switch / restore cycles over a tiny model with every supported layer kind, random sets of
0–4 LoRAs of mixed algorithms with random (also negative) multipliers and DyLoRA ranks, and an exception injected
during some applies. After every restore each parameter and buffer must be byte-identical to the original, the
patcher's bookkeeping empty and its backups unreachable.
"""

from __future__ import annotations

import gc
import random
import weakref

import pytest
import torch
from test_patcher_models import random_lora, snapshot, targets, tiny_net

from lora_ext.adapters import ActiveLora, LayerAdapter, ResolvedLora
from lora_ext.patcher import Patcher

CYCLES = 200


def _backup_refs(patcher: Patcher) -> list[weakref.ref]:
    """Weak references to every backup record the patcher holds and to every pristine copy it keeps."""
    refs = []
    for rec in patcher._applied.values():
        refs.append(weakref.ref(rec))
        for backup in rec.backups:
            refs.append(weakref.ref(backup))
            if backup.strategy == "copy" and backup.original is not None:
                refs.append(weakref.ref(backup.original))
    return refs


def _random_set(pool: list[ResolvedLora], rng: random.Random) -> list[ActiveLora]:
    chosen = rng.sample(pool, rng.randint(0, 4))
    return [
        ActiveLora(
            lora,
            te=rng.choice([0.0, 1.0, -0.5, rng.uniform(-2, 2)]),
            unet=rng.choice([1.0, -1.5, 0.3, rng.uniform(-2, 2)]),
            dyn=rng.choice([None, None, 1, 2]),
        )
        for lora in chosen
    ]


def _bad_lora(net) -> ResolvedLora:
    """A LoRA that makes apply raise halfway: valid layers first (sorted order), then an unknown algorithm."""
    target = next(t for t, _ in targets(net) if t.path == "ln")
    return ResolvedLora(
        "broken", "/zz/broken", {target: LayerAdapter("not-an-algorithm", {"x": torch.ones(1)})}
    )


@pytest.mark.parametrize("strategy", ["swap", "copy"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_random_apply_switch_restore_cycles_restore_every_byte(dtype, strategy):
    rng = random.Random(f"{dtype}-{strategy}")
    torch.manual_seed(rng.randrange(1 << 30))
    net = tiny_net(dtype)
    pristine = snapshot(net)
    names = sorted(pristine)
    pool = [random_lora(net, f"lora{i}", rng) for i in range(6)]
    bad = _bad_lora(net)
    patcher = Patcher(strategy, fuse=dtype == torch.float16)  # both summation paths
    failures = switches = patched_states = 0
    for cycle in range(CYCLES):
        if cycle % 50 == 49:  # new files now and then (new adapter objects, new random algorithms)
            pool[rng.randrange(len(pool))] = random_lora(net, f"new{cycle}", rng)
        refs = []
        for _ in range(rng.randint(1, 3)):
            entries = _random_set(pool, rng)
            inject = rng.random() < 0.15
            if inject:
                entries.insert(rng.randint(0, len(entries)), ActiveLora(bad, 1.0, 1.0))
            result = patcher.apply(entries)
            refs += _backup_refs(patcher)
            if inject:
                assert result.failed and "ln" in result.problems[-1].message
                assert snapshot(net) == pristine and not patcher.is_patched
                failures += 1
            else:
                assert result.ok, result.problems
                switches += 1
                patched_states += patcher.is_patched
        if rng.random() < 0.5:
            assert patcher.restore() == []
        else:
            assert patcher.apply([]).ok  # an empty set restores too (USERS R2)
        assert not patcher.is_patched and patcher.held_bytes() == 0 and patcher._applied == {}
        after = snapshot(net)
        assert sorted(after) == names  # created biases are gone again
        assert after == pristine, [n for n in names if after[n] != pristine[n]]
        if (
            cycle % 40 == 39
        ):  # gc is slow; the bookkeeping holds no reference cycles, so refcounting frees at once
            gc.collect()
        assert all(r() is None for r in refs), f"cycle {cycle}: a backup is still referenced"
    assert failures >= 10 and patched_states >= CYCLES  # the cycles really patched and really failed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_switching_many_times_equals_a_single_fresh_apply(dtype):
    """No drift across switches (USERS R3, R4): the patched bits depend only on the current set."""
    rng = random.Random(99)
    net = tiny_net(dtype)
    pool = [random_lora(net, f"s{i}", rng) for i in range(5)]
    patcher = Patcher()
    final = None
    for _ in range(30):
        final = [ActiveLora(lora, rng.uniform(-2, 2), rng.uniform(-2, 2)) for lora in rng.sample(pool, 3)]
        patcher.apply(final)
    switched = snapshot(net)
    patcher.restore()
    Patcher().apply(final)
    assert snapshot(net) == switched
