"""``build_active_set`` and block weights through the real engine: a zero block stays bit-identical, a changed
``lbw=`` is a new set for the patcher, hires weights (USERS G3, G11), and the diffusers host with ``lbw=``.

LoRA files are written by diffusers + peft for the tiny SD1 pipeline at test time.
"""

from __future__ import annotations

import pytest
import torch

from lora_ext.activation import build_active_set
from lora_ext.adapters import ActiveLora
from lora_ext.blocks import ALL_BLOCKS, parse_block_weights
from lora_ext.engine import LoraLoader
from lora_ext.hosts.diffusers_host import DiffusersHost, find_components
from lora_ext.keys.model_parts import ModelParts
from lora_ext.library import LoraLibrary
from lora_ext.patcher import Patcher
from lora_ext.schedules import StepWindow
from lora_ext.syntax import parse_prompt
from tests.browser_helpers import write_peft_lora


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    write_peft_lora(folder, "style", seed=1)
    write_peft_lora(folder, "other", seed=2)
    return folder


@pytest.fixture
def setup(sd1_pipe, lora_dir):
    library = LoraLibrary([str(lora_dir)])
    library.refresh()
    host = DiffusersHost(sd1_pipe, library)
    return host


def block_vector(**factors: float) -> str:
    """A 26-value lbw list: 1 everywhere except the given blocks."""
    return ",".join(str(factors.get(label, 1.0)) for label in ALL_BLOCKS)


def build(host: DiffusersHost, prompt: str, **kw):
    return build_active_set(
        parse_prompt(prompt).requests,
        host.lookup,
        lambda entry, request: host.loader.resolve(entry.path, host.parts, request.name),
        host.parts.family,
        **kw,
    )


def weights_by_block(resolved) -> dict[str, list[torch.Tensor]]:
    out: dict[str, list[torch.Tensor]] = {}
    for target in resolved.layers:
        out.setdefault(target.block, []).append(getattr(target.module, target.weight).detach().clone())
    return out


def test_zero_block_weight_leaves_that_block_bit_identical_and_patches_the_others(setup):
    found = build(setup, f"<lora:style:0.9:lbw={block_vector(MID=0, IN01=0)}>")
    assert len(found.active) == 1 and found.problems == []
    resolved = found.used[0][2]
    before = weights_by_block(resolved)
    assert {"MID", "IN01", "BASE"} <= set(before)
    patcher = Patcher()
    assert patcher.apply(found.active).ok
    after = weights_by_block(resolved)
    for block in ("MID", "IN01"):
        assert all(torch.equal(a, b) for a, b in zip(before[block], after[block], strict=True))
    for block in set(before) - {"MID", "IN01"}:
        assert not all(torch.equal(a, b) for a, b in zip(before[block], after[block], strict=True)), block
    patcher.restore()
    assert all(
        torch.equal(a, b)
        for block in before
        for a, b in zip(before[block], weights_by_block(resolved)[block], strict=True)
    )


def test_changed_block_weights_are_a_different_set_for_the_patcher(setup):
    resolved = build(setup, "<lora:style:1>").used[0][2]
    half = parse_block_weights(block_vector(MID=0.5), "sd1")
    zero = parse_block_weights(block_vector(MID=0), "sd1")
    patcher = Patcher()
    patcher.apply([ActiveLora(resolved, blocks=half)])
    result = patcher.apply([ActiveLora(resolved, blocks=zero)])
    assert result.changed
    got = weights_by_block(resolved)
    patcher.restore()
    fresh = Patcher()
    fresh.apply([ActiveLora(resolved, blocks=zero)])
    want = weights_by_block(resolved)
    fresh.restore()
    assert all(torch.equal(a, b) for k in got for a, b in zip(got[k], want[k], strict=True))


@pytest.mark.parametrize(
    ("tag", "hires", "te", "unet"),
    [
        ("<lora:style:0.8>", True, 0.8, 0.8),  # no hr=: the first-pass weights, never reset to 1
        ("<lora:style:0.8:hr=0.3>", False, 0.8, 0.8),
        ("<lora:style:0.8:hr=0.3>", True, 0.3, 0.3),
        ("<lora:style:0.8:0.6:hrte=0.2>", True, 0.2, 0.6),
        ("<lora:style:0.8:hr=0.3:hrunet=-1>", True, 0.3, -1.0),
        ("<lora:style:0.8:hrte=0>", True, 0.0, 0.8),
    ],
)
def test_hires_weights(setup, tag, hires, te, unet):
    found = build(setup, tag, hires=hires)
    assert [(a.te, a.unet) for a in found.active] == [(te, unet)]


def test_hr_zero_drops_the_lora_from_the_hires_pass_only(setup):
    tag = "<lora:style:0.8:hr=0> <lora:other:0.5>"
    hires = build(setup, tag, hires=True)
    assert [used[0].name for used in hires.used] == ["other"]
    assert [r.name for r in hires.dropped] == ["style"]
    assert [used[0].name for used in build(setup, tag).used] == ["style", "other"]


def test_block_weights_apply_in_the_hires_pass_too(setup):
    found = build(setup, "<lora:style:1:hr=0.5:lbw=OUTD>", hires=True)
    assert found.active[0].blocks == parse_block_weights("OUTD", "sd1")
    assert found.active[0].unet == 0.5


