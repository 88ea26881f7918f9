"""Failures and switches on the device: an exception in the middle of an apply leaves the pristine weights, and a
switch between sets touches only the layers whose contributions change.

Model: the tiny SD1 UNet + CLIP text encoder in fp16 on the device (the usual storage dtype of a GPU model).
"""

from __future__ import annotations

import pytest
import torch
from gpu_helpers import (
    assert_bit_identical,
    bit_identical,
    build_model,
    check_model_against_oracle,
    device_allocated,
    named_tensors,
    only,
    oracle,
    resolve,
    snapshot,
    touch_state,
    warm_up,
    weight_ids,
)

import lora_ext.patcher as patcher_module
from lora_ext.adapters import ActiveLora, LayerAdapter, ResolvedLora
from lora_ext.patcher import Patcher

DTYPE = torch.float16


@pytest.mark.parametrize("injection", ["unknown_algorithm", "compute_raises"])
@pytest.mark.parametrize("strategy", ["swap", "copy"])
def test_an_exception_mid_apply_restores_every_bit_and_names_the_layer(
    device, lora_files, strategy, injection, monkeypatch
):
    """Injected failures, as in tests/test_restore.py and tests/test_patcher.py:

    - ``unknown_algorithm``: a LoRA whose adapter on one layer (the plain LoRA's last) has an algorithm that does not
      exist (``layer_delta`` raises), reached after other layers were computed (asserted);
    - ``compute_raises``: the third ``compute_slot`` call raises a simulated CUDA out-of-memory error after it has
      written its destination (in place, for the copy strategy).

    Both from a clean model and while switching from a patched set. At the moment of the failure some weights really
    differ from the pristine ones (asserted); afterwards every parameter and buffer is bit-identical to the CPU copy
    taken before, nothing is patched or held (``held_bytes() == 0``), on CUDA ``torch.cuda.memory_allocated()``
    (bytes) is exactly its value before the first apply (no destination, backup or uploaded factor outlives the
    failure), exactly one error Problem says ``at layer <canonical name of the failing layer>``, and the patcher still
    works.
    """
    warm_up(device, DTYPE, strategy, lora_files, ("plain", "loha"))
    model = build_model(device, DTYPE)
    loras = resolve(model, lora_files, ("plain", "loha"))
    pristine = snapshot(model)
    good = [ActiveLora(loras["plain"], 1.0, 0.8), ActiveLora(loras["loha"], -0.5, 1.2)]
    other = [ActiveLora(loras["plain"], 0.5, -0.4), ActiveLora(loras["loha"], 0.9, 0.3)]
    last = list(loras["plain"].layers)[-1]
    bad = ResolvedLora("broken", "/broken", {last: LayerAdapter("not-an-algorithm", {"x": torch.ones(1)})})

    real = patcher_module.compute_slot
    calls: list[str] = []
    dirty: list[list[str]] = []
    armed = [False]

    def changed_now() -> list[str]:
        return [n for n, t in named_tensors(model).items() if not bit_identical(t, pristine[n])]

    def spy(slot, *args, **kwargs):
        if not armed[0]:
            return real(slot, *args, **kwargs)
        calls.append(slot.label)
        if injection == "unknown_algorithm" and slot.label == last.canonical:
            dirty.append(changed_now())
            return real(slot, *args, **kwargs)  # raises: no such algorithm
        if injection == "compute_raises" and len(calls) == 3:
            real(slot, *args, **kwargs)
            dirty.append(changed_now())
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(slot, *args, **kwargs)

    monkeypatch.setattr(patcher_module, "compute_slot", spy)
    extra = [ActiveLora(bad, 1.0, 1.0)] if injection == "unknown_algorithm" else []
    patcher = Patcher(strategy)
    patched_good = None
    allocated = device_allocated(device)
    for phase in ("fresh", "switch"):
        if phase == "switch":
            armed[0] = False
            assert patcher.apply(good).ok and patcher.is_patched
            patched_good = snapshot(model)
        calls.clear()
        dirty.clear()
        armed[0] = True
        result = patcher.apply([*other, *extra])
        assert result.failed and not result.ok, phase
        errors = [p for p in result.problems if p.severity == "error"]
        assert len(errors) == 1, [str(p) for p in result.problems]
        assert f"at layer {calls[-1]}" in errors[0].message, (calls[-1], errors[0].message)
        if injection == "unknown_algorithm":
            assert calls[-1] == last.canonical and "broken" in errors[0].subject
            assert len(calls) > 1  # other layers were computed first
        else:
            assert "out of memory" in errors[0].message
        assert dirty and dirty[0], f"{phase}: nothing was written before the failure, the check has no teeth"
        assert_bit_identical(pristine, snapshot(model))
        assert not patcher.is_patched and patcher.held_bytes() == 0
        assert device_allocated(device) == allocated, (phase, allocated, device_allocated(device))
    armed[0] = False
    assert patcher.apply(good).ok
    assert_bit_identical(patched_good, snapshot(model))
    assert patcher.restore() == []
    assert_bit_identical(pristine, snapshot(model))


