"""Patcher behaviour on a tiny hand-built model: one-rounding math, m = 0, order independence, switching, MHA slices,
created biases, strategies, failure handling, reload detection, autocast and threads (issue 3, FORMATS.md §10.1–10.2)."""

from __future__ import annotations

import random
import threading

import pytest
import torch
from test_patcher_models import (
    D_MHA,
    active,
    make_adapter,
    plain_lora,
    random_lora,
    snapshot,
    targets,
    tiny_net,
    weight_shape,
)
from torch import nn

from lora_ext.adapters import ActiveLora, LayerAdapter, ResolvedLora, Target
from lora_ext.algorithms import layer_delta
from lora_ext.patcher import Patcher
from lora_ext.patching.backup import choose_strategy

STRATEGIES = ("swap", "copy")


def expected_tensors(net: nn.Module, pristine: dict[str, torch.Tensor], entries: list[ActiveLora]):
    """W₀ + Σ ΔWᵢ per patched tensor in float64, from ``layer_delta`` on the pristine float32 weights.

    Returns {(module, attr): float64 tensor}.
    """
    names = {id(m): n for n, m in net.named_modules()}
    sums: dict[tuple[int, str], torch.Tensor] = {}
    owners = {}

    def base(module, attr):
        key = (id(module), attr)
        if key not in sums:
            full = f"{names[id(module)]}.{attr}".lstrip(".")
            w = pristine.get(full)
            like = getattr(module, "weight", None) if w is None else w
            sums[key] = w.double() if w is not None else torch.zeros(like.shape[0], dtype=torch.float64)
            owners[key] = (module, attr)
        return sums[key]

    for entry in entries:
        for target, adapter in entry.lora.layers.items():
            m = entry.multiplier(target)
            if m == 0:
                continue
            w_full = base(target.module, target.weight)
            r0, r1 = target.rows or (0, w_full.shape[0])
            w0 = pristine[f"{names[id(target.module)]}.{target.weight}".lstrip(".")].float()[r0:r1]
            b_name = f"{names[id(target.module)]}.{target.bias}".lstrip(".")
            b0 = pristine[b_name].float()[r0:r1] if b_name in pristine else None
            delta = layer_delta(adapter, w0, m, entry.dyn, b0)
            if delta.weight is not None:
                w_full[r0:r1] += delta.weight.double()
            if delta.bias is not None:
                base(target.module, target.bias)[r0:r1] += delta.bias.double()
    return {owners[k]: v for k, v in sums.items()}


