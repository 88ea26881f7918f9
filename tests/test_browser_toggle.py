"""Unit-style tests of the card insert/toggle logic in javascript/lora_ext.js, run in real chromium.

The pure functions are evaluated in a blank page holding only our script (USERS C11, C12, N4; CONTRACT §13, §16).
"""

from __future__ import annotations

import pytest

from tests.browser_helpers import browser_page, js_source

# (prompt before the click, card tag, activation text, separator, prompt after the click)
TOGGLE_CASES = [
    # insert into empty and non-empty prompts
    ("", "<lora:foo:0.8>", "", " ", "<lora:foo:0.8>"),
    ("a cat", "<lora:foo:0.8>", "", " ", "a cat <lora:foo:0.8>"),
    ("a cat", "<lora:foo:1>", "foo style", ", ", "a cat, <lora:foo:1> foo style"),
    # removal of exactly what was inserted
    ("a cat <lora:foo:0.8>", "<lora:foo:0.8>", "", " ", "a cat"),
    ("a cat, <lora:foo:1> foo style", "<lora:foo:1>", "foo style", ", ", "a cat"),
    ("<lora:foo:1> foo style", "<lora:foo:1>", "foo style", ", ", ""),
    ("<lora:foo:1> foo style, a cat", "<lora:foo:1>", "foo style", ", ", "a cat"),
    # any weight form the user typed or edited by hand (A1111 only matches [\d.]+)
    ("a cat <lora:foo:-1>", "<lora:foo:0.8>", "", " ", "a cat"),
    ("a cat <lora:foo:-0.35> foo style", "<lora:foo:1>", "foo style", " ", "a cat"),
    ("a cat <lora:foo:1e-1>", "<lora:foo:1>", "", " ", "a cat"),
    ("a cat <lora:foo:1:0.5>", "<lora:foo:1>", "", " ", "a cat"),
    ("a cat <lora:foo:0.8:te=0:unet=1.2>", "<lora:foo:1>", "", " ", "a cat"),
    ("a cat <lora:foo:1:lbw=OUTD:stop=10>", "<lora:foo:1>", "", " ", "a cat"),
    ("a cat <lora:foo:0@0,1@0.5>", "<lora:foo:1>", "", " ", "a cat"),
    ("a cat <lora:foo>", "<lora:foo:1>", "", " ", "a cat"),
    ("a cat <lyco:foo:0.5>", "<lora:foo:1>", "", " ", "a cat"),
    ("a cat <LORA:foo:0.5>", "<lora:foo:1>", "", " ", "a cat"),
    # a negative preferred weight on the card itself
    ("a cat", "<lora:slider:-2>", "", " ", "a cat <lora:slider:-2>"),
    ("a cat <lora:slider:-2>", "<lora:slider:-2>", "", " ", "a cat"),
    # other LoRAs and similar names stay untouched
    ("<lora:foobar:1> <lora:foo:1> <lora:bar:1>", "<lora:foo:1>", "", " ", "<lora:foobar:1> <lora:bar:1>"),
    ("<lora:foo.v2:1>", "<lora:foo:1>", "", " ", "<lora:foo.v2:1> <lora:foo:1>"),
    ("<lora:Foo:1>", "<lora:foo:1>", "", " ", "<lora:Foo:1> <lora:foo:1>"),
    # regex metacharacters in names and activation text are plain text
    ("a <lora:a.b(c)+[d]:1> x.*(y)", "<lora:a.b(c)+[d]:1>", "x.*(y)", " ", "a"),
    ("a <lora:a+b:1>", "<lora:a.b:1>", "", " ", "a <lora:a+b:1> <lora:a.b:1>"),
    # activation text that was edited away is not eaten; only the tag goes
    ("a cat <lora:foo:1> dog", "<lora:foo:1>", "foo style", " ", "a cat dog"),
    # folder-qualified names
    ("x <lora:sub/dir/foo:0.7>", "<lora:sub/dir/foo:1>", "", " ", "x"),
    # every duplicate goes
    ("<lora:foo:1> a <lora:foo:-1>", "<lora:foo:1>", "", " ", "a"),
    # a {prompt} placeholder in the activation text wraps the prompt, as styles do (S14), and unwraps it again
    (
        "a cat",
        "<lora:foo:1>",
        "masterpiece, {prompt}, foo style",
        ", ",
        "masterpiece, a cat, foo style, <lora:foo:1>",
    ),
    (
        "masterpiece, a cat, foo style, <lora:foo:-2>",
        "<lora:foo:1>",
        "masterpiece, {prompt}, foo style",
        ", ",
        "a cat",
    ),
    ("a cat", "<lora:foo:1>", "{prompt}", " ", "a cat <lora:foo:1>"),
    # ... and when the wrapping was edited away, only the tag goes
    ("a dog, <lora:foo:1>", "<lora:foo:1>", "masterpiece, {prompt}, foo style", ", ", "a dog"),
]


