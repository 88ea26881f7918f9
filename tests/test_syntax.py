"""Tag syntax: A1111_CONTRACT §3.2–3.5 examples, USERS S1–S3, S8, N1, G1, C7, and tag formatting."""

from __future__ import annotations

import pytest

from lora_ext.errors import Problem
from lora_ext.syntax import (
    MISSING_WEIGHT,
    LoraRequest,
    NamedArgs,
    card_weight,
    format_tag,
    format_weight,
    parse_args,
    parse_prompt,
    split_args,
    tag_name_problem,
)


def only_request(text: str) -> LoraRequest:
    parsed = parse_prompt(text)
    assert parsed.problems == [], parsed.problems
    assert len(parsed.requests) == 1
    return parsed.requests[0]


def only_problem(text: str) -> Problem:
    parsed = parse_prompt(text)
    assert parsed.requests == []
    assert len(parsed.problems) == 1
    return parsed.problems[0]


# A1111_CONTRACT §3.3 table, plus the built-in's reading of it (§3.5): tag -> (name, te, unet, dyn, named).
CONTRACT_TABLE = [
    ("<lora:foo>", ("foo", 1.0, 1.0, None, {})),
    ("<lora:foo:0.6>", ("foo", 0.6, 0.6, None, {})),
    ("<lora:foo:1:0.5>", ("foo", 1.0, 0.5, None, {})),
    ("<lora:foo:1:1:16>", ("foo", 1.0, 1.0, 16, {})),
    ("<lora:foo:unet=0.5>", ("foo", 1.0, 0.5, None, {})),
    ("<lora:foo:0.8:te=0>", ("foo", 0.0, 0.0, None, {})),
    ("<lora:foo:-1.5>", ("foo", -1.5, -1.5, None, {})),
    ("<lora:foo:1:lbw=OUTD:stop=10>", ("foo", 1.0, 1.0, None, {"lbw": "OUTD", "stop": "10"})),
    ("<lora:a=b=c>", ("a=b=c", 1.0, 1.0, None, {})),
]


@pytest.mark.parametrize(("tag", "expected"), CONTRACT_TABLE)
def test_contract_table(tag: str, expected: tuple) -> None:
    request = only_request(tag)
    assert (request.name, request.te, request.unet, request.dyn, dict(request.named)) == expected
    assert request.tag == tag and (request.start, request.end) == (0, len(tag))
    assert request.network == "lora"


@pytest.mark.parametrize(
    ("tag", "te", "unet", "dyn"),
    [
        ("<lora:x:te=0.3:0.9>", 0.3, 0.3, None),  # te= overrides positional te, unet follows the override
        ("<lora:x:0.9:unet=0.2:te=0.4>", 0.4, 0.2, None),  # named in any order (S1)
        ("<lora:x:1:0.5:unet=2>", 1.0, 2.0, None),  # unet= overrides positional unet
        ("<lora:x:1:1:8:dyn=4>", 1.0, 1.0, 4),  # dyn= overrides positional dyn
        ("<lora:x:dyn=13:0.7>", 0.7, 0.7, 13),
        ("<lyco:Model:1:0.5:dyn=13>", 1.0, 0.5, 13),  # old LyCORIS prompts keep working (S2)
    ],
)
def test_named_arguments_override_positional(tag: str, te: float, unet: float, dyn: int | None) -> None:
    request = only_request(tag)
    assert (request.te, request.unet, request.dyn) == (te, unet, dyn)
    assert dict(request.named) == {}


@pytest.mark.parametrize(
    ("weight", "value"),
    [("-8", -8.0), ("+1.5", 1.5), (".5", 0.5), ("1e-1", 0.1), ("12", 12.0), ("-0", -0.0), (" 0.7 ", 0.7)],
)
def test_weights_of_any_sign_and_size(weight: str, value: float) -> None:
    assert only_request(f"<lora:x:{weight}>").te == value  # N1: no range check


@pytest.mark.parametrize(
    "name",
    [
        "my lora v2",
        "style.v1.5",
        "char (outfit)",
        "рисунок_キャラ",
        "folder/sub/name",
        "a__b__c",
        "name.safetensors",
    ],
)
def test_names_are_opaque(name: str) -> None:
    request = only_request(f"a photo, <lora:{name}:0.7>, sharp")
    assert request.name == name  # S6, S8: dots, __, folders, unicode kept as typed


def test_lyco_is_lora() -> None:
    lora = only_request("<lora:x:0.5:0.25:dyn=8:lbw=ALL>")
    lyco = only_request("<lyco:x:0.5:0.25:dyn=8:lbw=ALL>")
    assert (lyco.name, lyco.te, lyco.unet, lyco.dyn, lyco.named) == (
        lora.name,
        lora.te,
        lora.unet,
        8,
        lora.named,
    )
    assert lyco.network == "lyco"


