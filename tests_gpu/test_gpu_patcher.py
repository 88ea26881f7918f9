"""The patcher on the device: mixed algorithms against the float64 oracle, bit-exact restore, where the backups live,
memory after restore, order independence and the single rounding of low-precision weights.

Models: the tiny SD1 ``UNet2DConditionModel`` + ``CLIPTextModel`` of ``lora_ext.demo`` on the device, in the storage
dtype under test. LoRA files: the session's ``lora_files`` (kohya LoRA/LoCon, LyCORIS LoHa and LoKr, kohya DoRA).
"""

from __future__ import annotations

import gc

import pytest
import torch
from gpu_helpers import (
    ALL,
    assert_bit_identical,
    backup_refs,
    backup_tensors,
    bit_identical,
    build_model,
    check_model_against_oracle,
    device_allocated,
    mixed_set,
    named_tensors,
    oracle,
    parameter_objects,
    resolve,
    snapshot,
    ulp_distance,
    warm_up,
)
from torch import nn

from lora_ext.adapters import ActiveLora, LayerAdapter, ResolvedLora, Target
from lora_ext.patcher import Patcher

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("strategy", ["swap", "copy"])
def test_mixed_algorithms_match_the_oracle_restore_bit_exactly_and_free_everything(
    device, lora_files, strategy, dtype
):
    """Four files (LoRA/LoCon, LoHa, LoKr, DoRA) applied together, te/unet multipliers differing, some negative.

    (a) every patched weight equals the float64 oracle (tests/oracles.py, on CPU, from the pristine weight in the
        storage dtype) rounded once to the storage dtype: ≤ 1 ulp for fp16/bf16, rel 1e-5 of the tensor's max |value|
        for fp32 (see ``check_against_oracle``); every other parameter and buffer keeps its bits.
    (b) after ``restore()`` every parameter and buffer is bit-identical to the CPU copy taken before, and the
        Parameters are the same Python objects.
    (c) copy: the Parameter's storage is written in place and each backup is a CPU tensor, pinned when the weight is
        on CUDA (not pinned on CPU); swap: each backup is the original tensor on the weight's device and the
        Parameter holds a new storage. Either way ``held_bytes()`` equals the bytes of the patched weights (each
        backed up once).
    (d) after ``restore(release_memory=True)``: ``held_bytes() == 0``, no backup tensor is alive, and on CUDA
        ``torch.cuda.memory_allocated()`` (bytes) equals its value before the first apply, exactly.
    """
    warm_up(device, dtype, strategy, lora_files, ALL)
    model = build_model(device, dtype)
    loras = resolve(model, lora_files, ALL)
    active = mixed_set(loras)
    pristine = snapshot(model)
    objects = parameter_objects(model)
    pointers = {n: t.data_ptr() for n, t in named_tensors(model).items()}
    expected = oracle(model, active, pristine)
    allocated = device_allocated(device)

    patcher = Patcher(strategy)
    result = patcher.apply(active)
    assert result.ok and result.changed and result.problems == [], [str(p) for p in result.problems]
    assert result.patched == len(expected) and len(patcher.patched_layers()) == len(expected)
    # (a)
    changed = check_model_against_oracle(model, expected, pristine, dtype)
    assert changed == len(expected), f"only {changed} of {len(expected)} targeted weights changed at all"
    assert {n.split(".")[0] for n in expected} == {"unet", "te1"}
    patched = snapshot(model)
    # (c)
    backups = backup_tensors(patcher)
    assert len(backups) == len(expected)
    assert patcher.held_bytes() == sum(pristine[n].numel() * pristine[n].element_size() for n in expected)
    live = named_tensors(model)
    for strat, original in backups:
        assert strat == strategy
        if strategy == "copy":
            assert original.device.type == "cpu"
            assert original.is_pinned() == (device.type == "cuda"), "copy backups are pinned exactly on CUDA"
        else:
            assert original.device == live[next(iter(expected))].device
    moved = {n for n in expected if live[n].data_ptr() != pointers[n]}
    assert moved == (set(expected) if strategy == "swap" else set()), sorted(moved)[:5]
    # (b)
    assert patcher.restore() == []
    assert_bit_identical(pristine, snapshot(model))
    assert (
        all(p is objects[n] for n, p in parameter_objects(model).items())
        and objects.keys() == parameter_objects(model).keys()
    )
    assert device_allocated(device) == allocated
    # the same set again gives the same bits; then (d)
    assert patcher.apply(active).ok
    assert_bit_identical(patched, snapshot(model))
    refs = backup_refs(patcher)
    assert refs
    assert patcher.restore(release_memory=True) == []
    assert_bit_identical(pristine, snapshot(model))
    assert all(p is objects[n] for n, p in parameter_objects(model).items())
    assert patcher.held_bytes() == 0 and not patcher.is_patched
    assert all(r() is None for r in refs), "a backup tensor outlived restore()"
    if device.type == "cuda":
        after = device_allocated(device)
        gc.collect()
        assert after == allocated, (
            f"torch.cuda.memory_allocated: {allocated} bytes before apply, {after} after restore "
            f"({device_allocated(device)} after gc.collect())"
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("strategy", ["swap", "copy"])
def test_order_of_the_active_list_does_not_change_a_bit_on_the_device(device, lora_files, strategy, dtype):
    """(A, B, C, D), (D, C, B, A) and (C, A, D, B) give bit-identical weights (every parameter and buffer compared
    as bytes), and they do differ from the pristine ones."""
    model = build_model(device, dtype)
    loras = resolve(model, lora_files, ALL)
    pristine = snapshot(model)
    states = []
    for order in (ALL, ALL[::-1], ("lokr", "plain", "dora", "loha")):
        patcher = Patcher(strategy)
        assert patcher.apply(mixed_set(loras, order)).ok
        states.append(snapshot(model))
        assert patcher.restore() == []
        assert_bit_identical(pristine, snapshot(model))
    assert_bit_identical(states[0], states[1])
    assert_bit_identical(states[0], states[2])
    assert any(not bit_identical(states[0][n], pristine[n]) for n in pristine)


@pytest.mark.parametrize("strategy", ["swap", "copy"])
def test_fp16_sum_of_three_loras_is_rounded_once(device, lora_files, strategy):
    """fp16 weights, three LoRAs (LoRA/LoCon, LoHa, LoKr): the result is the oracle's float64 sum rounded once to fp16
    (≤ 1 ulp, as in the first test), not the result of three fp16 additions.

    Sequential model: W ← fp16(W + ΔWᵢ) for each LoRA in turn (float64 arithmetic, rounded after each). On the
    elements where that differs from the single rounding (there must be at least 100 of them, so the check is
    meaningful), at least 95 % of the patched elements must equal the single rounding exactly; a patcher that rounds
    after each LoRA would match the single rounding on almost none of them.
    """
    names = ("plain", "loha", "lokr")
    model = build_model(device, torch.float16)
    loras = resolve(model, lora_files, names)
    active = mixed_set(loras, names)
    pristine = snapshot(model)
    expected = oracle(model, active, pristine)
    assert Patcher(strategy).apply(active).ok
    check_model_against_oracle(model, expected, pristine, torch.float16)
    live = named_tensors(model)
    distinguishing = matches_once = 0
    for name, want in expected.items():
        once = want.exact.to(torch.float16)
        sequential = want.w0.to(torch.float16)
        for delta in want.deltas:
            sequential = (sequential.double() + delta).to(torch.float16)
        differ = ulp_distance(sequential, once) > 0
        got = live[name].detach().cpu()
        distinguishing += int(differ.sum())
        matches_once += int((differ & (got == once)).sum())
    assert distinguishing >= 100, f"only {distinguishing} elements tell one rounding from three"
    assert matches_once >= 0.95 * distinguishing, (
        f"{matches_once} of {distinguishing} elements where one and three roundings differ got the single rounding"
    )


def _dyadic(*shape: int, bits: int, span: int, device) -> torch.Tensor:
    """Random multiples of 2⁻ᵇⁱᵗˢ in [−span, span]·2⁻ᵇⁱᵗˢ (float64): their products and short sums are exact in
    float32 whatever the summation order."""
    return (torch.randint(-span, span + 1, shape).double() * 2.0**-bits).to(device)


@pytest.mark.parametrize("strategy", ["swap", "copy"])
def test_fp16_exact_float32_sum_is_rounded_once_bit_for_bit(device, strategy):
    """A Linear [40, 48] and a 3×3 Conv2d [8, 6] in fp16 on the device, three plain LoRAs (rank 2, α 2, m = 0.5,
    −0.75, 1.25) with dyadic factors: the float32 sum W₀ + Σ mᵢ·Uᵢ·Dᵢ is exact (GPU kernel order cannot change it),
    so the patched weight must equal it rounded once to fp16 bit for bit, and rounding after each LoRA gives a
    different weight (the premise is asserted)."""
    torch.manual_seed(4)
    lin = nn.Linear(48, 40, bias=False)
    conv = nn.Conv2d(6, 8, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(_dyadic(40, 48, bits=4, span=16, device="cpu"))
        conv.weight.copy_(_dyadic(8, 6, 3, 3, bits=4, span=16, device="cpu"))
    mods = {
        "lin": lin.to(device=device, dtype=torch.float16),
        "conv": conv.to(device=device, dtype=torch.float16),
    }
    w0 = {k: m.weight.detach().cpu().double() for k, m in mods.items()}
    exact = {k: v.clone() for k, v in w0.items()}
    sequential = {k: v.to(torch.float16) for k, v in w0.items()}
    active = []
    for i, mult in enumerate((0.5, -0.75, 1.25)):
        layers = {}
        for name, mod in mods.items():
            shape = mod.weight.shape
            up, down = (
                _dyadic(shape[0], 2, bits=4, span=8, device="cpu"),
                _dyadic(2, *shape[1:], bits=5, span=8, device="cpu"),
            )
            layers[Target("unet", name, name, module=mod)] = LayerAdapter(
                "lora", {"up": up.half(), "down": down.half()}, alpha=2.0
            )
            delta = mult * (up @ down.reshape(2, -1)).reshape(shape)  # α/r = 1
            exact[name] += delta
            sequential[name] = (sequential[name].double() + delta).to(torch.float16)
        active.append(ActiveLora(ResolvedLora(f"d{i}", f"/d{i}", layers), mult, mult))
    for value in exact.values():  # the premise: float32 holds the sum exactly
        assert torch.equal(value.float().double(), value)
    assert Patcher(strategy).apply(active).ok
    for name, mod in mods.items():
        got = mod.weight.detach().cpu()
        assert got.dtype == torch.float16 and torch.equal(got, exact[name].to(torch.float16)), name
    assert any(not torch.equal(sequential[n], exact[n].to(torch.float16)) for n in mods)
