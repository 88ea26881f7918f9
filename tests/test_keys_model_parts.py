"""``ModelParts`` from diffusers pipelines / component dicts and from A1111-shaped models; ``TargetIndex`` layouts."""

from __future__ import annotations

import pytest
from tiny_models import a1111_model
from torch import nn

from lora_ext.demo import build_tiny_pipeline
from lora_ext.keys import ModelParts, TargetIndex


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_family_from_diffusers_structure(family):
    pipe = build_tiny_pipeline(family, 0)
    parts = ModelParts.from_diffusers(pipe)
    assert (
        parts.family == family and parts.architecture == {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}[family]
    )
    as_dict = ModelParts.from_diffusers({"unet": pipe.unet, "text_encoder": pipe.text_encoder})
    assert set(as_dict.text_encoders) == {"te1"}
    assert ModelParts.from_diffusers(pipe, family="SD2").architecture == "SD2"


@pytest.mark.parametrize(
    ("family", "layouts"),
    [
        ("sd1", {"unet": "compvis", "te1": "hf_clip"}),
        ("sd2", {"unet": "compvis", "te1": "openclip"}),
        ("sdxl", {"unet": "compvis", "te1": "hf_clip", "te2": "openclip"}),
    ],
)
def test_a1111_parts_and_layouts(family, layouts):
    model = a1111_model(family, 0)
    parts = ModelParts.from_a1111(model)
    assert parts.family == family
    assert parts.unet is model.model.diffusion_model
    index = TargetIndex.build(parts)
    assert index.layouts == layouts
    assert parts.identity() == ModelParts.from_a1111(model).identity()


def test_every_target_points_at_a_real_parameter():
    index = TargetIndex.build(ModelParts.from_a1111(a1111_model("sdxl", 0)))
    kinds = set()
    for target in index.targets:
        weight = getattr(target.module, target.weight)
        assert isinstance(weight, nn.Parameter)
        kinds.add(type(target.module).__name__)
        if target.rows is not None:
            assert 0 <= target.rows[0] < target.rows[1] <= weight.shape[0]
    assert {"Linear", "Conv2d", "GroupNorm", "LayerNorm", "MultiheadAttention"} <= kinds