def test_clean_prompt_strips_only_our_tags_and_keeps_everything_else() -> None:
    text = "masterpiece, <lora:a:1> girl <hypernet:h:0.5>, <LORA:b:1> <lyco:c:-1>\n<lora:bad:x> end"
    parsed = parse_prompt(text)
    assert parsed.clean == "masterpiece,  girl <hypernet:h:0.5>, <LORA:b:1> \n end"
    assert [r.name for r in parsed.requests] == ["a", "c"]
    assert [r.tag for r in parsed.requests] == ["<lora:a:1>", "<lyco:c:-1>"]
    for request in parsed.requests:
        assert text[request.start : request.end] == request.tag


def test_one_bad_tag_never_affects_the_others() -> None:
    parsed = parse_prompt("<lora:a:0.5> <lora:x:abc> <lora:b:1:0.5> <lora:c:1:1:sixteen> <lora:d>")
    assert [(r.name, r.te, r.unet) for r in parsed.requests] == [
        ("a", 0.5, 0.5),
        ("b", 1.0, 0.5),
        ("d", 1.0, 1.0),
    ]  # S3
    assert [p.subject for p in parsed.problems] == ["<lora:x:abc>", "<lora:c:1:1:sixteen>"]
    assert all(p.severity == "error" for p in parsed.problems)


def test_bad_weight_message_names_tag_and_value() -> None:
    problem = only_problem("<lora:x:abc>")
    assert str(problem) == '<lora:x:abc>: "abc" is not a number; write a weight such as 0.8.'


@pytest.mark.parametrize(
    ("tag", "must_contain"),
    [
        ("<lora:x:1:OUTD>", ['"OUTD"', "UNet weight", "lbw=OUTD"]),  # G1: old LBW positional form explained
        ("<lora:net:0@0,1>", ['"0@0,1"', "step schedule", '"1"', "weight@step"]),  # G6 malformed: explained
        ("<lora:x:1:unet=1@x>", ['unet= value "1@x"', '"x"', "weight@step"]),
        ("<lora:x:nan@0>", ['"nan"', "finite weight"]),
        ("<lora:x:te=nan>", ['te= value "nan"', "finite"]),
        ("<lora:x:inf>", ['"inf"', "finite"]),
        ("<lora:x:1e999>", ['"1e999"', "finite"]),
        ("<lora:x:1:unet=>", ['unet= value ""']),
        ("<lora:x::0.5>", ['""', "not a number"]),
        ("<lora:x:1:1:1.5>", ['"1.5"', "dyn"]),
        ("<lora:x:dyn=0>", ['"0"', "dyn"]),
        ("<lora:x:dyn=-4>", ['"-4"', "dyn"]),
        ("<lora:te=1>", ["no LoRA name"]),
        ("<lora::1>", ["no LoRA name"]),
    ],
)
def test_malformed_tags_are_problems_naming_tag_and_value(tag: str, must_contain: list[str]) -> None:
    problem = only_problem(f"before {tag} after")
    assert problem.subject == tag and problem.severity == "error"
    for text in must_contain:
        assert text in problem.message


def test_bad_positional_te_is_reported_even_when_te_named() -> None:
    # A1111 evaluates float(positional[1]) before te=, so this tag fails there too; we say why instead.
    assert "abc" in only_problem("<lora:x:abc:te=1>").message


def test_extra_positional_arguments_are_ignored_with_a_warning() -> None:
    parsed = parse_prompt("<lora:x:1:0.5:4:ROUT:0.7>")
    (request,) = parsed.requests
    assert (request.te, request.unet, request.dyn, request.ignored) == (1.0, 0.5, 4, ("ROUT", "0.7"))
    (warning,) = parsed.problems
    assert warning.severity == "warning" and '"ROUT", "0.7"' in warning.message


def test_a1111_regex_quirks_are_kept() -> None:
    # `[^>]+` runs over a second "<": A1111 reads one tag "a<lora" with weight "b" here, not two tags.
    parsed = parse_prompt("x <lora:a<lora:b:1> y")
    assert parsed.requests == [] and [p.subject for p in parsed.problems] == ["<lora:a<lora:b:1>"]
    assert parsed.clean == "x  y"
    assert only_request("<lora:a<b:1>").name == "a<b"
    # A tag of another network swallows what looks like ours inside it, as in A1111.
    assert parse_prompt("<hypernet:<lora:x:1>>").requests == []
    # Network names are case-sensitive registry keys.
    assert parse_prompt("<Lora:x:1>").requests == []
    # No argument at all is not a tag.
    assert parse_prompt("<lora:>").clean == "<lora:>"


def test_split_args_follows_extra_network_params() -> None:
    positional, named = split_args(["x", "0.5", "te=1", "a=b=c", "k=1", "k=2", 0.8, "=v"])
    assert positional == ["x", "0.5", "a=b=c", 0.8]
    assert named == {"te": "1", "k": "2", "": "v"}


