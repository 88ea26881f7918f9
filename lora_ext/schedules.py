"""Step schedules of a LoRA's weights (USERS G4, G6, G7): parsing and evaluation, pure functions, no host, no torch.

Steps: a sampling pass of ``total`` steps has the steps ``0 … total - 1`` (A1111's ``CFGDenoiserParams.sampling_step``,
diffusers' ``step_index``); a hires pass counts its own steps from 0 again (USERS G3).

Keyframes (loractl, G6): a weight may be ``w@s,w@s,…``. A keyframe step ``s <= 1`` is a fraction of the pass, placed
at step ``s * (total - 1)`` (0 = the first step, 1 = the last); ``s > 1`` is a step number. Between two keyframes the
weight is interpolated linearly; before the first and after the last it stays constant. Keyframes are taken in the
order of their steps for the pass at hand (a tie keeps the written order: the later one holds from that step on).
Weights have any sign and magnitude (N1).

Step window (LoRA Block Weight, G4): ``start=N`` (the UNet weight is 0 on steps before N), ``stop=N`` (0 from step N
on), ``step=A-B`` (the same as ``start=A:stop=B``). N, A, B are whole step numbers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

#: The number of steps used to show a schedule's first-step weight where no pass is known (A1111's default steps).
DEFAULT_TOTAL = 20

#: How to write a schedule, appended to every schedule problem.
SCHEDULE_HINT = (
    "write keyframes weight@step separated by commas, such as 0@0,1@0.5 (a step up to 1 is a fraction of the "
    "pass, above 1 a step number)"
)

_WHOLE = re.compile(r"\s*\d+\s*")
_RANGE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")


@dataclass(frozen=True)
class Keyframe:
    """One ``weight@at`` keyframe: ``at <= 1`` is a fraction of the pass, ``at > 1`` a step number."""

    weight: float
    at: float

    def position(self, total: int) -> float:
        """The keyframe's place in a pass of ``total`` steps, in steps (0 = first step)."""
        return self.at if self.at > 1 else self.at * max(total - 1, 0)


@dataclass(frozen=True)
class Schedule:
    """A keyframe list (at least one keyframe), as written."""

    keyframes: tuple[Keyframe, ...]

    @property
    def constant(self) -> bool:
        """True when every keyframe has the same weight (the schedule is a plain weight)."""
        return len({k.weight for k in self.keyframes}) == 1

    @property
    def initial(self) -> float:
        """The weight at the first step of a pass of ``DEFAULT_TOTAL`` steps (for display and plain-weight uses)."""
        return self.value(0, DEFAULT_TOTAL)

    def value(self, step: float, total: int) -> float:
        """The weight at ``step`` (steps from 0) of a pass of ``total`` steps."""
        points = sorted(((k.position(total), k.weight) for k in self.keyframes), key=lambda kv: kv[0])
        before = [i for i, (at, _) in enumerate(points) if at <= step]
        if not before:
            return points[0][1]
        i = before[-1]
        if i == len(points) - 1:
            return points[i][1]
        (a, wa), (b, wb) = points[i], points[i + 1]
        return wa + (wb - wa) * (step - a) / (b - a)

    def __str__(self) -> str:
        return ",".join(f"{_short(k.weight)}@{_short(k.at)}" for k in self.keyframes)


@dataclass(frozen=True)
class StepWindow:
    """The steps on which a LoRA's UNet part is on: ``start <= step < stop`` (None: no bound)."""

    start: int | None = None
    stop: int | None = None

    def contains(self, step: float) -> bool:
        """True when ``step`` (steps from 0) is inside the window."""
        return (self.start is None or step >= self.start) and (self.stop is None or step < self.stop)


#: A weight as a tag gives it: a plain number or a schedule.
Weight = float | Schedule


def is_schedule_text(text: object) -> bool:
    """True when ``text`` is written as a keyframe list (has an ``@``)."""
    return isinstance(text, str) and "@" in text


def parse_schedule(text: str) -> Schedule | str:
    """The keyframe list ``text`` (``0@0,1@0.5,0@1``), or a sentence saying what is wrong with it."""
    keyframes = []
    for part in text.split(","):
        pieces = part.split("@")
        if len(pieces) != 2:
            return f'"{part.strip()}" is not a weight@step keyframe'
        weight, at = _finite(pieces[0]), _finite(pieces[1])
        if weight is None:
            return f'"{pieces[0].strip()}" in "{part.strip()}" is not a finite weight'
        if at is None or at < 0:
            return f'"{pieces[1].strip()}" in "{part.strip()}" is not a step (a number from 0)'
        keyframes.append(Keyframe(weight, at))
    return Schedule(tuple(keyframes))


def parse_window(start: str | None, stop: str | None, step: str | None) -> StepWindow | str | None:
    """The step window of ``start=``, ``stop=``, ``step=A-B`` values (None for keys not given): the window, None
    when no key was given, or a sentence saying what is wrong."""
    if step is not None:
        if start is not None or stop is not None:
            return "step= cannot be combined with start= or stop=; write either step=A-B or start=A:stop=B"
        match = _RANGE.fullmatch(step)
        if match is None:
            return f'step="{step}" is not a step range; write step=A-B with whole step numbers, such as step=0-10'
        start, stop = match.group(1), match.group(2)
    if start is None and stop is None:
        return None
    bounds = {}
    for key, value in (("start", start), ("stop", stop)):
        if value is not None and _WHOLE.fullmatch(value) is None:
            return f'{key}="{value}" is not a step number; write a whole number of steps, such as {key}=10'
        bounds[key] = None if value is None else int(value)
    if bounds["start"] is not None and bounds["stop"] is not None and bounds["start"] >= bounds["stop"]:
        return f"the LoRA would never be on (from step {bounds['start']} until step {bounds['stop']}); the start must be before the stop"
    return StepWindow(bounds["start"], bounds["stop"])


def weight_at(weight: Weight, step: float, total: int) -> float:
    """A plain weight, or a schedule's weight at ``step`` (steps from 0) of a pass of ``total`` steps."""
    return weight.value(step, total) if isinstance(weight, Schedule) else float(weight)


def varies(weight: Weight) -> bool:
    """True when ``weight`` is a schedule whose value changes over a pass."""
    return isinstance(weight, Schedule) and not weight.constant


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _short(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class LoraSchedule:
    """How one active LoRA's multipliers follow the steps of a pass.

    te, unet: plain weights or keyframe schedules. window: the steps the UNet part is on (None: every step).
    The text encoder runs once per pass (its conds are computed before the first step), so the te multiplier is
    always the te weight at the pass's first step; only the UNet multiplier changes from step to step.
    """

    te: Weight
    unet: Weight
    window: StepWindow | None = None

    @property
    def varies(self) -> bool:
        """True when the UNet multiplier can change between the steps of a pass."""
        return varies(self.unet) or self.window is not None

    @property
    def te_varies(self) -> bool:
        """True when the te weight is a changing schedule (of which only the first step's value is used)."""
        return varies(self.te)

    def multipliers(self, step: float, total: int) -> tuple[float, float]:
        """(te, unet) multipliers at ``step`` (steps from 0) of a pass of ``total`` steps."""
        te = weight_at(self.te, 0, total)
        on = self.window is None or self.window.contains(step)
        return te, weight_at(self.unet, step, total) if on else 0.0
