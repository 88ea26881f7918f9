"""Card records for the library features of the LoRA tab: date-added and Civitai publish sort keys (USERS C14),
the description carried for display on cards (C5), and the tag filter's list and per-card tags: the user's own tags
from ``{name}.json`` and training tags (C17)."""

from __future__ import annotations

import json

from test_ui_cards import by_name, entry

from lora_ext.library.entry import CivitaiInfo, parse_user_tags
from lora_ext.ui.browser import browser_html
from lora_ext.ui.cards import card_data
from lora_ext.ui.tagfilter import TAG_FILTER_LIMIT, card_tags, listed_tags


def test_sort_keys_carry_date_added_and_civitai_publish_date():
    entries = [
        entry("a", added=1_700_000_000.5, civitai=CivitaiInfo(found=True, published=1_600_000_000.0)),
        entry("b", added=1_650_000_000.0, civitai=CivitaiInfo(found=False)),
        entry("c", added=1_750_000_000.0),
    ]
    cards = by_name(card_data(entries))
    assert [cards[n]["sort"]["added"] for n in "abc"] == [1_700_000_000.5, 1_650_000_000.0, 1_750_000_000.0]
    assert [cards[n]["sort"]["published"] for n in "abc"] == [1_600_000_000.0, None, None]
    json.dumps(cards)  # JSON-ready (None -> null)


def test_sort_select_offers_date_added_and_civitai_published():
    html = browser_html("p")
    assert '<option value="added">Date added</option>' in html
    assert '<option value="published">Civitai published</option>' in html


def test_description_modes_are_offered_and_off_comes_first():
    html = browser_html("p")
    select = html.split('class="lora-ext-descmode"', 1)[1].split("</select>", 1)[0]
    assert select.index('value="off"') < select.index('value="text"') < select.index('value="html"')


def test_records_carry_the_description_as_written_and_the_card_html_never_holds_it():
    raw = "<b>bold</b> <img src=x onerror=alert(1)>"
    card = card_data([entry("x", description=raw)])["cards"][0]
    assert card["desc"] == raw  # the browser escapes it, or sanitises it when the user asks for HTML
    assert "onerror" not in card["html"] and "<b>" not in card["html"]
    assert card_data([entry("y")])["cards"][0]["desc"] == ""


def _tagged(relpath: str, *tags: str, **kw):
    return entry(relpath, metadata={"ss_tag_frequency": {"5_x": {t: 3 for t in tags}}}, **kw)


def test_tag_list_counts_cards_most_common_first_and_cards_carry_their_listed_tags():
    entries = [
        _tagged("a", "Ink", "mountain", " river "),
        _tagged("b", "ink", "river"),
        _tagged("c", "river"),
        entry("d"),
    ]
    data = card_data(entries)
    assert data["tags"] == [["river", 3, "training"], ["ink", 2, "training"], ["mountain", 1, "training"]]
    cards = by_name(data)
    assert cards["a"]["tags"] == ["ink", "mountain", "river"]
    assert cards["b"]["tags"] == ["ink", "river"] and cards["d"]["tags"] == []


def test_tags_of_both_datasets_and_json_text_tables_are_offered():
    two = entry("two", metadata={"ss_tag_frequency": {"1_a": {"cat": 1}, "1_b": {"dog": 2}}})
    text = entry("text", metadata={"ss_tag_frequency": json.dumps({"1_a": {"cat": 5}})})
    data = card_data([two, text])
    assert data["tags"] == [["cat", 2, "training"], ["dog", 1, "training"]]
    assert by_name(data)["two"]["tags"] == ["cat", "dog"]


def test_search_only_cards_are_not_counted_and_the_list_is_bounded():
    hidden = _tagged(".old/secret", "secret tag", hidden=True)  # under a dot-folder: shown only for searches
    data = card_data([hidden, _tagged("shown", "shown tag")])
    assert data["tags"] == [["shown tag", 1, "training"]]
    many = [_tagged(f"l{i}", f"tag{i:04d}", "common") for i in range(TAG_FILTER_LIMIT + 50)]
    data = card_data(many)
    assert len(data["tags"]) == TAG_FILTER_LIMIT
    assert data["tags"][0] == ["common", TAG_FILTER_LIMIT + 50, "training"]
    listed = {t for t, _, _ in data["tags"]}
    assert all(set(card["tags"]) <= listed for card in data["cards"])
    assert by_name(data)["l0"]["tags"] == ["tag0000", "common"]
    assert by_name(data)[f"l{TAG_FILTER_LIMIT + 49}"]["tags"] == ["common"]  # its own tag is not listed


def test_card_tags_and_listed_tags():
    assert card_tags([" Ink ", "ink", "", "  ", "River"]) == ["ink", "river"]
    assert listed_tags([[], [], []], [["b", "a"], ["a"], ["c", "b"]], limit=2) == [
        ("a", 2, "training"),
        ("b", 2, "training"),
    ]
    assert listed_tags([], [], limit=5) == []
    # every user tag is listed first, whatever the limit; a card counts once for a tag it has both ways
    listed = listed_tags([["z"], ["b"], []], [["b", "a"], ["a"], ["a"]], limit=1)
    assert listed == [("b", 2, "user"), ("z", 1, "user"), ("a", 3, "training")]


def test_user_tags_parse_from_a_list_or_a_comma_separated_string():
    assert parse_user_tags("ink, Portrait ,,ink") == ["ink", "Portrait"]
    assert parse_user_tags(["style", " ", 3, None, "style", " old "]) == ["style", "old"]
    assert parse_user_tags(None) == parse_user_tags(7) == parse_user_tags({"a": 1}) == []


def test_user_tags_are_listed_first_searchable_and_carried_by_their_cards():
    entries = [
        _tagged("a", "ink", "river", user_metadata={"tags": ["Favourite style", "ink"]}),
        _tagged("b", "river", user_metadata={"tags": "favourite style, character"}),
        _tagged(".old/c", "river", hidden=True, user_metadata={"tags": ["archived"]}),  # search-only
        entry("d"),
    ]
    data = card_data(entries)
    assert data["tags"] == [
        ["favourite style", 2, "user"],
        ["character", 1, "user"],
        ["ink", 1, "user"],  # a user tag on "a", a training tag there too: listed once, as the user's
        ["river", 2, "training"],
    ]
    cards = by_name(data)
    assert cards["a"]["tags"] == ["favourite style", "ink", "river"]
    assert cards["b"]["tags"] == ["favourite style", "character", "river"]
    assert cards["d"]["tags"] == []
    assert "character" in cards["b"]["search"] and "archived" in cards[".old/c"]["search"]
