"""Turn parsed tag requests into the active set the patcher applies: the one step both hosts share.

For each ``LoraRequest`` in tag order: read its named arguments (``lbw=`` block weights; ``hr=``, ``hrte=``,
``hrunet=`` hires-pass weights), look the name up in the library, load and resolve the file against the model,
and collect everything a user should see as ``Problem`` values. One bad tag never affects the others (USERS S3).

Hires pass (USERS G3, G11): with ``hires=True`` the weights come from ``hr=`` (both), then ``hrte=`` / ``hrunet=``;
without those the first-pass weights are kept (never reset to 1). A LoRA whose hires weights are both 0 because of
those arguments (``hr=0``) is left out of the hires pass entirely. Block weights apply in both passes.

Step schedules (``start=``, ``stop=``, ``step=``) are not supported: a one-line warning, and the LoRA applies for
all steps. Other unknown named arguments are ignored, as in the webui, with a warning naming them (a typo such as
``lwb=`` would otherwise fail silently).

No webui imports: hosts pass ``lookup`` and ``resolve`` callables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lora_ext.adapters import ActiveLora, ResolvedLora
from lora_ext.blocks import BlockWeights, parse_block_weights
from lora_ext.errors import Problem
from lora_ext.syntax import LoraRequest

#: Named arguments of a tag that set the hires-pass weights.
HIRES_KEYS = ("hr", "hrte", "hrunet")

#: Named arguments of step schedules (LoRA Block Weight, loractl), not supported.
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
    """The weights one request asks for in one pass: multipliers, rank and block weights."""

    te: float
    unet: float
    dyn: int | None
    blocks: BlockWeights | None


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
        out.problems += schedule_warnings(request) + unknown_key_warnings(request)
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
        ActiveLora(resolved, te=weights.te, unet=weights.unet, dyn=weights.dyn, blocks=weights.blocks)
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
    hires_values: dict[str, float] = {}
    for key in HIRES_KEYS:
        if key in named:
            value = _number(named[key])
            if value is None:
                return Problem(
                    request.tag or request.name,
                    f'{key}="{named[key]}" is not a number; write a hires-pass weight such as {key}=0.5. '
                    "The LoRA was not applied.",
                )
            hires_values[key] = value
    te, unet = request.te, request.unet
    if hires and hires_values:
        te = hires_values.get("hrte", hires_values.get("hr", te))
        unet = hires_values.get("hrunet", hires_values.get("hr", unet))
        if te == 0 and unet == 0:
            return None
    return Weights(te=te, unet=unet, dyn=request.dyn, blocks=blocks)


def schedule_warnings(request: LoraRequest) -> list[Problem]:
    """One warning when the tag asks for a step schedule, which is not supported."""
    keys = [key for key in SCHEDULE_KEYS if key in request.named]
    if not keys:
        return []
    shown = ", ".join(f"{key}=" for key in keys)
    return [
        Problem(
            request.tag or request.name,
            f"{shown} step schedules are not supported; the LoRA is applied for all steps.",
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
            "hrunet=.",
            severity="warning",
        )
    ]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
