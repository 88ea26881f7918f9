"""Whole-model acceptance of the patcher against real tools (issue 3): files written by real writers, read and
resolved by ``lora_ext``, applied by ``Patcher``, compared with diffusers + PEFT ``load_lora_weights`` +
``fuse_lora(lora_scale=m)`` on the same tiny SD1 pipeline, all in float32.

- LoRA and LoCon: kohya files (diffusers-layout names, ``alpha``), which diffusers converts and PEFT fuses.
- DoRA: a diffusers/PEFT file with ``lora_magnitude_vector``. PEFT folds m into the scaling inside the norm
  (W' = g·(W + m·s·BA)/‖W + m·s·BA‖); our semantics are the linear blend W + m·(W_d − W) (FORMATS.md §10.8). So the
  patched weights equal PEFT's at m = 1, and for other m they equal W₀ + m·(W_PEFT(1) − W₀).
- Tucker: diffusers rejects ``lora_mid`` keys (FORMATS.md §3 row 6), so the reference is LyCORIS's own network
  (its module forward) on a deep copy of the UNet, compared layer by layer on random inputs.
"""

from __future__ import annotations

import pytest
import torch
from lora_writers import write_kohya, write_lycoris, write_peft_lora
from torch import nn

from lora_ext.adapters import ActiveLora, ResolvedLora
from lora_ext.demo import build_tiny_pipeline
from lora_ext.engine import LoraLoader
from lora_ext.keys import ModelParts
from lora_ext.patcher import Patcher

MULTIPLIERS = (-1.5, 0.3, 1.0)
REL = 1e-5


