"""Every writer of ``tests/lora_writers.py`` (real tools where one exists offline, FORMATS' key tables otherwise)
resolves on the tiny model of its family, diffusers and A1111-style, with zero unmatched keys and exactly the
expected layers (``Written.expected`` = (component, canonical path))."""

from __future__ import annotations

import functools

import lora_writers as w
import pytest
from tiny_models import a1111_model

from lora_ext.demo import build_tiny_pipeline
from lora_ext.formats import read_lora_file
from lora_ext.keys import ModelParts, TargetIndex, resolve


@functools.cache
def pipe(family: str):
    """A shared read-only tiny pipeline (writers deep-copy what they adapt; resolving reads only)."""
    return build_tiny_pipeline(family, 0)


@functools.cache
def index(kind: str, family: str) -> TargetIndex:
    if kind == "diffusers":
        return TargetIndex.build(ModelParts.from_diffusers(pipe(family), family=family))
    return TargetIndex.build(ModelParts.from_a1111(a1111_model(family, 0)))


def check(written, family: str, kinds=("diffusers", "a1111"), name="w"):
    file = read_lora_file(written.path)
    assert not hasattr(file, "message"), file
    for kind in kinds:
        result = resolve(file, index(kind, family), name)
        assert result.unmatched == [], (kind, result.unmatched[:5])
        assert {(t.component, t.canonical) for t in result.layers} == set(written.expected), kind
        assert result.report.verdict == "ok", (kind, result.problems)
        assert set(result.embeddings) == set(written.embeddings)
    return result


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("naming", ["diffusers", "compvis", "diffusion_model"])
def test_kohya_namings(tmp_path, family, naming):
    written = w.write_kohya(
        pipe(family), tmp_path / "k.safetensors", family=family, naming=naming, conv_dim=2
    )
    check(written, family)


@pytest.mark.parametrize(
    ("family", "options"),
    [
        ("sd1", {"suffix": "peft"}),
        ("sd1", {"algo": "tucker", "conv_dim": 2}),
        ("sd1", {"dora": "out"}),
        ("sd2", {"dora": "in"}),
        ("sdxl", {"algo": "oft"}),
        ("sd1", {"dyn": True, "alpha": None}),
        ("sd1", {"embeddings": {"tok": 2}}),
        ("sdxl", {"embeddings": {"tok": 1}}),
    ],
)
def test_kohya_variants(tmp_path, family, options):
    written = w.write_kohya(pipe(family), tmp_path / "v.safetensors", family=family, **options)
    result = check(written, family)
    if options.get("dora"):
        assert all("dora_scale" in a.tensors for a in result.layers.values())
    if options.get("alpha", 2.0) is None:
        assert all(a.alpha is None for a in result.layers.values())


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_comfyui(tmp_path, family):
    check(w.write_comfyui(pipe(family), tmp_path / "c.safetensors", family=family), family)


@pytest.mark.parametrize("component", ["unet", "te1"])
def test_cloneofsimo_pt(tmp_path, component):
    check(w.write_cloneofsimo_pt(pipe("sd1"), tmp_path / f"{component}.pt", component=component), "sd1")


def test_safeloras(tmp_path):
    check(w.write_safeloras(pipe("sd1"), tmp_path / "s.safetensors"), "sd1")


@pytest.mark.parametrize(
    "algo", ["locon", "loha", "lokr", "full", "ia3", "glora", "diag-oft", "boft", "norm", "dora"]
)
def test_lycoris_sd1(tmp_path, algo):
    check(w.write_lycoris(pipe("sd1"), tmp_path / f"{algo}.safetensors", algo=algo, conv=True), "sd1")


def test_lycoris_sd2_on_openclip(tmp_path):
    check(w.write_lycoris(pipe("sd2"), tmp_path / "l.safetensors", algo="loha"), "sd2")


def test_lycoris_prefixed(tmp_path):
    check(w.write_lycoris_prefixed(pipe("sd1"), tmp_path / "p.safetensors"), "sd1")


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_peft_and_older_diffusers_layouts(tmp_path, family):
    comps = ("unet", "te1", "te2") if family == "sdxl" else ("unet", "te1")
    written = w.write_peft_lora(pipe(family), tmp_path / "p.safetensors", components=comps)
    check(written, family)
    old = w.peft_to_diffusers_021(written.path, tmp_path / "old.safetensors")
    check(w.Written(old, written.expected), family)
    procs = w.peft_to_attn_procs(written.path, tmp_path / "procs.safetensors")
    attn = frozenset(
        e
        for e in written.expected
        if e[1].rsplit(".", 1)[-1] in {"to_q", "to_k", "to_v", "0", "q_proj", "k_proj", "v_proj", "out_proj"}
    )
    check(w.Written(procs, attn), family)


def test_peft_dora(tmp_path):
    written = w.write_peft_lora(
        pipe("sd1"), tmp_path / "d.safetensors", components=("unet", "te1"), use_dora=True
    )
    result = check(written, "sd1")
    assert all(a.dora_axis == "out" and "dora_scale" in a.tensors for a in result.layers.values())


@pytest.mark.parametrize("component", ["unet", "te1"])
def test_raw_peft(tmp_path, component):
    model = pipe("sd1").unet if component == "unet" else pipe("sd1").text_encoder
    kwargs = {} if component == "unet" else {"targets": ["q_proj", "v_proj"]}
    check(w.write_raw_peft(model, tmp_path / "raw", component=component, **kwargs), "sd1")
