"""Step schedules (USERS G4, G6, G7, N1): keyframe parsing and interpolation, step windows, and the per-step active
set that hosts hand to the patcher. Pure: no model, no host."""

from __future__ import annotations

import pytest

from lora_ext.activation import (
    Weights,
    at_step,
    build_active_set,
    multipliers_at,
    request_weights,
    steps_vary,
)
from lora_ext.adapters import ActiveLora, ResolvedLora
from lora_ext.schedules import Keyframe, LoraSchedule, Schedule, StepWindow, parse_schedule, parse_window
from lora_ext.syntax import parse_prompt


def schedule(text: str) -> Schedule:
    parsed = parse_schedule(text)
    assert isinstance(parsed, Schedule), parsed
    return parsed


def test_fractions_place_keyframes_on_the_pass_first_to_last_step():
    s = schedule("0@0,1@0.5,0@1")
    assert s.keyframes == (Keyframe(0.0, 0.0), Keyframe(1.0, 0.5), Keyframe(0.0, 1.0))
    # 11 steps: 0 → step 0, 0.5 → step 5, 1 → step 10 (the last)
    assert [s.value(i, 11) for i in range(11)] == pytest.approx(
        [0, 0.2, 0.4, 0.6, 0.8, 1, 0.8, 0.6, 0.4, 0.2, 0]
    )
    # the same tag on 21 steps scales with the pass
    assert s.value(10, 21) == 1.0 and s.value(5, 21) == pytest.approx(0.5)


def test_steps_above_one_are_step_numbers_and_ends_are_constant():
    warmup = schedule("0@5,1@6")  # G6: <lora:pixel:1:0@5,1@6>
    assert [warmup.value(i, 20) for i in range(8)] == [0, 0, 0, 0, 0, 0, 1, 1]
    assert warmup.value(19, 20) == 1.0
    assert warmup.value(3, 100) == 0.0  # absolute steps do not depend on the pass length
    ends = schedule("1@0.2,2@0.8")  # constant before the first keyframe and after the last
    assert ends.value(0, 11) == 1.0 and ends.value(1, 11) == 1.0 and ends.value(10, 11) == 2.0
    assert ends.value(5, 11) == pytest.approx(1.5)


def test_negative_and_large_weights_interpolate_linearly():
    s = schedule("-8@0,8@1")
    assert [s.value(i, 5) for i in range(5)] == [-8.0, -4.0, 0.0, 4.0, 8.0]
    assert schedule("-1@0,-1@1").constant
    assert schedule("1e3@0,-1e3@10").value(5, 20) == 0.0


def test_keyframes_are_taken_in_step_order_and_fractions_mix_with_step_numbers():
    s = schedule("1@10,0@0")  # written backwards: still 0 at step 0, 1 at step 10
    assert s.value(0, 20) == 0.0 and s.value(5, 20) == 0.5 and s.value(15, 20) == 1.0
    mixed = schedule("0@0,1@0.5,1@15,0@16")  # half-way (step 9.5 of 20) to 1, off from step 16
    assert mixed.value(19, 20) == 0.0 and mixed.value(12, 20) == 1.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0@0,1", '"1" is not a weight@step keyframe'),
        ("0@0,,1@1", '"" is not a weight@step keyframe'),
        ("a@0", '"a" in "a@0" is not a finite weight'),
        ("inf@0", "finite weight"),
        ("1@-1", "is not a step"),
        ("1@x", "is not a step"),
        ("1@0@1", "is not a weight@step keyframe"),
    ],
)
def test_malformed_schedules_say_what_is_wrong(text, reason):
    assert reason in parse_schedule(text)


def test_step_windows_start_stop_and_ranges():
    assert parse_window(None, None, None) is None
    assert parse_window("5", None, None) == StepWindow(5, None)
    assert parse_window(None, "10", None) == StepWindow(None, 10)
    assert parse_window(None, None, "2-8") == StepWindow(2, 8)
    window = StepWindow(2, 8)
    assert [window.contains(i) for i in range(10)] == [False] * 2 + [True] * 6 + [False] * 2
    for bad, words in [
        (("x", None, None), 'start="x"'),
        ((None, "1.5", None), 'stop="1.5"'),
        ((None, None, "8-2"), "start must be before the stop"),
        ((None, None, "8"), "step=A-B"),
        (("1", None, "2-4"), "cannot be combined"),
        (("5", "5", None), "never be on"),
    ]:
        assert words in parse_window(*bad)


def test_te_uses_its_first_step_weight_and_the_window_only_gates_the_unet():
    s = LoraSchedule(te=schedule("0.2@0,1@1"), unet=schedule("0@0,1@1"), window=StepWindow(start=2))
    assert s.te_varies and s.varies
    assert [s.multipliers(i, 5) for i in range(5)] == [
        (0.2, 0.0),
        (0.2, 0.0),
        (0.2, 0.5),
        (0.2, 0.75),
        (0.2, 1.0),
    ]
    assert not LoraSchedule(te=schedule("0@0,1@1"), unet=0.7).varies  # only te changes: nothing to follow