@pytest.mark.parametrize("strategy", ["swap", "copy"])
def test_switch_touches_only_the_union_and_switching_back_restores_bit_exactly(device, lora_files, strategy):
    """S₁ = A + D → S₂ = B + C + D → S₁ → restore, with
    A = LoRA/LoCon on UNet ``down_blocks``, B = LoHa on UNet ``up_blocks``, C = LoKr on the text encoder,
    D = DoRA on UNet ``mid_block`` and ``down_blocks`` (kept across both switches).

    Each switch visits exactly the weights targeted by A, B or C (``ApplyResult.visited``); every other parameter
    and buffer keeps its storage pointer and version counter (not replaced, not written), including the weights only
    D patches (asserted to exist). Each state matches the oracle (≤ 1 ulp, fp16); S₂ reached by the switch is
    bit-identical to S₂ applied fresh by a new patcher, S₁ after switching back is bit-identical to the first S₁,
    and the final restore gives the pristine bits back with nothing held.
    """
    model = build_model(device, DTYPE)
    loras = resolve(model, lora_files, ("plain", "loha", "lokr", "dora"))
    a = only(loras["plain"], ("down_blocks.",))
    b = only(loras["loha"], ("up_blocks.",))
    c = only(loras["lokr"], ("text_model.",))
    d = only(loras["dora"], ("mid_block.", "down_blocks."))
    s1 = [ActiveLora(a, 1.0, 0.8), ActiveLora(d, 1.0, 0.7)]
    s2 = [ActiveLora(b, 1.0, -0.6), ActiveLora(c, 0.9, 1.0), ActiveLora(d, 1.0, 0.7)]
    union = weight_ids(model, (a, b, c))
    d_only = weight_ids(model, (d,)) - union
    assert d_only and weight_ids(model, (d,)) & weight_ids(model, (a,)), "the sets do not overlap as intended"
    pristine = snapshot(model)

    patcher = Patcher(strategy)
    assert patcher.apply(s1).ok
    check_model_against_oracle(model, oracle(model, s1, pristine), pristine, DTYPE)
    first = snapshot(model)
    for target, want in ((s2, None), (s1, first)):
        before = touch_state(model)
        result = patcher.apply(target)
        assert result.ok and result.changed and result.problems == [], [str(p) for p in result.problems]
        assert result.visited == len(union), (result.visited, len(union))
        after = touch_state(model)
        touched = {n for n in before if before[n] != after[n]}
        assert touched <= union, sorted(touched - union)[:5]
        check_model_against_oracle(model, oracle(model, target, pristine), pristine, DTYPE)
        if want is not None:
            assert_bit_identical(want, snapshot(model))
        else:
            switched = snapshot(model)
    assert patcher.restore() == []
    assert_bit_identical(pristine, snapshot(model))
    assert patcher.held_bytes() == 0 and not patcher.is_patched

    fresh = Patcher(strategy)
    assert fresh.apply(s2).ok
    assert_bit_identical(switched, snapshot(model))
    assert fresh.restore() == []
    assert_bit_identical(pristine, snapshot(model))