@pytest.fixture(scope="module")
def page():
    with browser_page() as p:
        p.set_content("<html><body><script>" + js_source() + "</script></body></html>")
        yield p


def test_toggle_cases(page):
    got = page.evaluate(
        "cases => cases.map(c => loraExtToggleTag(c[0], c[1], c[2], c[3]))",
        [list(c[:4]) for c in TOGGLE_CASES],
    )
    mismatches = [(c, g) for c, g in zip(TOGGLE_CASES, got, strict=True) if g != c[4]]
    assert not mismatches, mismatches


def test_two_clicks_round_trip(page):
    prompts = ["", "a cat", "a cat, masterpiece", "<lora:other:0.3> x", "trailing, "]
    for sep in [" ", ", ", "\n"]:
        got = page.evaluate(
            """([ps, sep]) => ps.map(p => {
                const once = loraExtToggleTag(p, '<lora:my lora:-0.75>', 'my trigger, words', sep);
                return [once, loraExtToggleTag(once, '<lora:my lora:-0.75>', 'my trigger, words', sep)];
            })""",
            [prompts, sep],
        )
        for p, (once, twice) in zip(prompts, got, strict=True):
            assert "<lora:my lora:-0.75> my trigger, words" in once
            assert twice == p, (sep, p, once, twice)


def test_two_clicks_round_trip_with_a_prompt_placeholder(page):
    prompts = ["", "a cat", "a cat, masterpiece", "<lora:other:0.3> x"]
    activations = [
        "masterpiece, {prompt}, foo style",
        "{prompt}, foo style",
        "foo style {prompt}",
        "{prompt}",
    ]
    for sep in [" ", ", ", "\n"]:
        got = page.evaluate(
            """([ps, acts, sep]) => ps.flatMap(p => acts.map(a => {
                const once = loraExtToggleTag(p, '<lora:foo:-0.5>', a, sep);
                return [p, a, once, loraExtToggleTag(once, '<lora:foo:-0.5>', a, sep)];
            }))""",
            [prompts, activations, sep],
        )
        for p, a, once, twice in got:
            assert "{prompt}" not in once and "<lora:foo:-0.5>" in once
            assert once.startswith(a.split("{prompt}")[0] + p)
            assert twice == p, (sep, p, a, once, twice)


def test_negative_text_toggle(page):
    got = page.evaluate(
        """() => [
            loraExtToggleText('', 'bad hands', ', ', true),
            loraExtToggleText('blurry', 'bad hands', ', ', true),
            loraExtToggleText('blurry, bad hands', 'bad hands', ', ', true),
            loraExtToggleText('blurry, bad hands', 'bad hands', ', ', false),
            loraExtToggleText('blurry', 'bad hands', ', ', false),
        ]"""
    )
    assert got == ["bad hands", "blurry, bad hands", "blurry, bad hands", "blurry", "blurry"]


def test_make_tag_uses_default_multiplier_when_no_preferred_weight(page):
    got = page.evaluate(
        "() => [loraExtMakeTag('x', null, 0.6), loraExtMakeTag('x', '', 1), loraExtMakeTag('x', -1.5, 1)]"
    )
    assert got == ["<lora:x:0.6>", "<lora:x:1>", "<lora:x:-1.5>"]