def test_parse_args_accepts_items_with_a_float_from_the_sd_lora_option() -> None:
    request = parse_args(["foo", 0.65])
    assert isinstance(request, LoraRequest)
    assert (request.name, request.te, request.unet, request.start, request.end) == (
        "foo",
        0.65,
        0.65,
        None,
        None,
    )
    assert request.tag == "<lora:foo:0.65>"
    lyco = parse_args(["foo", "1", "unet=0"], "lyco")
    assert isinstance(lyco, LoraRequest) and (lyco.te, lyco.unet, lyco.network) == (1.0, 0.0, "lyco")


@pytest.mark.parametrize("items", [[], ["x", "bad"], [3.0], ["x", True], ["x", None]])
def test_parse_args_returns_problems_for_bad_items(items: list) -> None:
    assert isinstance(parse_args(items), Problem)


def test_requests_are_hashable_and_named_is_a_mapping() -> None:
    a = only_request("<lora:x:1:lbw=OUTD:stop=10>")
    b = only_request("<lora:x:1:stop=10:lbw=OUTD>")
    assert a.named == b.named == {"lbw": "OUTD", "stop": "10"}
    assert list(a.named) == ["lbw", "stop"] and list(b.named) == ["stop", "lbw"]  # tag order kept
    assert hash(a.named) == hash(b.named)
    assert a.named["lbw"] == "OUTD" and a.named.get("hr") is None
    assert len({a, a}) == 1
    direct = LoraRequest("x", 1.0, 1.0, named={"lbw": "OUTD"})
    assert isinstance(direct.named, NamedArgs) and hash(direct) == hash(direct)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, "0.1"),
        (1.0, "1"),
        (-8.0, "-8"),
        (0.8, "0.8"),
        (1 / 3, "0.3333333333333333"),
        (1e-5, "1e-05"),
        (2, "2"),
    ],
)
def test_format_weight_is_short_and_exact(value: float, text: str) -> None:
    assert format_weight(value) == text
    assert float(text) == value


@pytest.mark.parametrize(
    ("args", "kwargs", "tag"),
    [
        (("x", 0.8), {}, "<lora:x:0.8>"),
        (("x", 1.0), {}, "<lora:x:1>"),
        (("x", 1.0, 0.5), {}, "<lora:x:1:0.5>"),
        (("x", 0.5, 0.5), {}, "<lora:x:0.5>"),
        (("x", -1.0), {"named": {"lbw": "OUTD"}}, "<lora:x:-1:lbw=OUTD>"),
        (("x", 1.0), {"dyn": 16}, "<lora:x:1:1:16>"),
        (("x", 0.75), {"dyn": 16}, "<lora:x:0.75:dyn=16>"),
        (("x", 0.75, 0.5), {"dyn": 4}, "<lora:x:0.75:0.5:4>"),
        (("folder/my lora", 0.1), {"network": "lyco"}, "<lyco:folder/my lora:0.1>"),
        (("a=b=c", 1), {}, "<lora:a=b=c:1>"),
    ],
)
def test_format_tag_shortest_faithful_form(args: tuple, kwargs: dict, tag: str) -> None:
    assert format_tag(*args, **kwargs) == tag
    request = only_request(tag)
    te = args[1]
    unet = args[2] if len(args) > 2 else te
    assert (request.name, request.te, request.unet, request.dyn) == (args[0], te, unet, kwargs.get("dyn"))
    assert request.named == kwargs.get("named", {})


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("a:b", 1.0), {}),
        (("a>b", 1.0), {}),
        (("a=b", 1.0), {}),
        (("", 1.0), {}),
        (("x", float("nan")), {}),
        (("x", 1.0, float("inf")), {}),
        (("x", 1.0), {"dyn": 0}),
        (("x", 1.0), {"named": {"te": "1"}}),
        (("x", 1.0), {"named": {"lbw": "a:b"}}),
        (("x", 1.0), {"named": {"k": "a=b"}}),
        (("x", 1.0), {"network": "hypernet"}),
    ],
)
def test_format_tag_refuses_what_no_tag_can_carry(args: tuple, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        format_tag(*args, **kwargs)


def test_tag_name_problem() -> None:
    assert tag_name_problem("style v1.5 (x)") is None
    assert tag_name_problem("a=b=c") is None
    for bad in ("", "a:b", "a>b", "k=v"):
        problem = tag_name_problem(bad)
        assert isinstance(problem, Problem) and problem.message


def test_missing_weight_and_card_weight() -> None:
    assert MISSING_WEIGHT == 1.0
    assert only_request("<lora:x>").te == MISSING_WEIGHT  # not the "default multiplier" option
    assert card_weight(0.6, 0.8) == 0.6
    assert card_weight(-2, 0.8) == -2.0  # N2: negatives allowed
    assert card_weight("0.4", 0.8) == 0.4
    for use_default in (0, 0.0, "0", "", None, "abc", float("nan")):
        assert card_weight(use_default, 0.8) == 0.8  # C7: 0 means "use the default"
