"""Property tests for the tag syntax (hypothesis).

Round trip: for fillers that contain no ``<`` and tag values any tag can carry, the text
``filler0 + format_tag(r1) + filler1 + … + format_tag(rn) + fillern`` parses to exactly r1…rn (name, te, unet, dyn,
named, network), no problems, ``clean == filler0 + … + fillern``, and every request's ``tag`` is the text at
``start:end``.

Robustness: ``parse_prompt`` and ``parse_args`` never raise on 100 000 generated inputs (a seeded generator per
hypothesis example, 50 inputs each, over four tests; plus strings hypothesis draws itself), and ``parse_prompt``'s
result is always consistent with A1111's regex: each ``lora``/``lyco`` match gives exactly one request or one
error, ``clean`` is the text without those matches, weights are finite, and every request formats back to a tag
that parses to the same values.
"""

from __future__ import annotations

import math
import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from lora_ext.errors import Problem
from lora_ext.syntax import (
    NETWORKS,
    RESERVED_KEYS,
    LoraRequest,
    format_tag,
    parse_args,
    parse_prompt,
)

A1111_TAG = re.compile(r"<(\w+):([^>]+)>")
STRINGS_PER_EXAMPLE = 50


def values(request: LoraRequest) -> tuple:
    return (request.name, request.te, request.unet, request.dyn, dict(request.named), request.network)


# --- round trip ------------------------------------------------------------------------------------------------

fillers = st.text(st.characters(blacklist_characters="<", blacklist_categories=("Cs",)), max_size=12)
names = st.text(
    st.characters(blacklist_characters=":>", blacklist_categories=("Cs",)), min_size=1, max_size=16
).filter(lambda name: len(name.split("=", 2)) != 2)
weights = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 1.0, -8.0, 0.1, 1e-300]
)
option_text = st.text(st.characters(blacklist_characters=":>=", blacklist_categories=("Cs",)), max_size=8)
options = st.dictionaries(
    option_text.filter(lambda key: key != "" and key not in RESERVED_KEYS), option_text, max_size=3
)
specs = st.tuples(
    names,
    weights,
    st.none() | weights,
    st.none() | st.integers(min_value=1, max_value=10**9),
    options,
    st.sampled_from(NETWORKS),
)


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.tuples(specs, fillers), max_size=5), fillers)
def test_formatted_tags_in_random_text_parse_back(pieces: list, first_filler: str) -> None:
    text, clean, tags = first_filler, first_filler, []
    for (name, te, unet, dyn, named, network), filler in pieces:
        tag = format_tag(name, te, unet, dyn, named, network)
        tags.append(tag)
        text += tag + filler
        clean += filler
    parsed = parse_prompt(text)
    assert parsed.problems == []
    assert parsed.clean == clean
    expected = [
        (name, te, te if unet is None else unet, dyn, named, network)
        for (name, te, unet, dyn, named, network), _ in pieces
    ]
    assert [values(r) for r in parsed.requests] == expected
    assert [r.tag for r in parsed.requests] == tags
    assert all(text[r.start : r.end] == r.tag for r in parsed.requests)


# --- robustness ------------------------------------------------------------------------------------------------


def check_consistent(text: str) -> None:
    parsed = parse_prompt(text)
    ours = [m for m in A1111_TAG.finditer(text) if m.group(1) in NETWORKS]
    errors = [p for p in parsed.problems if p.severity == "error"]
    assert len(parsed.requests) + len(errors) == len(ours)
    assert parsed.clean == A1111_TAG.sub(lambda m: "" if m.group(1) in NETWORKS else m.group(0), text)
    for request in parsed.requests:
        assert text[request.start : request.end] == request.tag
        assert math.isfinite(request.te) and math.isfinite(request.unet)
        assert request.dyn is None or request.dyn >= 1
        if "" not in request.named:  # the only thing a parsed tag can hold that no formatted tag can
            again = parse_prompt(
                format_tag(request.name, request.te, request.unet, request.dyn, request.named)
            )
            assert [values(r)[:5] for r in again.requests] == [values(request)[:5]]
    for problem in parsed.problems:
        assert isinstance(problem, Problem) and problem.subject in text and problem.message