def test_select_filters_sorts_and_folders(page):
    cards = [
        {
            "name": "b",
            "search": "b style sub",
            "folder": "sub",
            "arch": "SD1",
            "fav": False,
            "sort": {"name": "b", "path": "sub/b", "created": 3, "modified": 1, "size": 10},
        },
        {
            "name": "a",
            "search": "a anime",
            "folder": "",
            "arch": "SDXL",
            "fav": True,
            "sort": {"name": "a", "path": "a", "created": 1, "modified": 2, "size": 30},
        },
        {
            "name": "c",
            "search": "c style deep",
            "folder": "sub/deep",
            "arch": "SD1",
            "fav": False,
            "sort": {"name": "c", "path": "sub/deep/c", "created": 2, "modified": 3, "size": 20},
        },
    ]
    got = page.evaluate(
        """cards => {
            const names = st => loraExtSelect(cards, st).map(c => c.name);
            return {
                path: names({}),
                size_desc: names({sort: 'size', desc: true}),
                created: names({sort: 'created'}),
                search: names({query: 'STYLE'}),
                two_terms: names({query: 'style deep'}),
                folder: names({folder: 'sub'}),
                deep: names({folder: 'sub/deep'}),
                arch: names({arch: 'SDXL'}),
                fav: names({favOnly: true}),
                folders: loraExtFolders(cards),
            };
        }""",
        cards,
    )
    assert got["path"] == ["a", "b", "c"]
    assert got["size_desc"] == ["a", "c", "b"]
    assert got["created"] == ["a", "c", "b"]
    assert got["search"] == ["b", "c"]
    assert got["two_terms"] == ["c"]
    assert got["folder"] == ["b", "c"]
    assert got["deep"] == ["c"]
    assert got["arch"] == ["a"]
    assert got["fav"] == ["a"]
    assert got["folders"] == ["sub", "sub/deep"]


def test_browser_renders_one_page_and_pages_through(page):
    """Only one page of cards is in the DOM (5 000-LoRA libraries); folder and arch filters re-page."""
    from test_ui_cards import entry

    from lora_ext.ui.browser import browser_html
    from lora_ext.ui.cards import card_data, data_block_html

    entries = [
        entry(f"{'deep/' if i % 10 == 0 else ''}lora_{i:03d}", arch="SDXL" if i < 5 else "SD1")
        for i in range(130)
    ]
    body = (
        '<div id="lora_ext_browser">' + browser_html("lora_ext") + "</div>"
        '<div id="lora_ext_data">' + data_block_html(card_data(entries, page_size=50), "lora_ext") + "</div>"
    )
    page.evaluate("html => { document.body.insertAdjacentHTML('beforeend', html); loraExtScan(); }", body)
    count = "() => document.querySelectorAll('.lora-ext-grid .lora-ext-card').length"
    info = "() => document.querySelector('.lora-ext-pageinfo').textContent"
    assert page.evaluate(count) == 50
    assert page.evaluate(info) == "130 of 130 LoRAs, page 1/3"
    page.click(".lora-ext-next")
    page.click(".lora-ext-next")
    assert page.evaluate(count) == 30
    page.click(".lora-ext-folder[data-folder='deep']")
    assert page.evaluate(count) == 13 and page.evaluate(info) == "13 of 130 LoRAs, page 1/1"
    page.click(".lora-ext-folder[data-folder='']")
    page.select_option(".lora-ext-arch", "SDXL")
    assert page.evaluate(count) == 5


def test_shadowed_card_inserts_nothing(page):
    """A card whose file no tag name reaches (``tag_name`` null, see library/usable_names.usable_tag_name) leaves the prompt
    alone; a normal card in the same page inserts its tag."""
    result = page.evaluate(
        """() => {
            const holder = document.createElement('div');
            holder.id = 'lora_ext_app_prompt';
            holder.innerHTML = '<textarea></textarea>';
            document.body.appendChild(holder);
            const box = holder.querySelector('textarea');
            box.value = 'a cat';
            const tab = {data: {default_multiplier: 1}};
            const card = {tag_name: null, weight: null, activation: 'trig', negative: ''};
            loraExtApplyCard(tab, card);
            const shadowed = box.value;
            loraExtApplyCard(tab, Object.assign({}, card, {tag_name: 'x'}));
            const normal = box.value;
            holder.remove();
            return [shadowed, normal];
        }"""
    )
    assert result == ["a cat", "a cat <lora:x:1> trig"]
