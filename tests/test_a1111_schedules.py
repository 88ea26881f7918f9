"""Step schedules in the fake webui (USERS G3, G4, G6–G8; A1111_CONTRACT §6, §8.2–8.3): at every denoising step the
UNet holds the pristine weights plus that step's interpolated multiplier times the LoRA's update (compared bit for
bit with the engine applied to a fresh model), steps whose multipliers did not change re-patch nothing, hires steps
count on their own, and the end of the generation restores every bit."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fake_webui.harness import lora_host
from fake_webui.lora_fixtures import (
    expected_state,
    move_everything,
    same_state,
    sd1_webui,
    state,
    write_lora,
)


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schedule_loras")
    return {"x": write_lora(folder, "x", "sd1", seed=1), "y": write_lora(folder, "y", "sd1", seed=2)}


@pytest.fixture
def webui(tmp_path, store):
    with sd1_webui(tmp_path, store) as w:
        yield w


class StepRecorder:
    """An ``on_cfg_denoiser`` callback registered after ours: the weights each model call denoises with (``seen``:
    (model calls made before it in the pass, the pass's steps, weights)), the ``sampling_step`` the webui reported to
    it (``reported``), and how many times the host's patcher was asked to apply during the steps."""

    def __init__(self, webui):
        from modules import script_callbacks

        self.model = webui.model
        self.seen: list[tuple[int, int, dict]] = []
        self.reported: list[int] = []
        self.applies: list[int] = []
        patcher = lora_host().state_for(webui.model).patcher
        original_apply = patcher.apply

        def counting_apply(active):
            self.applies.append(len(self.seen))
            return original_apply(active)

        patcher.apply = counting_apply
        script_callbacks.on_cfg_denoiser(self, name="test")

    def __call__(self, params) -> None:
        self.seen.append((params.denoiser.step, params.total_sampling_steps, state(self.model)))
        self.reported.append(params.sampling_step)


def expected(store, te: float, unet: float) -> dict:
    return expected_state("sd1", [(store["x"], te, unet)])


def test_keyframe_schedule_follows_the_steps_and_repatches_only_on_change(webui, store):
    recorder = StepRecorder(webui)
    # te 0.7; unet: 0 at step 0, 1 at step 2 and 3, 0 from step 4 on -> steps 0..5: 0, .5, 1, 1, 0, 0
    processed, _ = webui.txt2img("a photo <lora:x:0.7:0@0,1@2,1@3,0@4>", steps=6)
    unet = [0.0, 0.5, 1.0, 1.0, 0.0, 0.0]
    assert [(s, t) for s, t, _ in recorder.seen] == [(i, 6) for i in range(6)]
    # The webui's own step counter lags: the sampler sets it after each step, so step i (i >= 1) reads i - 1. Our
    # weights follow the step being denoised, not the counter.
    assert recorder.reported == [0, 0, 1, 2, 3, 4]
    for (step, _, weights), multiplier in zip(recorder.seen, unet, strict=True):
        assert same_state(weights, expected(store, 0.7, multiplier)) == [], step
    # one apply at activation (before any step), then only the steps whose multiplier changed: 1, 2 and 4
    assert recorder.applies == [0, 1, 2, 4]
    assert lora_host().stepping is None  # the generation ended: nothing follows the steps any more
    assert same_state(state(webui.model), webui.original) == []
    assert "step" not in processed.comments.lower()


def test_a_second_order_sampler_keeps_each_step_for_both_of_its_model_calls(webui, store):
    """Heun and DPM2 call the model twice per step (the last step once): both calls of a step get that step's
    weights, and a step's second call re-patches nothing."""
    recorder = StepRecorder(webui)
    webui.txt2img("a photo <lora:x:0.7:0@0,1@2>", steps=4, sampler_name="Heun")
    unet_by_step = [0.0, 0.5, 1.0, 1.0]
    calls = [0, 0, 1, 1, 2, 2, 3]  # the step of each of the 7 model calls
    assert [s for s, _, _ in recorder.seen] == list(range(7))
    for (call, _, weights), step in zip(recorder.seen, calls, strict=True):
        assert same_state(weights, expected(store, 0.7, unet_by_step[step])) == [], (call, step)
    assert recorder.applies == [0, 2, 4]
    assert same_state(state(webui.model), webui.original) == []


def test_a_schedule_under_low_vram_moves_repatches_from_the_originals(webui, store):
    """``--lowvram``/``--medvram`` move the patched modules between devices while sampling (``.data`` becomes a copy,
    A1111_CONTRACT §8.3): the next step's patch must start from W₀ again, not add to the moved patched copy."""
    webui.model.lowvram = True

    class MovingRecorder(StepRecorder):
        def __call__(self, params) -> None:
            super().__call__(params)
            move_everything(self.model)

    recorder = MovingRecorder(webui)
    processed, _ = webui.txt2img("a photo <lora:x:0.7:0@0,1@2>", steps=4)
    for (step, _, weights), multiplier in zip(recorder.seen, [0.0, 0.5, 1.0, 1.0], strict=True):
        assert same_state(weights, expected(store, 0.7, multiplier)) == [], step
    assert same_state(state(webui.model), webui.original) == []
    assert "replaced or reloaded" not in processed.comments


def test_fraction_schedule_counts_the_hires_steps_on_their_own(webui, store):
    recorder = StepRecorder(webui)
    webui.txt2img("a photo <lora:x:1:0@0,1@1>", steps=3, enable_hr=True, hr_second_pass_steps=5)
    assert [(s, t) for s, t, _ in recorder.seen] == [(i, 3) for i in range(3)] + [(i, 5) for i in range(5)]
    unet = [0.0, 0.5, 1.0] + [0.0, 0.25, 0.5, 0.75, 1.0]  # G3: the schedule restarts in the hires pass
    for (step, total, weights), multiplier in zip(recorder.seen, unet, strict=True):
        assert same_state(weights, expected(store, 1.0, multiplier)) == [], (step, total)
    assert same_state(state(webui.model), webui.original) == []


def test_step_window_turns_the_unet_part_on_and_off(webui, store):
    recorder = StepRecorder(webui)
    webui.txt2img("a photo <lora:x:0.8:step=1-3> <lora:y:0.5>", steps=4)
    for step, _, weights in recorder.seen:
        on = 0.8 if 1 <= step < 3 else 0.0
        want = expected_state("sd1", [(store["x"], 0.8, on), (store["y"], 0.5, 0.5)])
        assert same_state(weights, want) == [], step
    assert recorder.applies == [0, 1, 3]
    assert same_state(state(webui.model), webui.original) == []


def test_te_schedule_uses_the_first_step_weight_and_says_so(webui, store):
    recorder = StepRecorder(webui)
    processed, p = webui.txt2img("a photo <lora:x:0.2@0,1@1:0.5>", steps=3)
    for _, _, weights in recorder.seen:
        assert same_state(weights, expected(store, 0.2, 0.5)) == []
    assert recorder.applies == [0]  # only te changes over the steps: nothing to follow
    assert "text encoder runs once per pass" in processed.comments
    # the conds were computed with the first step's te weight, exactly as with a plain te of 0.2
    _, plain = webui.txt2img("a photo <lora:x:0.2:0.5>", steps=3)
    assert p.c.equal(plain.c)


def test_plain_tags_do_not_follow_steps(webui, store):
    recorder = StepRecorder(webui)
    webui.txt2img("a photo <lora:x:0.8>", steps=4)
    assert recorder.applies == [0] and lora_host().stepping is None
    assert all(same_state(w, expected(store, 0.8, 0.8)) == [] for _, _, w in recorder.seen)


@pytest.mark.parametrize(
    ("fields", "want"),
    [
        # v1.10: the denoiser's model calls decide; the lagging counter is ignored
        (
            {
                "sampling_step": 0,
                "total_sampling_steps": 20,
                "denoiser": SimpleNamespace(step=1, total_steps=20),
            },
            (1, 20),
        ),
        # second-order sampler: 40 calls expected for 20 steps
        (
            {
                "sampling_step": 4,
                "total_sampling_steps": 20,
                "denoiser": SimpleNamespace(step=11, total_steps=40),
            },
            (5, 20),
        ),
        # more calls than expected (adaptive samplers): the last step, never past it
        (
            {
                "sampling_step": 9,
                "total_sampling_steps": 10,
                "denoiser": SimpleNamespace(step=30, total_steps=10),
            },
            (9, 10),
        ),
        # no denoiser (older webuis), or one that does not know its calls: the webui's counter
        ({"sampling_step": 3, "total_sampling_steps": 10}, (3, 10)),
        (
            {
                "sampling_step": 3,
                "total_sampling_steps": 10,
                "denoiser": SimpleNamespace(step=5, total_steps=None),
            },
            (3, 10),
        ),
        (
            {
                "sampling_step": 2,
                "total_sampling_steps": 0,
                "denoiser": SimpleNamespace(step=5, total_steps=10),
            },
            (2, None),
        ),
    ],
)
def test_denoising_step_reads_the_denoiser_calls_when_the_webui_has_them(fields, want):
    from lora_ext.hosts.a1111.host import denoising_step

    assert denoising_step(SimpleNamespace(**fields)) == want
