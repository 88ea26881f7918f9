"""``DiffusersHost`` end to end on the device: a tiny ``StableDiffusionPipeline`` on the device generates with a
``<lora:…>`` tag and with a step schedule; the weights every step ran with are the engine's, bit for bit, and the
pristine weights come back bit for bit afterwards.

Reference states: the same tiny UNet + text encoder (``gpu_helpers.build_model``, same seed, device and dtype) patched
directly by a ``Patcher`` (default strategy, as the host's) with the multipliers the step should have.
"""

from __future__ import annotations

import pytest
import torch
from gpu_helpers import SEED, assert_bit_identical, build_model, resolve, snapshot
from test_diffusers_schedules import count_applies  # tests/ (on sys.path through gpu_helpers)

from lora_ext.adapters import ActiveLora
from lora_ext.hosts.diffusers_host import DiffusersHost
from lora_ext.library import LoraLibrary
from lora_ext.patcher import Patcher

GEN = dict(height=64, width=64)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def pipeline_on(device: torch.device, dtype: torch.dtype):
    from lora_ext.demo import build_tiny_pipeline

    return build_tiny_pipeline("sd1", SEED).to(device=device, dtype=dtype)


def host_for(pipe, lora_files) -> DiffusersHost:
    library = LoraLibrary([str(lora_files["style"].parent)], cache_path=False)
    library.refresh()
    return DiffusersHost(pipe, library)


def patched_parts(pipe) -> dict:
    return {"unet": pipe.unet, "text_encoder": pipe.text_encoder}


class Reference:
    """The engine's weights for the ``style`` LoRA at given multipliers, on a separate model on the device."""

    def __init__(self, device, dtype, lora_files):
        self.model = build_model(device, dtype)
        self.lora = resolve(self.model, lora_files, ["style"])["style"]
        self.cache: dict[tuple[float, float], dict] = {}

    def state(self, te: float, unet: float) -> dict[str, torch.Tensor]:
        if (te, unet) not in self.cache:
            patcher = Patcher()
            assert patcher.apply([ActiveLora(self.lora, te=te, unet=unet)]).ok
            self.cache[te, unet] = snapshot(self.model)
            assert patcher.restore() == []
        return self.cache[te, unet]


def recorder(seen: list, parts: dict):
    """A caller's ``callback_on_step_end``: records (step, CPU snapshot of the UNet + text encoder)."""

    def callback(pipe, step, timestep, kwargs):
        seen.append((step, snapshot(parts)))
        return kwargs

    return callback


def errors(applied) -> list[str]:
    return [str(p) for p in applied.problems if p.severity == "error"]


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_tagged_generation_runs_patched_on_the_device_and_restores_every_bit(device, lora_files, dtype):
    """2 steps of ``a cat <lora:style:0.7:0.4>`` (te 0.7, UNet 0.4): at both steps the UNet and text encoder hold
    exactly the engine's patched weights (bytes compared), afterwards exactly the pristine ones, nothing is held
    (``held_bytes() == 0``), and the image (PIL bytes) differs from the same seed without the tag."""
    pipe = pipeline_on(device, dtype)
    parts = patched_parts(pipe)
    host = host_for(pipe, lora_files)
    original = snapshot(parts)
    seen: list = []
    tagged = host.generate(
        "a cat <lora:style:0.7:0.4>",
        num_inference_steps=2,
        callback_on_step_end=recorder(seen, parts),
        generator=torch.Generator().manual_seed(3),
        **GEN,
    )
    assert errors(tagged.applied) == [] and len(tagged.applied.active) == 1
    assert (tagged.applied.active[0].te, tagged.applied.active[0].unet) == (0.7, 0.4)
    assert [step for step, _ in seen] == [0, 1]
    want = Reference(device, dtype, lora_files).state(0.7, 0.4)
    for _, weights in seen:
        assert_bit_identical(want, weights)
    assert_bit_identical(original, snapshot(parts))
    assert not host.patcher.is_patched and host.patcher.held_bytes() == 0
    plain = host.generate("a cat", num_inference_steps=2, generator=torch.Generator().manual_seed(3), **GEN)
    assert_bit_identical(original, snapshot(parts))
    assert len(tagged.images) == 1 and tagged.images[0].size == (64, 64)
    assert tagged.images[0].tobytes() != plain.images[0].tobytes()


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_step_schedule_follows_the_steps_on_the_device(device, lora_files, dtype):
    """``<lora:style:0.7:0@0,1@2,1@3,0@4>`` over 6 steps (as tests/test_diffusers_schedules.py): the UNet multiplier
    is 0, 0.5, 1, 1, 0, 0 at steps 0–5 (text encoder 0.7 throughout); the weights seen at each step equal the
    engine's at that multiplier bit for bit, the patcher is called only before steps 0, 1, 2 and 4 (where the
    multiplier changes), and the pristine weights come back bit for bit."""
    pipe = pipeline_on(device, dtype)
    parts = patched_parts(pipe)
    host = host_for(pipe, lora_files)
    original = snapshot(parts)
    seen: list = []
    applies = count_applies(host, seen)
    gen = host.generate(
        "a cat <lora:style:0.7:0@0,1@2,1@3,0@4>",
        num_inference_steps=6,
        callback_on_step_end=recorder(seen, parts),
        generator=torch.Generator().manual_seed(3),
        **GEN,
    )
    assert errors(gen.applied) == []
    assert [step for step, _ in seen] == list(range(6))
    ref = Reference(device, dtype, lora_files)
    for (_, weights), unet in zip(seen, [0.0, 0.5, 1.0, 1.0, 0.0, 0.0], strict=True):
        assert_bit_identical(ref.state(0.7, unet), weights)
    assert applies == [0, 1, 2, 4]
    assert_bit_identical(original, snapshot(parts))
    assert not host.patcher.is_patched and host.patcher.held_bytes() == 0
