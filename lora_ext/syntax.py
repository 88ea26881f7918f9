"""Prompt tags ``<lora:…>`` and ``<lyco:…>``: find, parse, strip and write them the way A1111 1.10 reads them.

A1111_CONTRACT §3.2–3.5, USERS S1–S3, S8, N1:

- A tag is a match of ``<(\\w+):([^>]+)>``; only the networks ``lora`` and ``lyco`` are ours, every other tag
  (``<hypernet:…>``) stays in the text untouched.
- The arguments are the match split on ``:``. An argument that ``split('=', 2)`` cuts into exactly two parts is
  named (``te=0.5``); every other argument (no ``=``, or two or more) is positional.
- name = positional 0; te = positional 1 or 1.0, then ``te=``; unet = positional 2 or *te* (taken after the
  ``te=`` override), then ``unet=``; dyn = positional 3 or ``dyn=`` (a whole number of ranks), else None.
- Other named arguments (``lbw=``, ``start=``, ``hr=`` …) are kept in ``LoraRequest.named`` for later features.
- te and unet may be step schedules ``w@step,…`` (loractl, USERS G6, G7; ``lora_ext.schedules``): the request then
  carries the schedule in ``te_schedule`` / ``unet_schedule`` and its first-step weight in ``te`` / ``unet``.

Malformed tags become ``Problem`` values naming the tag and the bad value; nothing here raises on user text, and
one bad tag never affects the others.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from lora_ext.errors import Problem
from lora_ext.schedules import SCHEDULE_HINT, Schedule, is_schedule_text, parse_schedule

#: A1111's extra-network tag pattern (``modules/extra_networks.py``); group 1 is the network, group 2 its args.
TAG_PATTERN = re.compile(r"<(\w+):([^>]+)>")

#: Tag networks read by this extension; ``lyco`` is an alias of ``lora`` (USERS S2).
NETWORKS = ("lora", "lyco")

#: The te multiplier of a tag that gives none (``<lora:x>``). A1111's "default multiplier" option is only used when
#: a card inserts a tag (``card_weight``), never when a tag is parsed.
MISSING_WEIGHT = 1.0

#: Named arguments with a meaning of their own; every other key lands in ``LoraRequest.named``.
RESERVED_KEYS = ("te", "unet", "dyn")

# Block-weight preset names of the LoRA Block Weight extension look like OUTD, ALL0.5, MIDD (USERS G1).
_PRESET_LIKE = re.compile(r"[A-Z][A-Z0-9.]*")


class NamedArgs(Mapping[str, str]):
    """Read-only, hashable, ordered ``{key: value}`` of a tag's unknown named arguments (``lbw=OUTD``).

    Equal to any mapping with the same items (order ignored, like dicts).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, str] = dict(items)

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"NamedArgs({self._items!r})"


@dataclass(frozen=True)
class LoraRequest:
    """One ``<lora:…>`` / ``<lyco:…>`` tag, as the user wrote it and as A1111 reads it.

    name: the LoRA name exactly as typed (spaces, dots, ``/`` folders, unicode and ``__`` kept; not stripped).
    te, unet: text-encoder and UNet multipliers; finite, any sign and magnitude.
    dyn: DyLoRA rank to keep (>= 1), or None for all ranks.
    named: unknown named arguments in tag order (``lbw``, ``start``, ``stop``, ``hr`` …); a dict may be passed.
    tag: the tag text (from ``parse_prompt`` exactly the original characters).
    start, end: character offsets of the tag in the parsed text (``text[start:end] == tag``); None when the
        request was built from A1111 items by ``parse_args``.
    network: ``lora`` or ``lyco``.
    ignored: positional arguments after dyn, which A1111 ignores (reported as a warning by ``parse_prompt``).
    te_schedule, unet_schedule: the keyframe schedule of te / unet when the tag gives one whose weight changes over
        the steps (``<lora:x:0@0,1@0.5>``), else None; ``te`` / ``unet`` then hold its first-step weight.
    """

    name: str
    te: float
    unet: float
    dyn: int | None = None
    named: NamedArgs = field(default_factory=NamedArgs)
    tag: str = ""
    start: int | None = None
    end: int | None = None
    network: str = "lora"
    ignored: tuple[str, ...] = ()
    te_schedule: Schedule | None = None
    unet_schedule: Schedule | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.named, NamedArgs):
            object.__setattr__(self, "named", NamedArgs(self.named))


@dataclass
class ParsedPrompt:
    """Result of ``parse_prompt``.

    clean: the text with every ``lora``/``lyco`` tag (good or malformed) removed and nothing else changed, as
        A1111 strips tags before the text encoder sees the prompt.
    requests: the well-formed tags in text order.
    problems: one error per malformed tag, plus warnings (ignored extra arguments), in text order.
    """

    clean: str
    requests: list[LoraRequest]
    problems: list[Problem]


