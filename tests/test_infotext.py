"""Infotext helpers: Lora hashes (USERS H1–H3, H9), paste remap by hash (H6, H7), AddNet fields (H8), N4."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lora_ext.infotext import (
    EMPTY_INPUT_SHORTHASH,
    addnet_fields_to_tags,
    format_lora_hashes,
    infotext_name,
    parse_lora_hashes,
    remap_prompt_by_hashes,
)
from lora_ext.syntax import parse_prompt

H1 = "0123456789ab"
H2 = "89abcdef0123"
H3 = "fedcba987654"


def weights(prompt: str) -> list[tuple[str, float, float, dict]]:
    parsed = parse_prompt(prompt)
    assert parsed.problems == []
    return [(r.name, r.te, r.unet, dict(r.named)) for r in parsed.requests]


# --- names and the Lora hashes field ---------------------------------------------------------------------------


def test_infotext_name_drops_folders_colons_and_commas() -> None:
    assert infotext_name("alice") == "alice"
    assert infotext_name("chars/sub/alice") == "alice"  # H3
    assert infotext_name("chars\\alice v2") == "alice v2"
    assert infotext_name("a: b, c") == "a b c"  # H1
    assert infotext_name(" spaced ") == "spaced"
    assert infotext_name("folder/") == ""


def test_format_lora_hashes() -> None:
    assert format_lora_hashes([("a", H1), ("b", H2)]) == f"a: {H1}, b: {H2}"
    # hires pass repeats (H2): dedupe, order kept, first hash wins; empty names/hashes skipped
    pairs = [("b", H2), ("chars/a:x,y", H1), ("b", H2), ("b", H3), ("", H3), ("c", "")]
    assert format_lora_hashes(pairs) == f"b: {H2}, axy: {H1}"
    assert format_lora_hashes([]) == ""


def test_parse_lora_hashes_as_a1111_writes_and_quotes_it() -> None:
    expected = {"a": H1, "b": H2}
    assert parse_lora_hashes(f"a: {H1}, b: {H2}") == expected
    assert parse_lora_hashes(f'"a: {H1}, b: {H2}"') == expected
    assert parse_lora_hashes(f'  "a:{H1} ,b :  {H2.upper()}"  ') == expected
    assert parse_lora_hashes(f'"\\"a\\": {H1}"') == {"a": H1}  # JSON-escaped quotes inside
    assert parse_lora_hashes(f"my lora v2: {H1}") == {"my lora v2": H1}
    assert parse_lora_hashes(f"a: {H1}, a: {H2}") == {"a": H1}


def test_parse_lora_hashes_is_tolerant_of_garbage() -> None:
    for junk in ("", '"', '""', ",,,", "a", ":x", "a:", "::", "no hashes here", None, 12, ["a: b"], b"a: b"):
        assert parse_lora_hashes(junk) == {}
    assert parse_lora_hashes(f"garbage, a: {H1}, :,, b:") == {"a": H1}


infotext_names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12).map(infotext_name)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(infotext_names, st.text("0123456789abcdef", min_size=12, max_size=12)), max_size=6))
def test_lora_hashes_round_trip(pairs: list[tuple[str, str]]) -> None:
    expected: dict[str, str] = {}
    for name, shorthash in pairs:
        if (
            name and name.strip("\"'") == name
        ):  # names wrapped in quotes lose them: A1111 could not write those
            expected.setdefault(name, shorthash)
    assert parse_lora_hashes(format_lora_hashes([(n, h) for n, h in pairs if n in expected])) == expected
    assert parse_lora_hashes('"' + format_lora_hashes(list(expected.items())) + '"') == expected


# --- paste remap -----------------------------------------------------------------------------------------------


def lookup_from(table: dict[str, list[str]]):
    calls: list[str] = []

    def lookup(shorthash: str) -> list[str]:
        calls.append(shorthash)
        return table.get(shorthash, [])

    lookup.calls = calls  # type: ignore[attr-defined]
    return lookup


def test_remap_renames_on_a_unique_valid_match_and_keeps_every_other_byte() -> None:
    prompt = "a cat, <lora:old:-1.5:0.5:lbw=OUTD>, <lyco:old>, <lora:other:1> <hypernet:old:1> end"
    new, notes = remap_prompt_by_hashes(prompt, {"old": H1.upper()}, lookup_from({H1: ["new one"]}))
    assert (
        new == "a cat, <lora:new one:-1.5:0.5:lbw=OUTD>, <lyco:new one>, <lora:other:1> <hypernet:old:1> end"
    )
    assert weights(new)[0] == ("new one", -1.5, 0.5, {"lbw": "OUTD"})  # N4: negative weights untouched
    assert len(notes) == 2  # every rename is said, never silent
    assert "<lora:old:-1.5:0.5:lbw=OUTD>" in notes[0] and "new one" in notes[0] and H1 in notes[0]
    assert "<lyco:old>" in notes[1] and "new one" in notes[1]


def test_remap_matches_folder_qualified_and_named_first_tags() -> None:
    lookup = lookup_from({H1: ["people/alice_v2"]})
    new, _ = remap_prompt_by_hashes("<lora:chars/alice:0.7> <lora:chars/alice:1>", {"alice": H1}, lookup)
    assert new == "<lora:people/alice_v2:0.7> <lora:people/alice_v2:1>"
    new, _ = remap_prompt_by_hashes("<lora:te=0.2:alice:1>", {"alice": H1}, lookup)
    assert new == "<lora:te=0.2:people/alice_v2:1>"


def test_remap_leaves_tags_of_different_names_sharing_one_entry() -> None:
    """``a/x`` and ``b/x`` both write ``x`` (no folders in ``Lora hashes``): one hash cannot name both files."""
    lookup = lookup_from({H1: ["x_v2"]})
    prompt = "<lora:a/x:1> <lora:b/x:0.5> <lora:y:1>"
    new, notes = remap_prompt_by_hashes(prompt, {"x": H1, "y": H1}, lookup)
    assert new == "<lora:a/x:1> <lora:b/x:0.5> <lora:x_v2:1>"
    assert any("a/x, b/x" in note and "left as written" in note for note in notes)
    # the hires prompt pasted with it counts too
    new, _ = remap_prompt_by_hashes("<lora:a/x:1>", {"x": H1}, lookup, also_in=["<lora:b/x:1>"])
    assert new == "<lora:a/x:1>"


def test_remap_looks_each_hash_up_once_in_lowercase() -> None:
    lookup = lookup_from({H1: ["x"]})
    remap_prompt_by_hashes("<lora:a:1> <lora:a:2> <lora:b:1>", {"a": H1.upper(), "b": H1}, lookup)
    assert lookup.calls == [H1, H1]  # once for alias a, once for alias b


def test_remap_leaves_tags_and_says_why() -> None:
    prompt = "<lora:none:1> <lora:two:1> <lora:bad:1> <lora:empty:1> <lora:same:1> <lora:unhashed:1>"
    hashes = {"none": H1, "two": H2, "bad": "xyz", "empty": EMPTY_INPUT_SHORTHASH, "same": H3}
    lookup = lookup_from({H2: ["a", "b", "a"], EMPTY_INPUT_SHORTHASH: ["broken"], H3: ["same"]})
    new, notes = remap_prompt_by_hashes(prompt, hashes, lookup)
    assert new == prompt  # never swap on doubt (H6)
    assert len(notes) == 4
    none, two, bad, empty = notes
    assert "none" in none and H1 in none and "no local file" in none and "left as written" in none
    assert "two" in two and "matches 2 local files (a, b)" in two and "left as written" in two
    assert '"xyz"' in bad and "12-digit hex" in bad
    assert EMPTY_INPUT_SHORTHASH in empty and "empty input" in empty
    assert EMPTY_INPUT_SHORTHASH not in lookup.calls  # the empty-input hash is never looked up


def test_remap_refuses_local_names_no_tag_can_carry() -> None:
    new, notes = remap_prompt_by_hashes("<lora:a:1>", {"a": H1}, lookup_from({H1: ["b:c"]}))
    assert new == "<lora:a:1>" and len(notes) == 1 and "b:c" in notes[0]


def test_remap_without_hashes_changes_nothing() -> None:
    prompt = (
        "<lora:a:1> <lora:x:abc> text"  # H9: other UIs write no hashes; bad tags are not our business here
    )
    assert remap_prompt_by_hashes(prompt, {}, lookup_from({})) == (prompt, [])
    assert remap_prompt_by_hashes(prompt, parse_lora_hashes(None), lookup_from({})) == (prompt, [])


def test_infotext_round_trip_with_negative_weights() -> None:
    # N4: write infotext for a prompt with negative weights, paste it back on another machine, get the same weights.
    prompt = "<lora:styles/slider:-8> <lora:lcm:-1:0.5> photo"
    field = format_lora_hashes(
        [(r.name, h) for r, h in zip(parse_prompt(prompt).requests, (H1, H2), strict=True)]
    )
    assert field == f"slider: {H1}, lcm: {H2}"
    new, _ = remap_prompt_by_hashes(prompt, parse_lora_hashes(f'"{field}"'), lookup_from({H1: ["slider_v3"]}))
    assert new == "<lora:slider_v3:-8> <lora:lcm:-1:0.5> photo"
    assert [(name, te, unet) for name, te, unet, _ in weights(new)] == [
        ("slider_v3", -8.0, -8.0),
        ("lcm", -1.0, 0.5),
    ]


# --- AddNet ----------------------------------------------------------------------------------------------------


def test_addnet_fields_to_tags() -> None:
    params = {
        "Prompt": "a cat",
        "AddNet Enabled": "True",
        "AddNet Module 1": "LoRA",
        "AddNet Model 1": "style_a(0123abcd)",
        "AddNet Weight A 1": "0.6",
        "AddNet Weight B 1": "0.6",
        "AddNet Module 2": "LoRA",
        "AddNet Model 2": "char b (89ABCDEF0123)",
        "AddNet Weight A 2": "-0.5",
        "AddNet Weight B 2": "1",
        "AddNet Module 3": "LoRA",
        "AddNet Model 3": "no weight",
        "AddNet Module 4": "Hypernetwork",
        "AddNet Model 4": "hn(1234)",
        "AddNet Weight A 4": "1",
    }
    text = addnet_fields_to_tags(params)
    assert text == "<lora:style_a:0.6><lora:char b:-0.5:1><lora:no weight:1>"
    assert [(n, te, unet) for n, te, unet, _ in weights(text)] == [
        ("style_a", 0.6, 0.6),
        ("char b", -0.5, 1.0),  # N4: negative AddNet weight survives
        ("no weight", 1.0, 1.0),
    ]
    assert params["Prompt"] == "a cat"  # pure: the host appends


def test_addnet_fields_accept_numbers_and_report_junk_weights_through_parsing() -> None:
    assert addnet_fields_to_tags(
        {"AddNet Module 1": "LoRA", "AddNet Model 1": "x", "AddNet Weight A 1": 0.25}
    ) == ("<lora:x:0.25>")
    junk = addnet_fields_to_tags(
        {"AddNet Module 1": "LoRA", "AddNet Model 1": "x", "AddNet Weight A 1": "abc"}
    )
    assert junk == "<lora:x:abc>"
    assert [p.subject for p in parse_prompt(junk).problems] == ["<lora:x:abc>"]  # visible, not a silent 1.0


def test_addnet_fields_without_loras_give_none() -> None:
    assert addnet_fields_to_tags({}) is None
    assert addnet_fields_to_tags({"Prompt": "x", "Steps": "20"}) is None
    assert addnet_fields_to_tags({"AddNet Module 1": "LoRA"}) is None
    assert addnet_fields_to_tags({"AddNet Module 1": "LoRA", "AddNet Model 1": None}) is None
    assert addnet_fields_to_tags({"AddNet Module 1": "LoRA", "AddNet Model 1": "(abcd)"}) is None
    assert addnet_fields_to_tags({"AddNet Module 1": "LoRA", "AddNet Model 1": "a:b"}) is None
    assert (
        addnet_fields_to_tags({"AddNet Module 1": "LoRA", "AddNet Model 1": "x", "AddNet Weight A 1": "1:2"})
        is None
    )