def pristine_of(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def assert_matches(expected, dtype: torch.dtype, rel: float) -> None:
    for (module, attr), value in expected.items():
        got = getattr(module, attr)
        assert got is not None and got.dtype == dtype, attr
        err = (got.double() - value).abs().max().item()
        assert err <= rel * max(value.abs().max().item(), 1e-12), (attr, err)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_patched_weights_equal_pristine_plus_float32_sum_of_all_deltas(strategy):
    net = tiny_net()
    pristine = pristine_of(net)
    rng = random.Random(1)
    loras = [random_lora(net, f"l{i}", rng) for i in range(4)]
    entries = [
        ActiveLora(loras[0], 0.8, -1.5),
        ActiveLora(loras[1], -0.4, 0.3),
        ActiveLora(loras[2], 1.0, 1.0, dyn=1),
    ]
    entries.append(ActiveLora(plain_lora(net, "plain", rank=3), 0.5, 0.5, dyn=2))
    result = Patcher(strategy).apply(entries)
    assert result.ok and result.changed and not result.problems
    assert_matches(expected_tensors(net, pristine, entries), torch.float32, 2e-6)


def test_fused_and_unfused_plain_products_agree_with_layer_delta():
    nets = [tiny_net(), tiny_net()]
    pristine = pristine_of(nets[0])
    for fuse, net in zip((True, False), nets, strict=True):
        torch.manual_seed(5)
        entries = active(*[(plain_lora(net, f"p{i}", rank=i + 1), 0.3 * (i - 1.5)) for i in range(3)])
        Patcher("swap", fuse=fuse).apply(entries)
        assert_matches(expected_tensors(net, pristine, entries), torch.float32, 2e-6)
    for (_, a), (_, b) in zip(nets[0].named_parameters(), nets[1].named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_zero_multiplier_leaves_every_weight_bit_identical(strategy):
    net = tiny_net()
    before = snapshot(net)
    patcher = Patcher(strategy)
    rng = random.Random(2)
    loras = [random_lora(net, f"z{i}", rng) for i in range(3)]
    result = patcher.apply(active(*[(lora, 0.0) for lora in loras]))
    assert result.ok and not result.changed and result.patched == 0
    assert snapshot(net) == before and not patcher.is_patched
    # te = 0 only: text-encoder targets stay bit-identical, UNet targets change
    patcher.apply([ActiveLora(loras[0], te=0.0, unet=1.0)])
    after = snapshot(net)
    te_names = {n for n in before if n.startswith(("ln.", "mha."))}
    unet_targets = {f"{t.path}.weight" for t in loras[0].layers if t.component == "unet"}
    assert all(after[n] == before[n] for n in te_names)
    assert unet_targets and all(after[n] != before[n] for n in unet_targets)


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_order_of_the_active_list_does_not_change_a_single_bit(dtype, strategy, fuse):
    rng = random.Random(3)
    ref_net = tiny_net(dtype)
    loras = [random_lora(ref_net, f"o{i}", rng) for i in range(3)]
    loras.append(plain_lora(ref_net, "p1"))
    loras.append(plain_lora(ref_net, "p2", rank=4))
    mults = [0.7, -1.2, 0.35, 1.0, -0.6]
    snaps = []
    for order in ([0, 1, 2, 3, 4], [4, 2, 0, 3, 1], [3, 4, 1, 2, 0]):
        net = tiny_net(dtype)
        # the LoRAs point at ref_net's modules: re-target them onto this net's modules by path
        mods = dict(net.named_modules())
        entries = []
        for i in order:
            layers = {_retarget(t, mods): a for t, a in loras[i].layers.items()}
            entries.append(ActiveLora(ResolvedLora(loras[i].name, loras[i].path, layers), mults[i], mults[i]))
        assert Patcher(strategy, fuse=fuse).apply(entries).ok
        snaps.append(snapshot(net))
    assert snaps[0] == snaps[1] == snaps[2]
    assert snaps[0] != snapshot(tiny_net(dtype))


def _retarget(target: Target, mods: dict[str, nn.Module]) -> Target:
    return Target(
        target.component,
        target.path,
        target.canonical,
        target.weight,
        target.bias,
        target.rows,
        mods[target.path],
    )


def _dyadic(*shape: int, bits: int, span: int = 8) -> torch.Tensor:
    """Random multiples of 2**-bits in [-span, span] * 2**-bits: sums of a few products stay exact in float32."""
    return torch.randint(-span, span + 1, shape).double() * 2.0**-bits


@pytest.mark.parametrize("general", [True, False])  # False: only plain products (the row-block path on CPU)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_low_precision_model_with_three_loras_is_rounded_once_from_the_float32_sum(dtype, strategy, general):
    torch.manual_seed(4)
    lin = nn.Linear(48, 40, bias=False)
    conv = nn.Conv2d(6, 8, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(_dyadic(40, 48, bits=4, span=16))
        conv.weight.copy_(_dyadic(8, 6, 3, 3, bits=4, span=16))
    lin.to(dtype)
    conv.to(dtype)
    w0 = {"lin": lin.weight.detach().double(), "conv": conv.weight.detach().double()}
    mods = {"lin": lin, "conv": conv}
    mults = (0.5, -0.75, 1.25)
    loras, exact = [], {k: v.clone() for k, v in w0.items()}
    for i, m in enumerate(mults):
        layers = {}
        for name, mod in mods.items():
            shape = mod.weight.shape
            up, down = _dyadic(shape[0], 2, bits=4), _dyadic(2, *shape[1:], bits=5)
            if (
                i == 2 and general
            ):  # a general-path adapter (A1111 "bias" part joins ΔW_raw) next to two fast-path ones
                extra = _dyadic(*shape, bits=7)
                layers[Target("unet", name, name, module=mod)] = LayerAdapter(
                    "lora", {"up": up.float(), "down": down.float(), "bias": extra.float()}, alpha=2.0
                )
                raw = (up @ down.reshape(2, -1)).reshape(shape) + extra
            else:
                layers[Target("unet", name, name, module=mod)] = LayerAdapter(
                    "lora", {"up": up.half(), "down": down.half()}, alpha=2.0
                )
                raw = (up @ down.reshape(2, -1)).reshape(shape)
            exact[name] += m * raw
        loras.append(ResolvedLora(f"r{i}", f"/r{i}", layers))
    for (
        value
    ) in exact.values():  # the test's premise: the float32 sum is exact, so "rounded once" is unambiguous
        assert torch.equal(value.float().double(), value)
    sequential = {k: v.to(dtype) for k, v in w0.items()}
    for lora, m in zip(loras, mults, strict=True):
        for target, adapter in lora.layers.items():
            d = layer_delta(adapter, sequential[target.path].float(), m)
            sequential[target.path] = (sequential[target.path].float() + d.weight).to(dtype)

    Patcher(strategy).apply(active(*zip(loras, mults, strict=True)))
    for name, mod in mods.items():
        once = exact[name].to(dtype)
        assert torch.equal(mod.weight.detach(), once), name
    # the check has teeth: rounding after every LoRA gives a different result here
    assert any(not torch.equal(sequential[n], exact[n].to(dtype)) for n in mods)


def test_fp8_storage_rounds_the_sum_of_every_lora_once():
    torch.manual_seed(6)
    lin = nn.Linear(16, 16, bias=False)
    with torch.no_grad():
        lin.weight.copy_(_dyadic(16, 16, bits=3, span=8))
    lin.to(torch.float8_e4m3fn)
    w0 = lin.weight.detach().double()
    target = Target("unet", "lin", "lin", module=lin)
    loras, exact, last_only = [], w0.clone(), None
    for i, m in enumerate((0.5, 0.25, -0.5)):
        up, down = _dyadic(16, 1, bits=2), _dyadic(1, 16, bits=2)
        loras.append(
            (ResolvedLora(f"f{i}", f"/f{i}", {target: LayerAdapter("lora", {"up": up, "down": down})}), m)
        )
        exact += m * (up @ down)
        last_only = w0 + m * (up @ down)
    assert Patcher().apply(active(*loras)).ok
    got = lin.weight.detach()
    assert got.dtype == torch.float8_e4m3fn
    assert torch.equal(got.view(torch.uint8), exact.float().to(torch.float8_e4m3fn).view(torch.uint8))
    assert not torch.equal(got.view(torch.uint8), last_only.float().to(torch.float8_e4m3fn).view(torch.uint8))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_applying_the_same_set_again_touches_nothing(strategy):
    net = tiny_net()
    rng = random.Random(7)
    a, b = random_lora(net, "a", rng), plain_lora(net, "b")  # b patches conv for sure
    patcher = Patcher(strategy)
    first = patcher.apply(active((a, 0.6), (b, -0.4)))
    state = {n: (p.data_ptr(), p._version) for n, p in net.named_parameters()}
    again = patcher.apply(active((b, -0.4), (a, 0.6)))  # same set, other order
    assert first.changed and not again.changed and again.visited == 0 and again.patched == first.patched
    same = patcher.apply(active((b, -0.4), (a, 0.6)))  # the identical request (the quick path)
    assert not same.changed and same.patched == first.patched
    assert {n: (p.data_ptr(), p._version) for n, p in net.named_parameters()} == state
    with torch.no_grad():
        net.conv.weight.mul_(2)  # someone rewrote a patched tensor: the identical request must notice
    assert patcher.apply(active((b, -0.4), (a, 0.6))).changed


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_switch_visits_only_the_union_of_old_and_new_layers_and_equals_a_fresh_apply(strategy):
    net = tiny_net()
    t = {tg.path + (f".{tg.canonical}" if tg.rows else ""): tg for tg, _ in targets(net)}
    rng = random.Random(8)

    def lora(name, paths):
        return ResolvedLora(
            name, f"/{name}", {t[p]: make_adapter("lora", weight_shape(t[p]), rng) for p in paths}
        )

    a = lora("a", ["lin", "conv"])
    b = lora("b", ["conv", "conv1"])
    c = lora("c", ["mha.out_proj"])
    patcher = Patcher(strategy)
    patcher.apply(active((a, 1.0), (c, 0.5)))
    untouched = net.mha.out_proj.weight.data_ptr(), net.mha.out_proj.weight._version
    switched = patcher.apply(active((b, 0.7), (c, 0.5)))
    assert switched.visited == 3  # lin (restored), conv (changed), conv1 (new); out_proj untouched
    assert (net.mha.out_proj.weight.data_ptr(), net.mha.out_proj.weight._version) == untouched
    fresh = tiny_net()
    mods = dict(fresh.named_modules())
    retargeted = [
        ResolvedLora(x.name, x.path, {_retarget(k, mods): v for k, v in x.layers.items()}) for x in (b, c)
    ]
    Patcher(strategy).apply(active((retargeted[0], 0.7), (retargeted[1], 0.5)))
    assert snapshot(net) == snapshot(fresh)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_mha_q_k_v_slices_are_patched_independently(strategy):
    net = tiny_net()
    pristine = net.mha.in_proj_weight.detach().clone()
    pristine_b = net.mha.in_proj_bias.detach().clone()
    slices = {tg.canonical: tg for tg, kind in targets(net) if kind == "slice"}
    rng = random.Random(9)
    q = make_adapter("lora", torch.Size((D_MHA, D_MHA)), rng)
    v = make_adapter("full", torch.Size((D_MHA, D_MHA)), rng)  # with diff_b: v rows of in_proj_bias only
    lora = ResolvedLora("qv", "/qv", {slices["mha.q"]: q, slices["mha.v"]: v})
    Patcher(strategy).apply(active((lora, 0.9)))
    w, b = net.mha.in_proj_weight.detach(), net.mha.in_proj_bias.detach()
    k_rows = slice(D_MHA, 2 * D_MHA)
    assert torch.equal(w[k_rows], pristine[k_rows]) and torch.equal(b[: 2 * D_MHA], pristine_b[: 2 * D_MHA])
    want_q = pristine[:D_MHA] + layer_delta(q, pristine[:D_MHA], 0.9).weight
    want_v = layer_delta(v, pristine[2 * D_MHA :], 0.9, None, pristine_b[2 * D_MHA :])
    torch.testing.assert_close(w[:D_MHA], want_q, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(w[2 * D_MHA :], pristine[2 * D_MHA :] + want_v.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b[2 * D_MHA :], pristine_b[2 * D_MHA :] + want_v.bias, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_diff_b_on_a_bias_less_layer_creates_a_bias_that_restore_removes(strategy):
    net = tiny_net()
    before, names = snapshot(net), [n for n, _ in net.named_parameters()]
    target = next(tg for tg, _ in targets(net) if tg.path == "lin_nb")
    diff, diff_b = torch.randn(12, 10) * 0.1, torch.randn(12) * 0.1
    lora = ResolvedLora("d", "/d", {target: LayerAdapter("full", {"diff": diff, "diff_b": diff_b})})
    patcher = Patcher(strategy)
    assert patcher.apply(active((lora, -0.5))).ok
    assert isinstance(net.lin_nb.bias, nn.Parameter)
    torch.testing.assert_close(net.lin_nb.bias.detach(), -0.5 * diff_b)
    x = torch.randn(3, 10)
    torch.testing.assert_close(net.lin_nb(x), x @ (net.lin_nb.weight.detach()).T + -0.5 * diff_b)
    assert patcher.restore() == []
    assert net.lin_nb.bias is None and [n for n, _ in net.named_parameters()] == names
    assert snapshot(net) == before


def test_strategies_keep_the_parameter_objects_swap_restores_the_original_storage():
    for strategy in STRATEGIES:
        net = tiny_net()
        params = {n: p for n, p in net.named_parameters()}
        ptrs = {n: p.data_ptr() for n, p in params.items()}
        patcher = Patcher(strategy)
        patcher.apply(active((plain_lora(net, "p"), 1.0)))
        assert {n: p for n, p in net.named_parameters()} == params  # same objects
        moved = {n for n, p in params.items() if p.data_ptr() != ptrs[n]}
        assert (moved == {"lin.weight", "lin_nb.weight", "conv.weight", "conv1.weight", "mha.in_proj_weight",
                          "mha.out_proj.weight"}) if strategy == "swap" else not moved  # fmt: skip
        assert patcher.held_bytes() > 0
        patcher.restore()
        assert {n: p.data_ptr() for n, p in net.named_parameters()} == ptrs and patcher.held_bytes() == 0


def test_auto_strategy_swaps_cpu_parameters_and_copies_views_and_plain_tensors():
    p = nn.Parameter(torch.randn(4, 4))
    assert choose_strategy(p, "auto") == "swap" and choose_strategy(p, "copy") == "copy"
    packed = torch.randn(8, 4)
    view = nn.Parameter(packed[4:])  # shares a larger storage: swapping .data would break the aliasing
    assert choose_strategy(view, "auto") == "copy" and choose_strategy(view, "swap") == "copy"
    assert choose_strategy(torch.randn(3, 3), "swap") == "copy"
    with pytest.raises(ValueError):
        Patcher("fast")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_exception_inside_apply_restores_the_model_and_names_the_layer(strategy):
    net = tiny_net()
    pristine = snapshot(net)
    rng = random.Random(10)
    good = random_lora(net, "good", rng)
    conv = next(tg for tg, _ in targets(net) if tg.path == "conv1")
    bad = ResolvedLora("bad", "/bad", {conv: LayerAdapter("no-such-algo", {"x": torch.ones(1)})})
    patcher = Patcher(strategy)
    patcher.apply(active((good, 1.0)))
    result = patcher.apply(active((good, 0.5), (bad, 1.0)))
    assert result.failed and not result.ok and not patcher.is_patched
    err = [p for p in result.problems if p.severity == "error"]
    assert len(err) == 1 and "conv1" in err[0].message and "bad" in err[0].subject
    assert snapshot(net) == pristine
    assert patcher.apply(active((good, 1.0))).ok and patcher.is_patched  # usable afterwards


def test_a_failure_after_weights_were_written_in_place_is_undone(monkeypatch):
    import lora_ext.patcher as patcher_module

    real = patcher_module.compute_slot
    calls = []

    def flaky(slot, *args, **kwargs):
        out = real(slot, *args, **kwargs)  # copy strategy: the weight is already modified in place here
        calls.append(slot.label)
        if len(calls) == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return out

    monkeypatch.setattr(patcher_module, "compute_slot", flaky)
    net = tiny_net()
    pristine = snapshot(net)
    result = Patcher("copy").apply(active((plain_lora(net, "p"), 1.0)))
    assert (
        result.failed
        and calls[2] in result.problems[-1].message
        and "out of memory" in result.problems[-1].message
    )
    assert snapshot(net) == pristine


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_failure_while_switching_sets_restores_the_pristine_model(strategy, monkeypatch):
    """A switch writes the new sum over the tensors the previous set installed; a failure then must still end in W₀."""
    import lora_ext.patcher as patcher_module

    net = tiny_net()
    pristine = snapshot(net)
    patcher = Patcher(strategy)
    torch.manual_seed(13)
    first, second = plain_lora(net, "first"), plain_lora(net, "second", rank=3)
    patcher.apply(active((first, 1.0)))
    real = patcher_module.compute_slot
    calls = []

    def flaky(slot, *args, **kwargs):
        out = real(slot, *args, **kwargs)
        calls.append(slot.label)
        if len(calls) == 4:
            raise RuntimeError("simulated failure")
        return out

    monkeypatch.setattr(patcher_module, "compute_slot", flaky)
    result = patcher.apply(active((second, -0.7)))
    assert result.failed and calls[3] in result.problems[-1].message
    assert snapshot(net) == pristine and not patcher.is_patched
    monkeypatch.setattr(patcher_module, "compute_slot", real)
    patcher.apply(active((first, 1.0)))
    installed = {n: p.data_ptr() for n, p in net.named_parameters()}
    # a successful switch writes over the tensors installed last time: no new allocation
    patcher.apply(active((second, -0.7)))
    assert {n: p.data_ptr() for n, p in net.named_parameters()} == installed
    patcher.restore()
    assert snapshot(net) == pristine


def test_shape_mismatch_skips_the_layer_with_a_warning_and_applies_the_rest():
    net = tiny_net()
    tg = {t.path: t for t, _ in targets(net)}
    wrong = LayerAdapter(
        "lora", {"up": torch.randn(7, 2), "down": torch.randn(2, 12)}, keys=("lora_unet_lin.lora_up",)
    )
    right = LayerAdapter("lora", {"up": torch.randn(6, 2), "down": torch.randn(2, 4, 3, 3)})
    lora = ResolvedLora("mixed", "/mixed", {tg["lin"]: wrong, tg["conv"]: right})
    before = snapshot(net)
    result = Patcher().apply(active((lora, 1.0)))
    assert result.ok and result.patched == 1
    (warning,) = result.problems
    assert warning.severity == "warning" and warning.subject == "mixed" and "lin" in warning.message
    after = snapshot(net)
    assert after["lin.weight"] == before["lin.weight"] and after["conv.weight"] != before["conv.weight"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_verify_detects_reloaded_weights_and_drop_backups_keeps_them(strategy):
    net = tiny_net()
    pristine_sd = {k: v.clone() for k, v in net.state_dict().items()}
    tg = next(t for t, _ in targets(net) if t.path == "lin_nb")
    lora = plain_lora(net, "p")
    lora.layers[tg] = LayerAdapter("full", {"diff": torch.randn(12, 10), "diff_b": torch.randn(12)})
    patcher = Patcher(strategy)
    patcher.apply(active((lora, 1.0)))
    fp = patcher.fingerprint()
    assert patcher.verify() and fp == patcher.fingerprint()
    net.load_state_dict(pristine_sd, strict=False)  # a checkpoint switch loading weights in place
    assert not patcher.verify()
    patcher.drop_backups()
    assert not patcher.is_patched and net.lin_nb.bias is None and patcher.held_bytes() == 0
    assert snapshot(net) == snapshot(_loaded(pristine_sd))
    # without drop_backups, apply notices replaced tensors and re-applies on top of the new weights
    patcher.apply(active((lora, 1.0)))
    patched = snapshot(net)
    net.load_state_dict(pristine_sd, strict=False)
    net.lin_nb.bias = None
    redo = patcher.apply(active((lora, 1.0)))
    assert redo.changed and snapshot(net) == patched


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_restore_after_the_host_moved_the_patched_tensors(strategy):
    """``module.to(device)`` (A1111 low-VRAM modes) replaces ``.data`` with a copy: a plain restore must not touch
    it (it could be a reloaded checkpoint), ``restore(moved=True)`` copies the pristine values into it."""
    net = tiny_net()
    pristine = snapshot(net)
    patcher = Patcher(strategy)
    patcher.apply(active((plain_lora(net, "p"), 1.0)))
    patched = snapshot(net)
    for module in (net.lin, net.conv, net.mha):
        for p in module.parameters(recurse=False):
            p.data = p.data.clone()
    assert not patcher.verify()
    problems = patcher.restore()
    assert problems and all(p.severity == "warning" for p in problems)
    assert snapshot(net)["lin.weight"] == patched["lin.weight"] != pristine["lin.weight"]
    assert snapshot(net)["conv1.weight"] == pristine["conv1.weight"]  # not moved: restored as usual
    net = tiny_net()
    patcher.apply(active((plain_lora(net, "q"), -1.0)))
    for p in net.lin.parameters():
        p.data = p.data.clone()
    assert patcher.restore(moved=True) == []
    assert snapshot(net) == pristine and patcher.held_bytes() == 0


def _loaded(state_dict):
    net = tiny_net(seed=123)
    net.load_state_dict(state_dict)
    return net


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_apply_under_autocast_and_inference_mode_gives_the_same_bits(strategy):
    nets = [tiny_net(), tiny_net()]
    rng = random.Random(11)
    loras = [random_lora(nets[0], "x", rng), plain_lora(nets[0], "y")]
    mods = dict(nets[1].named_modules())
    loras2 = [
        ResolvedLora(x.name, x.path, {_retarget(k, mods): v for k, v in x.layers.items()}) for x in loras
    ]
    Patcher(strategy).apply(active((loras[0], 0.8), (loras[1], -0.3)))
    patcher = Patcher(strategy)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert patcher.apply(active((loras2[0], 0.8), (loras2[1], -0.3))).ok
    assert snapshot(nets[0]) == snapshot(nets[1])
    out = nets[1](torch.randn(2, 12), torch.randn(1, 4, 5, 5), torch.randn(3, 1, D_MHA))
    sum(o.sum() for o in out).backward()  # outside inference mode the patched parameters are ordinary tensors
    patcher.restore()
    assert snapshot(nets[1]) == snapshot(tiny_net())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_concurrent_apply_and_restore_never_corrupt_the_weights(strategy):
    net = tiny_net()
    pristine = snapshot(net)
    rng = random.Random(12)
    loras = [random_lora(net, f"t{i}", rng) for i in range(3)]
    patcher = Patcher(strategy)
    errors = []

    def applier():
        try:
            for i in range(40):
                patcher.apply(active((loras[i % 3], 0.5 + i % 2), (loras[(i + 1) % 3], -0.5)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def restorer():
        try:
            for _ in range(40):
                patcher.restore()
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=applier), threading.Thread(target=restorer)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    patcher.restore()
    assert snapshot(net) == pristine and not patcher.is_patched


def test_a_parameter_shared_by_two_modules_is_one_tensor_to_the_patcher():
    a, b = nn.Linear(6, 6), nn.Linear(6, 6)
    b.weight = a.weight  # tied
    pristine = a.weight.detach().clone()
    ta, tb = Target("unet", "a", "a", module=a), Target("unet", "b", "b", module=b)
    up, down = torch.randn(6, 1), torch.randn(1, 6)
    lora = ResolvedLora("tied", "/t", {ta: LayerAdapter("lora", {"up": up, "down": down})})
    other = ResolvedLora("tied2", "/t2", {tb: LayerAdapter("lora", {"up": up, "down": down})})
    patcher = Patcher()
    result = patcher.apply(active((lora, 1.0), (other, 1.0)))
    assert result.patched == 1 and b.weight is a.weight
    torch.testing.assert_close(a.weight.detach(), pristine + 2 * up @ down)
    patcher.restore()
    assert torch.equal(a.weight.detach(), pristine) and b.weight is a.weight


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_same_file_under_two_tag_names_sums_like_under_one_name(dtype, fuse):
    """The summation order depends on the file and the multipliers, never on the tag name the user typed."""
    snaps = []
    for names in (("a", "b"), ("x", "x"), ("b", "a")):
        net = tiny_net(dtype)
        base = plain_lora(net, "x", rank=3)
        loras = [ResolvedLora(n, base.path, base.layers) for n in names]
        assert Patcher("copy", fuse=fuse).apply(active((loras[0], 0.5), (loras[1], 0.25))).ok
        snaps.append(snapshot(net))
    assert snaps[0] == snaps[1] == snaps[2]
    assert snaps[0] != snapshot(tiny_net(dtype))