def parse_prompt(text: str) -> ParsedPrompt:
    """Find, parse and strip every ``<lora:…>`` and ``<lyco:…>`` tag of ``text``; never raises."""
    requests: list[LoraRequest] = []
    problems: list[Problem] = []
    kept: list[str] = []
    last = 0
    for match in TAG_PATTERN.finditer(text):
        network = match.group(1)
        if network not in NETWORKS:
            continue
        kept.append(text[last : match.start()])
        last = match.end()
        result = parse_args(
            match.group(2).split(":"), network, tag=match.group(0), start=match.start(), end=match.end()
        )
        if isinstance(result, Problem):
            problems.append(result)
            continue
        requests.append(result)
        warning = ignored_args_warning(result)
        if warning is not None:
            problems.append(warning)
    kept.append(text[last:])
    return ParsedPrompt("".join(kept), requests, problems)


def split_args(items: Sequence[object]) -> tuple[list[object], dict[str, str]]:
    """Split tag arguments into positional and named ones exactly like A1111's ``ExtraNetworkParams``.

    A string that ``split('=', 2)`` cuts into exactly two parts is named (a later key overwrites an earlier one);
    everything else, including non-strings such as the float the ``sd_lora`` option appends, is positional.
    """
    positional: list[object] = []
    named: dict[str, str] = {}
    for item in items:
        parts = item.split("=", 2) if isinstance(item, str) else [item]
        if len(parts) == 2:
            named[parts[0]] = parts[1]
        else:
            positional.append(item)
    return positional, named


def parse_args(
    name_and_args: Sequence[object],
    network: str = "lora",
    *,
    tag: str | None = None,
    start: int | None = None,
    end: int | None = None,
) -> LoraRequest | Problem:
    """Read one tag's arguments (A1111 ``ExtraNetworkParams.items``: strings, maybe a trailing float).

    tag, start, end: the original tag text and its offsets, when known; otherwise the tag is rebuilt from the
    items for messages. Returns the request, or a Problem naming the tag and the bad value.
    """
    if tag is None:
        tag = f"<{network}:{':'.join(str(item) for item in name_and_args)}>"
    positional, named = split_args(name_and_args)

    if not positional or not isinstance(positional[0], str) or positional[0] == "":
        return Problem(tag, "the tag has no LoRA name; write the name first, such as <lora:NAME:0.8>.")
    name = positional[0]

    te = _argument(positional, 1, named, "te", MISSING_WEIGHT, _to_weight_or_schedule)
    if isinstance(te, _Bad):
        return _bad_weight(tag, te.raw, "the te= value " if te.named else "")
    unet = _argument(positional, 2, named, "unet", te, _to_weight_or_schedule)
    if isinstance(unet, _Bad):
        return _bad_weight(
            tag, unet.raw, "the unet= value " if unet.named else "the UNet weight (third argument) "
        )
    dyn = _argument(positional, 3, named, "dyn", None, _to_rank)
    if isinstance(dyn, _Bad):
        return _bad_rank(tag, dyn.raw)

    te_value, te_schedule = _split_weight(te)
    unet_value, unet_schedule = _split_weight(unet)
    return LoraRequest(
        name=name,
        te=te_value,
        unet=unet_value,
        te_schedule=te_schedule,
        unet_schedule=unet_schedule,
        dyn=dyn,
        named={key: value for key, value in named.items() if key not in RESERVED_KEYS},
        tag=tag,
        start=start,
        end=end,
        network=network,
        ignored=tuple(str(item) for item in positional[4:]),
    )


def ignored_args_warning(request: LoraRequest) -> Problem | None:
    """A warning for positional arguments after dyn (A1111 ignores them silently), or None."""
    if not request.ignored:
        return None
    shown = ", ".join(f'"{item}"' for item in request.ignored)
    return Problem(
        request.tag,
        f"extra argument(s) {shown} after dyn are ignored; "
        "a tag takes at most name:te:unet:dyn, other options need a key such as lbw=….",
        severity="warning",
    )


