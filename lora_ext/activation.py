"""Turn parsed tag requests into the active set the patcher applies: the one step both hosts share.

For each ``LoraRequest`` in tag order: read its named arguments (``lbw=`` block weights; ``hr=``, ``hrte=``,
``hrunet=`` hires-pass weights), look the name up in the library, load and resolve the file against the model,
and collect everything a user should see as ``Problem`` values. One bad tag never affects the others (USERS S3).

Hires pass (USERS G3, G11): with ``hires=True`` the weights come from ``hr=`` (both), then ``hrte=`` / ``hrunet=``;
without those the first-pass weights are kept (never reset to 1). A LoRA whose hires weights are both 0 because of
those arguments (``hr=0``) is left out of the hires pass entirely. Block weights apply in both passes.

Step schedules (USERS G4, G6, G7; ``lora_ext.schedules``): te/unet keyframe lists from the tag (and ``hr=``,
``hrte=``, ``hrunet=`` values written as keyframe lists), and the step window ``start=``, ``stop=``, ``step=A-B``
(UNet only), become the ``ActiveLora.schedule``; ``at_step`` gives the active set at one step of a pass, which hosts
hand to the patcher whenever ``multipliers_at`` changes. The text encoder runs once per pass, so a te schedule uses
its weight at the pass's first step, with a warning when that schedule changes over the steps.
Other unknown named arguments are ignored, as in the webui, with a warning naming them (a typo such as ``lwb=`` would
otherwise fail silently).

No webui imports: hosts pass ``lookup`` and ``resolve`` callables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lora_ext.adapters import ActiveLora, ResolvedLora
from lora_ext.blocks import BlockWeights, parse_block_weights
from lora_ext.errors import Problem
from lora_ext.schedules import (
    DEFAULT_TOTAL,
    LoraSchedule,
    Schedule,
    StepWindow,
    Weight,
    is_schedule_text,
    parse_schedule,
    parse_window,
)
from lora_ext.syntax import LoraRequest, to_weight

#: Named arguments of a tag that set the hires-pass weights.
HIRES_KEYS = ("hr", "hrte", "hrunet")

#: Named arguments of the step window (LoRA Block Weight): ``start=N``, ``stop=N``, ``step=A-B``.
SCHEDULE_KEYS = ("start", "stop", "step")

#: Named arguments with a meaning here (``te``, ``unet``, ``dyn`` never reach ``LoraRequest.named``).
KNOWN_KEYS = ("lbw", *HIRES_KEYS, *SCHEDULE_KEYS)

#: ``lookup(name) -> (library entry or None, problems of the lookup)``.
Lookup = Callable[[str], "tuple[Any | None, list[Problem]]"]
#: ``resolve(entry, request) -> ResolvedLora | Problem`` (load the entry's file and map it onto the model).
Resolve = Callable[[Any, LoraRequest], "ResolvedLora | Problem"]


@dataclass
class ActiveSet:
    """Result of ``build_active_set``.

    active: what the patcher applies, in tag order.
    used: ``(request, library entry, resolved LoRA)`` for each item of ``active`` (same order).
    problems: every user-facing problem in tag order (bad arguments, lookup notes, load and coverage problems).
    not_found: ``(name, lookup problems)`` per tag whose name is in no library entry.
    reports: ``(tag name, coverage report)`` for every resolved LoRA, applied or refused.
    dropped: requests left out of this pass on purpose (``hr=0`` in the hires pass).
    """

    active: list[ActiveLora] = field(default_factory=list)
    used: list[tuple[LoraRequest, Any, ResolvedLora]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    not_found: list[tuple[str, list[Problem]]] = field(default_factory=list)
    reports: list[tuple[str, Any]] = field(default_factory=list)
    dropped: list[LoraRequest] = field(default_factory=list)


@dataclass(frozen=True)
class Weights:
    """The weights one request asks for in one pass: multipliers (those of the pass's first step when scheduled),
    rank, block weights and the step schedule (None when nothing changes over the steps)."""

    te: float
    unet: float
    dyn: int | None
    blocks: BlockWeights | None
    schedule: LoraSchedule | None = None


def build_active_set(
    requests: Sequence[LoraRequest],
    lookup: Lookup,
    resolve: Resolve,
    family: str,
    *,
    hires: bool = False,
    seed: int | None = None,
    on_exception: Callable[[str, BaseException], None] | None = None,
) -> ActiveSet:
    """The active set for ``requests`` on a model of ``family`` ("sd1", "sd2", "sdxl").

    hires: this is the hires pass (``hr*=`` arguments apply). seed: seeds random block weights (``R``, ``U``).
    on_exception: called with (name, exception) when loading raised (an engine bug, not a user error); the tag is
        skipped with a Problem either way.
    """
    out = ActiveSet()
    for request in requests:
        weights = request_weights(request, family, hires=hires, seed=seed)
        if isinstance(weights, Problem):
            out.problems.append(weights)
            continue
        out.problems += schedule_warnings(request, weights) + unknown_key_warnings(request)
        if weights is None:
            out.dropped.append(request)
            continue
        try:
            _add_one(out, request, weights, lookup, resolve)
        except Exception as exc:  # an engine bug on one file must not take the other LoRAs down
            if on_exception is not None:
                on_exception(request.name, exc)
            out.problems.append(Problem(request.name, f"could not be loaded ({type(exc).__name__}: {exc})."))
    return out


def _add_one(
    out: ActiveSet, request: LoraRequest, weights: Weights, lookup: Lookup, resolve: Resolve
) -> None:
    entry, problems = lookup(request.name)
    if entry is None:
        out.not_found.append((request.name, list(problems)))
        return
    out.problems += problems
    resolved = resolve(entry, request)
    if isinstance(resolved, Problem):
        out.problems.append(resolved)
        return
    out.reports.append((request.name, resolved.report))
    out.problems += resolved.problems
    if any(p.severity == "error" for p in resolved.problems):
        return
    if not resolved.layers:
        out.problems.append(Problem(request.name, "no layer of this model matches; nothing applied."))
        return
    out.active.append(
        ActiveLora(
            resolved,
            te=weights.te,
            unet=weights.unet,
            dyn=weights.dyn,
            blocks=weights.blocks,
            schedule=weights.schedule,
        )
    )
    out.used.append((request, entry, resolved))


def request_weights(
    request: LoraRequest, family: str, *, hires: bool = False, seed: int | None = None
) -> Weights | Problem | None:
    """The weights of ``request`` in this pass, a Problem for a bad ``lbw=``/``hr*=`` value, or None when the
    request sits out the hires pass (``hr=0``, or ``hrte=0`` and ``hrunet=0``)."""
    named = request.named
    blocks = None
    if "lbw" in named:
        blocks = parse_block_weights(named["lbw"], family, tag=request.tag or request.name, seed=seed)
        if isinstance(blocks, Problem):
            return Problem(blocks.subject, f"{blocks.message} The LoRA was not applied.")
    hires_values: dict[str, Weight] = {}
    for key in HIRES_KEYS:
        if key in named:
            value = _weight(named[key])
            if isinstance(value, str):
                return Problem(
                    request.tag or request.name,
                    f'{key}="{named[key]}" is not {value}; write a hires-pass weight such as {key}=0.5. '
                    "The LoRA was not applied.",
                )
            hires_values[key] = value
    window = parse_window(named.get("start"), named.get("stop"), named.get("step"))
    if isinstance(window, str):
        return Problem(request.tag or request.name, f"{window}. The LoRA was not applied.")
    te: Weight = request.te if request.te_schedule is None else request.te_schedule
    unet: Weight = request.unet if request.unet_schedule is None else request.unet_schedule
    if hires and hires_values:
        te = hires_values.get("hrte", hires_values.get("hr", te))
        unet = hires_values.get("hrunet", hires_values.get("hr", unet))
        if te == 0 and unet == 0:
            return None
    return _scheduled_weights(te, unet, window, request.dyn, blocks)


def _scheduled_weights(
    te: Weight, unet: Weight, window: StepWindow | None, dyn: int | None, blocks: BlockWeights | None
) -> Weights:
    """Weights whose multipliers are those of the first step (of a ``DEFAULT_TOTAL``-step pass until a host sets
    the real count), with a schedule only when a weight is a schedule or a step window is set."""
    schedule = LoraSchedule(te, unet, window)
    first_te, first_unet = schedule.multipliers(0, DEFAULT_TOTAL)
    plain = not isinstance(te, Schedule) and not isinstance(unet, Schedule) and window is None
    return Weights(te=first_te, unet=first_unet, dyn=dyn, blocks=blocks, schedule=None if plain else schedule)


def at_step(active: Sequence[ActiveLora], step: float, total: int) -> list[ActiveLora]:
    """The active set at ``step`` (steps from 0) of a pass of ``total`` steps: each scheduled LoRA with the te/unet
    multipliers of that step (te: always the pass's first step), the others unchanged."""
    return [
        a if a.schedule is None else _with_multipliers(a, *a.schedule.multipliers(step, total))
        for a in active
    ]


def _with_multipliers(active: ActiveLora, te: float, unet: float) -> ActiveLora:
    return replace(active, te=te, unet=unet)


def multipliers_at(active: Sequence[ActiveLora], step: float, total: int) -> tuple[tuple[float, float], ...]:
    """(te, unet) per LoRA at ``step`` of a ``total``-step pass: when this is unchanged from one step to the next,
    the weights are too and nothing needs re-patching (USERS G8)."""
    return tuple((a.te, a.unet) for a in at_step(active, step, total))


def steps_vary(active: Sequence[ActiveLora]) -> bool:
    """True when some LoRA's UNet multiplier can change between the steps of a pass (a host must follow steps)."""
    return any(a.schedule is not None and a.schedule.varies for a in active)


def requested_loras(requests: Sequence[LoraRequest]) -> tuple[str, ...]:
    """What a prompt's tags ask for (names, weights and schedules, rank, named arguments), whatever their order in
    the text: equal for two prompts exactly when they ask for the same LoRAs (the batch rule, USERS S10)."""
    return tuple(
        sorted(
            repr((r.name, r.te, r.unet, r.te_schedule, r.unet_schedule, r.dyn, sorted(r.named.items())))
            for r in requests
        )
    )


def schedule_warnings(request: LoraRequest, weights: Weights | None) -> list[Problem]:
    """One warning when the tag gives the text encoder a schedule of its own that changes over the steps: the text
    encoder runs once per pass, so the weight at the pass's first step is used throughout. A single schedule for
    both (``<lora:a:0@0,1@1>``) gives none: the UNet follows it, and loractl's text encoder also sees only the first
    step's weight, so users of that form get what they had."""
    schedule = weights.schedule if weights is not None else None
    if schedule is None or not schedule.te_varies:
        return []
    if request.te_schedule is not None and request.te_schedule is request.unet_schedule:
        return []
    return [
        Problem(
            request.tag or request.name,
            f"the text-encoder weight {schedule.te} changes over the steps, but the text encoder runs once per "
            f"pass: its weight at the pass's first step ({weights.te:g}) is used for the whole pass; the UNet "
            "follows the schedule.",
            severity="warning",
        )
    ]


def unknown_key_warnings(request: LoraRequest) -> list[Problem]:
    """One warning when the tag has named arguments that mean nothing here (they are ignored, USERS S3)."""
    keys = [key for key in request.named if key not in KNOWN_KEYS]
    if not keys:
        return []
    shown = ", ".join(f"{key}=" for key in keys)
    return [
        Problem(
            request.tag or request.name,
            f"{shown} {'is not an option' if len(keys) == 1 else 'are not options'} of LoRA tags and "
            f"{'is' if len(keys) == 1 else 'are'} ignored; the options are te=, unet=, dyn=, lbw=, hr=, hrte=, "
            "hrunet=, start=, stop=, step=.",
            severity="warning",
        )
    ]


def _weight(text: str) -> Weight | str:
    """A plain weight or a keyframe schedule, or what the text is not (for the message)."""
    if is_schedule_text(text):
        schedule = parse_schedule(text)
        return schedule if isinstance(schedule, Schedule) else f"a valid step schedule ({schedule})"
    value = to_weight(text)
    return "a number" if value is None else value