def _weights(pipe) -> dict[str, torch.Tensor]:
    out = {f"unet.{k}": v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    out.update({f"te.{k}": v.detach().clone() for k, v in pipe.text_encoder.state_dict().items()})
    return out


def _ours(path, m: float, strategy: str = "auto") -> tuple[dict[str, torch.Tensor], ResolvedLora]:
    pipe = build_tiny_pipeline("sd1", 0)
    lora = LoraLoader().resolve(str(path), ModelParts.from_diffusers(pipe), "ref")
    assert isinstance(lora, ResolvedLora), lora
    assert not [p for p in lora.problems if p.severity == "error"], lora.problems
    result = Patcher(strategy).apply([ActiveLora(lora, te=m, unet=m)])
    assert result.ok and not result.problems, result.problems
    return _weights(pipe), lora


def _diffusers(path, m: float) -> dict[str, torch.Tensor]:
    pipe = build_tiny_pipeline("sd1", 0)
    pipe.load_lora_weights(str(path.parent), weight_name=path.name)
    pipe.fuse_lora(lora_scale=m)
    pipe.unload_lora_weights()  # PEFT wraps layers as base_layer until unloaded (STACK.md)
    return _weights(pipe)


def _assert_close(got: dict, want: dict, base: dict, min_changed: int) -> None:
    """Every tensor within REL of the reference (relative to the tensor's scale and to its update); untouched
    tensors bit-identical in both; at least ``min_changed`` tensors really changed."""
    assert got.keys() == want.keys()
    changed = 0
    for key, ref in want.items():
        update = (ref - base[key]).abs().max().item()
        if update == 0:
            assert torch.equal(got[key], base[key]), key
            continue
        changed += 1
        err = (got[key] - ref).abs().max().item()
        assert err <= REL * ref.abs().max().item(), (key, err)
        got_update = (got[key] - base[key]).abs().max().item()
        assert abs(got_update - update) <= 1e-3 * update + 1e-6 * ref.abs().max().item(), (
            key,
            got_update,
            update,
        )
    assert changed >= min_changed, changed


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref_loras")
    pipe = build_tiny_pipeline("sd1", 0)
    return {
        "lora": write_kohya(pipe, folder / "lora.safetensors", rank=4, alpha=2.0, strength=0.2),
        "locon": write_kohya(
            pipe, folder / "locon.safetensors", rank=4, alpha=2.0, conv_dim=3, conv_alpha=1.5, strength=0.2
        ),  # fmt: skip
        "dora": write_peft_lora(
            pipe,
            folder / "dora.safetensors",
            rank=4,
            alpha=8.0,
            use_dora=True,
            components=("unet", "te1"),
            strength=0.2,
        ),  # fmt: skip
        "tucker": write_lycoris(
            pipe,
            folder / "tucker.safetensors",
            algo="locon",
            rank=4,
            alpha=2.0,
            conv=True,
            conv_dim=3,
            conv_alpha=3.0,
            use_tucker=True,
            strength=0.2,
        ),  # fmt: skip
    }


@pytest.mark.parametrize("m", MULTIPLIERS)
@pytest.mark.parametrize("kind", ["lora", "locon"])
def test_lora_and_locon_equal_diffusers_peft_fuse(files, kind, m):
    path = files[kind].path
    base = _weights(build_tiny_pipeline("sd1", 0))
    ours, lora = _ours(path, m, strategy="swap" if m > 0 else "copy")
    conv_targets = sum(1 for t in lora.layers if getattr(t.module, t.weight).dim() == 4)
    assert (conv_targets > 4) if kind == "locon" else True
    _assert_close(ours, _diffusers(path, m), base, min_changed=len(lora.layers))


@pytest.mark.parametrize("m", MULTIPLIERS)
def test_peft_dora_equals_peft_fuse_at_one_and_its_linear_blend_elsewhere(files, m):
    path = files["dora"].path
    base = _weights(build_tiny_pipeline("sd1", 0))
    ours, lora = _ours(path, m)
    at_one = _diffusers(path, 1.0)
    want = {k: base[k] + m * (at_one[k] - base[k]) for k in base}  # FORMATS.md §10.8: W + m·(W_d − W)
    _assert_close(ours, want, base, min_changed=len(lora.layers))
    if (
        m != 1.0
    ):  # PEFT's own m-convention really differs (so the blend above is a real decision, not a no-op)
        peft_m = _diffusers(path, m)
        assert any((peft_m[k] - want[k]).abs().max() > 1e-4 for k in want)


@pytest.mark.parametrize("m", MULTIPLIERS)
def test_tucker_locon_equals_lycoris_forward(files, m):
    written = files["tucker"]
    network, ref_unet = written.reference["network"], written.reference["unet"]
    network.set_multiplier(m)
    pipe = build_tiny_pipeline("sd1", 0)
    lora = LoraLoader().resolve(str(written.path), ModelParts.from_diffusers(pipe), "tucker")
    assert isinstance(lora, ResolvedLora) and lora.layers
    assert any("mid" in a.tensors for a in lora.layers.values())  # Tucker really present
    assert Patcher().apply([ActiveLora(lora, te=m, unet=m)]).ok
    ref_modules = dict(ref_unet.named_modules())
    gen = torch.Generator().manual_seed(0)
    compared = 0
    with torch.no_grad():
        for target in lora.layers:
            if target.component != "unet":
                continue
            ours, ref = target.module, ref_modules[target.path]
            if isinstance(ours, nn.Conv2d):
                x = torch.randn(2, ours.in_channels, 8, 8, generator=gen)
            else:
                x = torch.randn(3, ours.in_features, generator=gen)
            want, got = ref(x), ours(x)
            assert (got - want).abs().max() <= REL * want.abs().max(), target.canonical
            compared += 1
    assert compared == len([t for t in lora.layers if t.component == "unet"]) > 8


def test_zero_multiplier_leaves_the_real_pipeline_bit_identical(files):
    base = _weights(build_tiny_pipeline("sd1", 0))
    for kind in ("lora", "locon", "dora", "tucker"):
        pipe = build_tiny_pipeline("sd1", 0)
        lora = LoraLoader().resolve(str(files[kind].path), ModelParts.from_diffusers(pipe), kind)
        result = Patcher().apply([ActiveLora(lora, te=0.0, unet=0.0)])
        assert result.ok and not result.changed
        after = _weights(pipe)
        assert all(torch.equal(after[k], base[k]) for k in base), kind