@pytest.mark.parametrize(
    ("tag", "te", "unet", "te_schedule", "unet_schedule"),
    [
        (
            "<lora:net:0@0,1@0.5,0@1>",
            0.0,
            0.0,
            "0@0,1@0.5,0@1",
            "0@0,1@0.5,0@1",
        ),  # unet defaults to te's schedule
        ("<lora:pixel:1:0@5,1@6>", 1.0, 0.0, None, "0@5,1@6"),
        ("<lora:x:te=1@0,0@1:unet=0.5>", 1.0, 0.5, "1@0,0@1", None),  # G7: te= and unet= take schedules
        ("<lora:x:0.3:unet=-2@0,2@10>", 0.3, -2.0, None, "-2@0,2@10"),
        ("<lora:x:0.8@0,0.8@1>", 0.8, 0.8, None, None),  # a schedule that never changes is a plain weight
    ],
)
def test_tags_carry_schedules(tag, te, unet, te_schedule, unet_schedule):
    parsed = parse_prompt(tag)
    assert parsed.problems == []
    (request,) = parsed.requests
    assert (request.te, request.unet) == (te, unet)
    assert (str(request.te_schedule) if request.te_schedule else None) == te_schedule
    assert (str(request.unet_schedule) if request.unet_schedule else None) == unet_schedule


def test_a_bad_schedule_is_a_problem_and_the_other_tags_still_apply():
    parsed = parse_prompt("a <lora:a:0@0,1> b <lora:b:0@0,1@1>")
    assert [r.name for r in parsed.requests] == ["b"]
    (problem,) = parsed.problems
    assert (
        problem.subject == "<lora:a:0@0,1>" and problem.severity == "error" and "0@0,1@0.5" in problem.message
    )


def request_weights_of(tag: str, **kw) -> Weights:
    weights = request_weights(parse_prompt(tag).requests[0], "sd1", **kw)
    assert isinstance(weights, Weights), weights
    return weights


def test_request_weights_build_the_schedule_and_hires_weights_may_be_schedules():
    plain = request_weights_of("<lora:x:0.5>")
    assert plain.schedule is None and (plain.te, plain.unet) == (0.5, 0.5)
    first = request_weights_of("<lora:x:1:0@0,1@1:step=2-6>")
    assert first.schedule == LoraSchedule(1.0, schedule("0@0,1@1"), StepWindow(2, 6))
    hires = request_weights_of("<lora:x:1:0@0,1@1:hrunet=1@0,0@1>", hires=True)
    assert hires.schedule.unet == schedule("1@0,0@1") and (hires.te, hires.unet) == (1.0, 1.0)
    kept = request_weights_of("<lora:x:1:0@0,1@1>", hires=True)  # no hr*= : the hires pass keeps the schedule
    assert kept.schedule.unet == schedule("0@0,1@1")
    bad = request_weights(parse_prompt("<lora:x:1:hr=0@0,1>").requests[0], "sd1", hires=True)
    assert 'hr="0@0,1"' in bad.message and "step schedule" in bad.message


def test_the_active_set_at_a_step_changes_only_scheduled_multipliers():
    lora = ResolvedLora(name="x", path="x", layers={})
    fixed = ActiveLora(lora, te=0.5, unet=0.5)
    ramp = ActiveLora(lora, te=0.0, unet=0.0, schedule=LoraSchedule(schedule("0@0,1@1"), schedule("0@0,1@1")))
    late = ActiveLora(lora, te=1.0, unet=0.0, schedule=LoraSchedule(1.0, 1.0, StepWindow(start=3)))
    assert steps_vary([fixed, ramp]) and not steps_vary([fixed])
    assert multipliers_at([fixed, ramp, late], 2, 5) == ((0.5, 0.5), (0.0, 0.5), (1.0, 0.0))
    assert multipliers_at([fixed, ramp, late], 4, 5) == ((0.5, 0.5), (0.0, 1.0), (1.0, 1.0))
    stepped = at_step([fixed, ramp], 4, 5)
    assert stepped[0] is fixed and stepped[1].unet == 1.0 and stepped[1].schedule is ramp.schedule


def test_a_changing_te_schedule_warns_once_per_tag_and_a_step_window_does_not():
    requests = parse_prompt(
        "<lora:a:0@0,1@1:1> <lora:b:1:0@0,1@1> <lora:c:1:start=4> <lora:d:1:stop=x> <lora:e:0@0,1@1>"
    ).requests
    found = build_active_set(requests, lambda name: (None, []), lambda entry, request: None, "sd1")
    warnings = [p for p in found.problems if p.severity == "warning"]
    # e: one schedule for both, as loractl writes it: the UNet follows it and nothing is said
    assert [p.subject for p in warnings] == ["<lora:a:0@0,1@1:1>"]
    assert "text encoder runs once per pass" in warnings[0].message and "(0)" in warnings[0].message
    (error,) = [p for p in found.problems if p.severity == "error"]
    assert error.subject == "<lora:d:1:stop=x>" and "stop=10" in error.message