def test_bad_arguments_skip_only_their_tag_and_step_windows_apply(setup):
    found = build(
        setup,
        "<lora:style:1:lbw=1,2> <lora:other:1:hr=high> <lora:other:1:stop=ten> <lora:style:0.5:start=3> "
        "<lora:nope:1>",
    )
    errors = [p for p in found.problems if p.severity == "error"]
    assert "2 values" in errors[0].message and errors[0].subject == "<lora:style:1:lbw=1,2>"
    assert 'hr="high"' in errors[1].message
    assert 'stop="ten"' in errors[2].message and "stop=10" in errors[2].message
    assert not [p for p in found.problems if "start=" in p.message]  # G4: supported, no warning
    assert [(r.name, a.te) for (r, _, _), a in zip(found.used, found.active, strict=True)] == [("style", 0.5)]
    assert found.active[0].schedule.window == StepWindow(start=3)
    assert found.active[0].unet == 0.0  # the set as built is the first step's: off until step 3
    assert [name for name, _ in found.not_found] == ["nope"]


def test_random_block_weights_follow_the_host_seed(setup):
    tag = "<lora:style:1:lbw=R,R,R,R,R,R,R,R,R,R,R,R,R,R,R,R,R>"
    a = build(setup, tag, seed=11).active[0].blocks
    assert build(setup, tag, seed=11).active[0].blocks == a
    assert build(setup, tag, seed=12).active[0].blocks != a


def state(pipe) -> dict[str, torch.Tensor]:
    parts = ModelParts.from_diffusers(find_components(pipe))
    return {
        f"{c}.{k}": v.detach().clone() for c, m in parts.modules().items() for k, v in m.state_dict().items()
    }


def test_diffusers_host_applies_lbw_like_the_engine_and_restores(setup, make_pipeline, lora_dir):
    host = setup
    original = state(host.pipe)
    with host.applied("a cat <lora:style:0.7:lbw=MIDD>") as applied:
        assert applied.active[0].blocks == parse_block_weights("MIDD", "sd1")
        patched = state(host.pipe)
    assert all(torch.equal(original[k], v) for k, v in state(host.pipe).items())

    ref = make_pipeline("sd1", 0)
    parts = ModelParts.from_diffusers(ref)
    resolved = LoraLoader().resolve(str(lora_dir / "style.safetensors"), parts, "style")
    Patcher().apply([ActiveLora(resolved, te=0.7, unet=0.7, blocks=parse_block_weights("MIDD", "sd1"))])
    expected = state(ref)
    assert patched.keys() == expected.keys()
    assert all(torch.equal(patched[k], expected[k]) for k in patched)
    assert any(not torch.equal(patched[k], original[k]) for k in patched)
    # a block the preset zeroes (IN01 holds attention in the tiny SD1 UNet) is untouched
    in01 = [k for k in patched if k.startswith("unet.down_blocks.0.attentions.0.")]
    assert in01 and all(torch.equal(patched[k], original[k]) for k in in01)


def test_diffusers_host_prepare_hires(setup):
    applied = setup.prepare("a cat <lora:style:0.7:hr=0.2>", hires=True)
    assert [(a.te, a.unet) for a in applied.active] == [(0.2, 0.2)]
    assert setup.prepare("a cat <lora:style:0.7:hr=0>", hires=True).active == []


@pytest.mark.parametrize("algo", ["loha", "dora"])
def test_block_weights_work_with_lycoris_and_dora_files(sd1_pipe, tmp_path, algo):
    """G5: a LyCORIS LoHa and a DoRA file written by lycoris-lora: a zeroed block stays bit-identical, the rest moves."""
    from tests.lora_writers import write_lycoris

    write_lycoris(sd1_pipe, tmp_path / f"{algo}.safetensors", algo=algo, strength=0.3)
    library = LoraLibrary([str(tmp_path)])
    library.refresh()
    host = DiffusersHost(sd1_pipe, library)
    found = build(host, f"<lora:{algo}:0.7:lbw={block_vector(MID=0)}>")
    assert [p for p in found.problems if p.severity == "error"] == [] and len(found.active) == 1
    resolved = found.used[0][2]
    before = weights_by_block(resolved)
    patcher = Patcher()
    assert patcher.apply(found.active).ok
    after = weights_by_block(resolved)
    patcher.restore()
    assert all(torch.equal(a, b) for a, b in zip(before["MID"], after["MID"], strict=True))
    moved = [
        b
        for b in before
        if b != "MID" and any(not torch.equal(x, y) for x, y in zip(before[b], after[b], strict=True))
    ]
    assert len(moved) >= 3, moved


def test_diffusers_host_applied_block_for_a_hires_pass(setup, make_pipeline, lora_dir):
    host = setup
    original = state(host.pipe)
    with host.applied("a cat <lora:style:0.7:hr=0.2>", hires=True) as applied:
        assert [(a.te, a.unet) for a in applied.active] == [(0.2, 0.2)]
        patched = state(host.pipe)
    ref = make_pipeline("sd1", 0)
    resolved = LoraLoader().resolve(
        str(lora_dir / "style.safetensors"), ModelParts.from_diffusers(ref), "style"
    )
    Patcher().apply([ActiveLora(resolved, te=0.2, unet=0.2)])
    assert all(torch.equal(patched[k], v) for k, v in state(ref).items())
    assert all(torch.equal(original[k], v) for k, v in state(host.pipe).items())


def test_unknown_named_arguments_are_ignored_with_a_warning(setup):
    """S3: an option lora_ext does not know (a typo such as ``lwb=``, another extension's key) never stops the
    LoRA, but the user is told it had no effect instead of wondering why the block weights did nothing."""
    found = build(setup, "<lora:style:0.5:lwb=OUTD:mode=fast> <lora:other:1:lbw=OUTD:hr=0.5>")
    assert [a.te for a in found.active] == [0.5, 1.0]
    warnings = [p for p in found.problems if p.severity == "warning"]
    assert len(warnings) == 1, found.problems
    assert warnings[0].subject == "<lora:style:0.5:lwb=OUTD:mode=fast>"
    assert "lwb=" in warnings[0].message and "mode=" in warnings[0].message
    assert "lbw=" in warnings[0].message  # names the options that exist