def format_weight(value: float) -> str:
    """The shortest text that reads back as exactly ``value`` (``0.1`` → ``0.1``, ``1.0`` → ``1``, ``-8``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def tag_name_problem(name: str) -> Problem | None:
    """Why ``name`` cannot be written inside a tag (A1111 would misread it), or None when it can."""
    if name == "":
        return Problem(repr(name), "an empty name cannot be written in a <lora:…> tag.")
    if ":" in name or ">" in name:
        return Problem(
            name, 'names containing ":" or ">" cannot be written in a <lora:…> tag; rename the file.'
        )
    if len(name.split("=", 2)) == 2:
        return Problem(
            name, 'names with exactly one "=" are read as a key=value option in a tag; rename the file.'
        )
    return None


def format_tag(
    name: str,
    te: float,
    unet: float | None = None,
    dyn: int | None = None,
    named: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    network: str = "lora",
) -> str:
    """The shortest tag that ``parse_prompt`` reads back as these values.

    The te weight is always written (users read and edit it; card toggles look for it); unet only when it differs
    from te; dyn positionally or as ``dyn=``, whichever is shorter; then the named arguments in order:
    ``<lora:x:0.8>``, ``<lora:x:1:0.5>``, ``<lora:x:1:dyn=16>``, ``<lora:x:-1:lbw=OUTD>``.
    Raises ValueError for values no tag can carry (see ``tag_name_problem``; non-finite weights; dyn < 1;
    option keys or values containing ``:``, ``>`` or ``=``); that is a caller error, not a user one.
    """
    problem = tag_name_problem(name)
    if problem is not None:
        raise ValueError(str(problem))
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS}, not {network!r}")
    for weight in (te, unet):
        if weight is not None and not math.isfinite(weight):
            raise ValueError(f"weights must be finite, not {weight!r}")
    te_text = format_weight(te)
    unet_text = format_weight(unet) if unet is not None and unet != te else None

    args = [te_text] if unet_text is None else [te_text, unet_text]
    if dyn is not None:
        if isinstance(dyn, bool) or not isinstance(dyn, int) or dyn < 1:
            raise ValueError(f"dyn must be a whole number >= 1, not {dyn!r}")
        by_position = [te_text, unet_text or te_text, str(dyn)]
        by_key = [*args, f"dyn={dyn}"]
        args = by_position if len(":".join(by_position)) < len(":".join(by_key)) else by_key

    for key, value in NamedArgs(named or ()).items():
        if key in RESERVED_KEYS or key == "" or any(c in key + value for c in ":>="):
            raise ValueError(f"option {key!r}={value!r} cannot be written in a tag")
        args.append(f"{key}={value}")
    return f"<{network}:{name}:{':'.join(args)}>"


def card_weight(preferred: object, default_multiplier: float) -> float:
    """The weight a card click writes: the LoRA's preferred weight, unless it is 0, empty or unreadable, in which
    case A1111's "default multiplier" option (USERS C6, C7: preferred weight 0 means "use the default")."""
    weight = to_weight(preferred)
    return float(default_multiplier) if weight is None or weight == 0 else weight


class _Bad(NamedTuple):
    """An argument its parser rejected: the raw value and whether it came as ``name=value``."""

    raw: object
    named: bool


def _argument(
    positional: Sequence[object],
    index: int,
    named: Mapping[str, object],
    name: str,
    default: Any,
    parse: Callable[[object], Any],
) -> Any:
    """Argument ``index`` parsed by ``parse``, overridden by ``name=`` (A1111's order); ``default`` when neither
    is given; ``_Bad`` for the first value ``parse`` rejects (returns None)."""
    value = default
    given = [(positional[index], False)] if len(positional) > index else []
    if name in named:
        given.append((named[name], True))
    for raw, is_named in given:
        value = parse(raw)
        if value is None:
            return _Bad(raw, is_named)
    return value


def to_weight(value: object) -> float | None:
    """``float(value)`` when it is a finite number (A1111 uses ``float()``); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _to_weight_or_schedule(value: object) -> float | Schedule | None:
    """A plain weight (``to_weight``) or, for text with an ``@``, a keyframe schedule; None when neither."""
    if is_schedule_text(value):
        schedule = parse_schedule(str(value))
        return schedule if isinstance(schedule, Schedule) else None
    return to_weight(value)


def _split_weight(weight: float | Schedule) -> tuple[float, Schedule | None]:
    """(first-step weight, schedule or None): a schedule whose weight never changes is a plain weight."""
    if not isinstance(weight, Schedule):
        return weight, None
    return weight.initial, None if weight.constant else weight


def _to_rank(value: object) -> int | None:
    """``int(value)`` when it is a whole number >= 1 (A1111 uses ``int()``); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        rank = int(value) if value.is_integer() else None
    elif isinstance(value, (int, str)):
        try:
            rank = int(value)
        except ValueError:
            return None
    else:
        return None
    return rank if rank is not None and rank >= 1 else None


def _bad_weight(tag: str, value: object, label: str) -> Problem:
    raw = str(value)
    kind = "a finite number" if _is_non_finite(raw) else "a number"
    what = f'{label}"{raw}" is not {kind}'
    hint = "write a weight such as 0.8"
    reason = parse_schedule(raw) if is_schedule_text(raw) else None
    if isinstance(reason, str):
        return Problem(tag, f'{label}"{raw}" is not a valid step schedule: {reason}; {SCHEDULE_HINT}.')
    if _PRESET_LIKE.fullmatch(raw.strip()):
        hint += f"; for a block-weight preset write lbw={raw.strip()}"
    return Problem(tag, f"{what}; {hint}.")


def _bad_rank(tag: str, value: object) -> Problem:
    return Problem(
        tag,
        f'"{value}" is not a valid dyn; dyn is the number of DyLoRA ranks to keep, a whole number such as 16.',
    )


def _is_non_finite(text: str) -> bool:
    try:
        return not math.isfinite(float(text))
    except (ValueError, OverflowError):
        return False