TOKENS = ["<", ">", ":", "=", "<lora:", "<lyco:", "<hypernet:", "<LORA:", "te=", "unet=", "dyn=", "lbw=OUTD", "x",
          "a b", "0.5", "-1", "+.5", "1e-1", "1e999", "nan", "inf", "16", "0", "1.5", "abc", "@", ",", "/", "__", "\n",
          "é", "=="]  # fmt: skip
TAG_ALPHABET = list("<>:=lorayc xe.-+0123456789_/@,") + ["é", "\n"]
tokens = st.sampled_from(TOKENS)


# Hypothesis draws each string itself (shrinkable counterexamples) ...
@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(tokens | st.text(max_size=3), max_size=12).map("".join) | st.text(max_size=40))
def test_never_raises_on_drawn_text(text: str) -> None:
    check_consistent(text)


# ... and, for volume, a seeded generator per example: 4 tests x 500 examples x 50 strings = 100 000 strings.
BULK = settings(max_examples=500, deadline=None, database=None)
seeds = st.integers(min_value=0, max_value=2**64)


def random_text(rng: random.Random) -> str:
    return "".join(
        chr(rng.choice((rng.randrange(32, 127), rng.randrange(0xD800)))) for _ in range(rng.randrange(40))
    )


def token_text(rng: random.Random) -> str:
    return "".join(rng.choice(TOKENS) for _ in range(rng.randrange(14)))


ARGS = ["x", "my lora", "a=b=c", "0.5", "-8", "+.5", "1e-1", "abc", "", "nan", "16", "1.5", "0", "te=0.2", "unet=-1",
        "dyn=4", "dyn=x", "te=", "lbw=OUTD", "hr=0.5", "=v", "OUTD", "0@0,1@0.5", " 2 ", "é/ü"]  # fmt: skip


def tag_shaped_text(rng: random.Random) -> str:
    """Text around one or two tags whose arguments mix good and bad values (most of them are ours)."""
    parts = [token_text(rng)]
    for _ in range(rng.randrange(1, 3)):
        network = rng.choice(["lora", "lyco", "lora", "lyco", "hypernet"])
        args = [rng.choice(ARGS) for _ in range(rng.randrange(1, 7))]
        parts += [f"<{network}:{':'.join(args)}>", rng.choice(["", " ", ", ", "<", token_text(rng)])]
    return "".join(parts)


def alphabet_text(rng: random.Random) -> str:
    return "".join(rng.choice(TAG_ALPHABET) for _ in range(rng.randrange(40)))


def random_item(rng: random.Random) -> object:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(TOKENS)
    if kind == 1:
        return rng.choice(ARGS)
    if kind == 2:
        return rng.choice([rng.uniform(-1e3, 1e3), float("nan"), float("inf"), -0.0])
    if kind == 3:
        return rng.randrange(-(10**20), 10**20)
    return rng.choice([True, False, None, random_text(rng)])


@BULK
@given(seeds)
def test_never_raises_on_random_unicode_text(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(STRINGS_PER_EXAMPLE):
        check_consistent(random_text(rng))


@BULK
@given(seeds)
def test_never_raises_on_tag_token_text(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(STRINGS_PER_EXAMPLE):
        check_consistent(rng.choice((token_text, tag_shaped_text))(rng))


@BULK
@given(seeds)
def test_never_raises_on_tag_alphabet_text(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(STRINGS_PER_EXAMPLE):
        check_consistent(alphabet_text(rng))


@BULK
@given(seeds)
def test_parse_args_never_raises_on_random_items(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(STRINGS_PER_EXAMPLE):
        result = parse_args([random_item(rng) for _ in range(rng.randrange(7))])
        assert isinstance(result, (LoraRequest, Problem))
        if isinstance(result, LoraRequest):
            assert math.isfinite(result.te) and math.isfinite(result.unet)
