"""LyCORIS files written by lycoris-lora itself resolve with zero unmatched keys and exactly the wrapped layers.

Kohya-style names come from ``lycoris.kohya.create_network`` with a preset for diffusers class names (STACK.md),
``lycoris_`` names from ``lycoris.create_lycoris`` (FORMATS.md §3 rows 5–15, 17, 23). The expected layer of each
LyCORIS module is its own ``org_module`` object, looked up by identity in the tiny pipeline it was built on.
"""

from __future__ import annotations

import logging

import pytest
import toml
import torch
from tiny_models import a1111_model

from lora_ext.demo import build_tiny_pipeline
from lora_ext.formats import read_lora_file
from lora_ext.keys import ModelParts, TargetIndex, resolve

PRESET = {
    "unet_target_module": ["Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"],
    "text_encoder_target_module": ["CLIPAttention", "CLIPMLP"],
}

# (algo kwargs, expected algorithm name, a part every adapter of this kind has)
CASES = {
    "locon": ({"algo": "lora"}, "lora", "down"),
    "locon_tucker": ({"algo": "locon", "use_tucker": True}, "lora", "down"),
    "loha": ({"algo": "loha"}, "loha", "hada_w1_a"),
    "lokr": ({"algo": "lokr"}, "lokr", "lokr_w1"),
    "full": ({"algo": "full"}, "full", "diff"),
    "ia3": ({"algo": "ia3"}, "ia3", "weight"),
    "glora": ({"algo": "glora"}, "glora", "a1"),
    "diag_oft": ({"algo": "diag-oft"}, "oft", "oft_blocks"),
    "boft": ({"algo": "boft"}, "boft", "oft_blocks"),
    "dora": ({"algo": "lora", "dora_wd": True}, "lora", "dora_scale"),
}


@pytest.fixture(autouse=True)
def restore_lycoris_presets():
    """lycoris-lora keeps presets as class attributes; put them back after each test."""
    from lycoris import LycorisNetwork
    from lycoris.kohya import LycorisNetworkKohya

    saved = {cls: dict(vars(cls)) for cls in (LycorisNetwork, LycorisNetworkKohya)}
    yield
    for cls, attrs in saved.items():
        for name, value in attrs.items():
            if name.isupper():
                setattr(cls, name, value)


@pytest.fixture(scope="module")
def preset_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "tiny.toml"
    path.write_text(toml.dumps(PRESET))
    return str(path)


def write_kohya_lycoris(path, family: str, preset: str, **kwargs):
    """Build a LyCORIS kohya network on a fresh tiny pipeline, save it, return {(component, module path)}."""
    from lycoris.kohya import create_network

    logging.disable(logging.WARNING)
    try:
        pipe = build_tiny_pipeline(family, 0)
        encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
        te_arg = encoders if family == "sdxl" else pipe.text_encoder
        torch.manual_seed(2)
        net = create_network(
            1.0, 4, 2.0, None, te_arg, pipe.unet, preset=preset, conv_dim=4, conv_alpha=1, **kwargs
        )
        net.apply_to(te_arg, pipe.unet, True, True)
        net.save_weights(str(path), None, None)
    finally:
        logging.disable(logging.NOTSET)
    roots = {"unet": pipe.unet, "te1": pipe.text_encoder}
    if family == "sdxl":
        roots["te2"] = pipe.text_encoder_2
    owners = {id(m): (c, n) for c, root in roots.items() for n, m in root.named_modules()}
    return {owners[id(lora.org_module[0])] for lora in net.unet_loras + net.text_encoder_loras}


@pytest.mark.parametrize("case", list(CASES))
def test_kohya_lycoris_sd1(tmp_path, preset_file, case):
    kwargs, algo, part = CASES[case]
    path = tmp_path / f"{case}.safetensors"
    expected = write_kohya_lycoris(path, "sd1", preset_file, **kwargs)
    result = resolve(
        read_lora_file(path),
        TargetIndex.build(ModelParts.from_diffusers(build_tiny_pipeline("sd1", 0))),
        case,
    )
    assert result.unmatched == []
    assert {(t.component, t.path) for t in result.layers} == expected
    assert {a.algo for a in result.layers.values()} == {algo}
    assert all(part in a.tensors for a in result.layers.values())
    if case == "locon_tucker":
        assert any("mid" in a.tensors for a in result.layers.values())
    if case == "dora":
        assert all(a.dora_axis is None for a in result.layers.values())  # decided from the shape (§10.8)
    assert result.report.verdict == "ok" and result.report.algorithms == [algo]


def test_norm_layers_train_norm(tmp_path, preset_file):
    path = tmp_path / "norm.safetensors"
    expected = write_kohya_lycoris(path, "sd1", preset_file, algo="lora", train_norm=True)
    result = resolve(
        read_lora_file(path), TargetIndex.build(ModelParts.from_diffusers(build_tiny_pipeline("sd1", 0))), "n"
    )
    assert result.unmatched == []
    assert {(t.component, t.path) for t in result.layers} == expected
    norms = [a for a in result.layers.values() if a.algo == "norm"]
    assert norms and all({"w_norm", "b_norm"} <= a.tensors.keys() for a in norms)


@pytest.mark.parametrize("case", ["loha", "boft"])
def test_kohya_lycoris_sdxl_on_diffusers_and_a1111(tmp_path, preset_file, case):
    kwargs, algo, _ = CASES[case]
    path = tmp_path / f"xl_{case}.safetensors"
    expected = write_kohya_lycoris(path, "sdxl", preset_file, **kwargs)
    file = read_lora_file(path)
    on_diffusers = resolve(
        file, TargetIndex.build(ModelParts.from_diffusers(build_tiny_pipeline("sdxl", 0))), case
    )
    assert on_diffusers.unmatched == []
    assert {(t.component, t.path) for t in on_diffusers.layers} == expected
    on_a1111 = resolve(file, TargetIndex.build(ModelParts.from_a1111(a1111_model("sdxl", 0))), case)
    assert on_a1111.unmatched == []
    assert {(t.component, t.canonical) for t in on_a1111.layers} == expected


def test_create_lycoris_prefix(tmp_path):
    """``create_lycoris`` on the UNet writes ``lycoris_<diffusers path>`` keys (row 23)."""
    from lycoris import LycorisNetwork, create_lycoris

    pipe = build_tiny_pipeline("sd1", 0)
    LycorisNetwork.apply_preset({"target_module": ["Transformer2DModel"]})
    logging.disable(logging.WARNING)
    try:
        net = create_lycoris(pipe.unet, 1.0, linear_dim=4, linear_alpha=2, algo="lokr", factor=4)
        net.apply_to()
        path = tmp_path / "simpletuner.safetensors"
        net.save_weights(str(path), None, None)
    finally:
        logging.disable(logging.NOTSET)
    owners = {id(m): n for n, m in pipe.unet.named_modules()}
    expected = {("unet", owners[id(lora.org_module[0])]) for lora in net.loras}
    file = read_lora_file(path)
    assert all(k.startswith("lycoris_") for k in file.tensors)
    result = resolve(file, TargetIndex.build(ModelParts.from_diffusers(build_tiny_pipeline("sd1", 0))), "st")
    assert result.unmatched == []
    assert {(t.component, t.path) for t in result.layers} == expected
    assert result.report.algorithms == ["lokr"]
