"""Step schedules on the tiny diffusers pipeline (USERS G4, G6–G8): at every denoising step the UNet holds the
pristine weights plus that step's interpolated multiplier times the LoRA's update (bit for bit the engine's on a
fresh pipeline), only steps whose multiplier changed re-patch, a caller's ``callback_on_step_end`` still runs, and
the weights are restored bit-exactly afterwards."""

from __future__ import annotations

import pytest
import torch

from lora_ext.adapters import ActiveLora
from lora_ext.engine import LoraLoader
from lora_ext.hosts.diffusers_host import DiffusersHost
from lora_ext.keys.model_parts import ModelParts
from lora_ext.patcher import Patcher
from tests.browser_helpers import write_peft_lora
from tests.test_diffusers_host import assert_bit_identical, host_for, moved_around_each_forward, state

GEN = dict(height=64, width=64)


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schedule_loras")
    write_peft_lora(folder, "style", seed=1)
    return folder


class Reference:
    """The engine applied directly to a fresh tiny pipeline: the state it holds at given multipliers."""

    def __init__(self, make_pipeline, lora_dir):
        self.pipe = make_pipeline("sd1", 0)
        parts = ModelParts.from_diffusers(self.pipe)
        self.lora = LoraLoader().resolve(str(lora_dir / "style.safetensors"), parts, "style")

    def state(self, te: float, unet: float) -> dict[str, torch.Tensor]:
        patcher = Patcher()
        patcher.apply([ActiveLora(self.lora, te=te, unet=unet)])
        try:
            return state(self.pipe)
        finally:
            patcher.restore()


def recorder(seen: list):
    """A caller's ``callback_on_step_end`` recording the weights each step ran with."""

    def callback(pipe, step, timestep, kwargs):
        seen.append((step, state(pipe)))
        return kwargs

    return callback


def count_applies(host: DiffusersHost, seen: list) -> list[int]:
    """Wrap the host's patcher: the number of steps seen at each apply."""
    calls: list[int] = []
    original = host.patcher.apply

    def apply(active):
        calls.append(len(seen))
        return original(active)

    host.patcher.apply = apply
    return calls


def test_keyframes_follow_the_steps_repatch_on_change_and_restore(sd1_pipe, make_pipeline, lora_dir):
    host = host_for(sd1_pipe, lora_dir)
    original = state(sd1_pipe)
    seen: list = []
    applies = count_applies(host, seen)
    gen = host.generate(
        "a cat <lora:style:0.7:0@0,1@2,1@3,0@4>",
        num_inference_steps=6,
        callback_on_step_end=recorder(seen),
        generator=torch.Generator().manual_seed(3),
        **GEN,
    )
    assert [p for p in gen.applied.problems if p.severity == "error"] == []
    ref = Reference(make_pipeline, lora_dir)
    unet = [0.0, 0.5, 1.0, 1.0, 0.0, 0.0]
    assert [step for step, _ in seen] == list(range(6))
    for (_, weights), multiplier in zip(seen, unet, strict=True):
        assert_bit_identical(weights, ref.state(0.7, multiplier))
    assert applies == [0, 1, 2, 4]  # first step, then only the steps whose multiplier changed
    assert_bit_identical(state(sd1_pipe), original)
    assert not host.patcher.is_patched


def test_a_second_order_scheduler_keeps_each_step_for_both_of_its_model_calls(
    sd1_pipe, make_pipeline, lora_dir
):
    """Heun visits each step's timestep twice (the last step once): 4 steps are 7 loop iterations, and both
    iterations of a step run with that step's weights (iteration i is step i // 2, as the webui's Heun counts)."""
    from diffusers import HeunDiscreteScheduler

    sd1_pipe.scheduler = HeunDiscreteScheduler.from_config(sd1_pipe.scheduler.config)
    host = host_for(sd1_pipe, lora_dir)
    original = state(sd1_pipe)
    seen: list = []
    applies = count_applies(host, seen)
    gen = host.generate(
        "a cat <lora:style:0.7:0@0,1@2>", num_inference_steps=4, callback_on_step_end=recorder(seen), **GEN
    )
    assert [p for p in gen.applied.problems if p.severity == "error"] == []
    assert sd1_pipe.num_timesteps == 7 and [i for i, _ in seen] == list(range(7))
    ref = Reference(make_pipeline, lora_dir)
    by_step = [0.0, 0.5, 1.0, 1.0]
    for (_, weights), step in zip(seen, [0, 0, 1, 1, 2, 2, 3], strict=True):
        assert_bit_identical(weights, ref.state(0.7, by_step[step]))
    assert applies == [0, 2, 4]  # the first step, then the first iteration of steps 1 and 2
    assert_bit_identical(state(sd1_pipe), original)


@pytest.mark.parametrize("strategy", ["swap", "copy"])
def test_a_schedule_follows_the_steps_while_the_models_are_moved(sd1_pipe, make_pipeline, lora_dir, strategy):
    """Model CPU offload moves the UNet to the GPU and back around every forward (simulated: ``param.data = clone``
    before each forward), so at each re-patch the patched tensors are moved copies. Each step must still hold the
    pristine weights plus that step's multiplier (not a second patch over the first), and the originals come back."""
    host = host_for(sd1_pipe, lora_dir, strategy)
    original = state(sd1_pipe)
    seen: list = []
    with moved_around_each_forward(sd1_pipe.unet):
        gen = host.generate(
            "a cat <lora:style:0.7:0@0,1@2>",
            num_inference_steps=4,
            callback_on_step_end=recorder(seen),
            **GEN,
        )
    assert [p for p in gen.applied.problems if p.severity != "info"] == []
    ref = Reference(make_pipeline, lora_dir)
    for (_, weights), multiplier in zip(seen, [0.0, 0.5, 1.0, 1.0], strict=True):
        assert_bit_identical(weights, ref.state(0.7, multiplier))
    assert_bit_identical(state(sd1_pipe), original)


def test_step_window_and_fractions_without_a_caller_callback(sd1_pipe, make_pipeline, lora_dir):
    host = host_for(sd1_pipe, lora_dir)
    original = state(sd1_pipe)
    ref = Reference(make_pipeline, lora_dir)
    seen: list = []
    applies = count_applies(host, seen)
    # the window: on for steps 1 and 2 of 4; the host's own callback is the only one
    host.generate("a cat <lora:style:0.5:step=1-3>", num_inference_steps=4, **GEN)
    assert len(applies) == 3  # step 0 (off), step 1 (on), step 3 (off again)
    assert_bit_identical(state(sd1_pipe), original)
    # fractions: 0 at the first step, 1 at the last; weights seen by a caller's callback at each step
    host.generate(
        "a cat <lora:style:1:0@0,1@1>", num_inference_steps=3, callback_on_step_end=recorder(seen), **GEN
    )
    for (_, weights), multiplier in zip(seen, [0.0, 0.5, 1.0], strict=True):
        assert_bit_identical(weights, ref.state(1.0, multiplier))
    assert_bit_identical(state(sd1_pipe), original)


def test_restore_when_a_scheduled_run_raises(sd1_pipe, lora_dir):
    host = host_for(sd1_pipe, lora_dir)
    original = state(sd1_pipe)

    def boom(pipe, step, timestep, kwargs):
        if step == 1:
            raise RuntimeError("interrupted")
        return kwargs

    with pytest.raises(RuntimeError, match="interrupted"):
        host.generate("a cat <lora:style:1:0@0,1@1>", num_inference_steps=4, callback_on_step_end=boom, **GEN)
    assert_bit_identical(state(sd1_pipe), original)
    assert not host.patcher.is_patched
