"""Card clicks on the webui's own Extra Networks ``Lora`` page, in real chromium (USERS C11, C12, N4, S14, C22;
A1111_CONTRACT §4.3, §13).

The cards are the HTML the (fake) webui builds from our page's item dicts (``create_html``), placed in the element
ids the webui uses (``#{tabname}_lora_cards`` next to ``#{tabname}_prompt > label > textarea``). The webui's globals
are stand-ins named as CONTRACT §13 names them: ``opts``, ``updateInput`` (records which box it was called for),
``gradioApp`` and a ``cardClicked`` that only counts calls, so a card that still used the webui's default click
changes no prompt. Each case clicks a card, lets the "user" edit the inserted tag (the webui's toggle then no longer
recognises it), and clicks again.
"""

from __future__ import annotations

import json

import pytest
from fake_webui.harness import Webui, fake_modules
from fake_webui.lora_fixtures import install, write_lora

from tests.browser_helpers import browser_page, js_source

SEP = ", "
DEFAULT_MULTIPLIER = 0.7

#: card name -> user metadata (the ``.json`` sidecar the webui's editor writes)
LORAS = {
    "x": {"activation text": "xstyle", "negative text": "blurry"},
    "slider": {"preferred weight": -2},
    "a.b(c)+[d]": {"activation text": "x.*(y)"},
    "wrap": {"activation text": "masterpiece, {prompt}, ink style"},
}

GLOBALS = (
    f"var opts = {{extra_networks_add_text_separator: {json.dumps(SEP)}, "
    f"extra_networks_default_multiplier: {DEFAULT_MULTIPLIER}}};"
    """
var updated = [];
var builtinClicks = 0;
function gradioApp() { return document; }
function updateInput(el) { updated.push(el.closest("[id$='_prompt']").id); }
function cardClicked() { builtinClicks += 1; }
"""
)


def tab_html(tabname: str, cards: str) -> str:
    """One webui tab: prompt, negative prompt and the Lora page's cards, with the webui's element ids."""
    box = "<div id='{0}'><label><textarea></textarea></label></div>"
    return (
        f"<div id='tab_{tabname}'>{box.format(tabname + '_prompt')}{box.format(tabname + '_neg_prompt')}"
        f"<div id='{tabname}_lora'><div id='{tabname}_lora_cards' class='extra-network-cards'>{cards}"
        "</div></div></div>"
    )


@pytest.fixture(scope="module")
def cards(tmp_path_factory) -> dict[str, str]:
    """The Lora page's card HTML per tab name, as the fake webui builds it from our item dicts."""
    store = tmp_path_factory.mktemp("page_card_loras")
    root = tmp_path_factory.mktemp("page_card_webui")
    with fake_modules():
        webui = Webui(root)
        for seed, (name, user) in enumerate(LORAS.items(), start=1):
            install(write_lora(store, name, "sd1", seed=seed), webui.lora_dir)  # alias = file name
            (webui.lora_dir / f"{name}.json").write_text(json.dumps(user))
        webui.start()
        webui.load_model("sd1")
        try:
            from modules import ui_extra_networks

            page = ui_extra_networks.extra_pages[0]
            page.refresh()
            return {tab: page.create_html(tab) for tab in ("txt2img", "img2img")}
        finally:
            webui.stop()


@pytest.fixture(scope="module")
def browser(cards):
    with browser_page() as p:
        body = tab_html("txt2img", cards["txt2img"]) + tab_html("img2img", cards["img2img"])
        p.set_content(
            f"<html><body>{body}<script>{GLOBALS}</script><script>{js_source()}</script></body></html>"
        )
        yield p


@pytest.fixture
def page(browser):
    """The test page with empty prompt boxes and no recorded calls."""
    browser.evaluate(
        "() => { document.querySelectorAll('textarea').forEach(t => { t.value = ''; });"
        " updated.length = 0; builtinClicks = 0; }"
    )
    return browser


def box(page, tabname: str, negative: bool = False) -> str:
    return f"#{tabname}_{'neg_' if negative else ''}prompt textarea"


def click(page, name: str, tabname: str = "txt2img") -> None:
    page.click(f'#{tabname}_lora_cards .card[data-name="{name}"]')


def texts(page, tabname: str = "txt2img") -> tuple[str, str]:
    return page.input_value(box(page, tabname)), page.input_value(box(page, tabname, True))


# (card, prompt before, negative before, (old, new) edit of the prompt after the first click or None,
#  (prompt, negative) after the first click; the second click restores the texts from before the first one)
CASES = [
    # negative weight typed over the inserted one, in the prompt and in the negative prompt
    ("x", "a cat", "", ("<lora:x:0.7>", "<lora:x:-1>"), ("a cat, <lora:x:0.7> xstyle", "(blurry:1)")),
    # extra arguments: unet weight positional or named, block weights
    (
        "x",
        "a cat",
        "ugly",
        ("<lora:x:0.7>", "<lora:x:1:0.5>"),
        ("a cat, <lora:x:0.7> xstyle", "ugly, (blurry:1)"),
    ),
    (
        "x",
        "a cat",
        "",
        ("<lora:x:0.7>", "<lora:x:0.8:unet=0.3>"),
        ("a cat, <lora:x:0.7> xstyle", "(blurry:1)"),
    ),
    ("x", "", "", ("<lora:x:0.7>", "<lora:x:-1:lbw=OUTD>"), ("<lora:x:0.7> xstyle", "(blurry:1)")),
    # exponent
    ("x", "a cat", "", ("<lora:x:0.7>", "<lora:x:1e-1>"), ("a cat, <lora:x:0.7> xstyle", "(blurry:1)")),
    # a negative preferred weight on the card itself
    ("slider", "a cat", "", None, ("a cat, <lora:slider:-2>", "")),
    ("slider", "a cat", "", ("<lora:slider:-2>", "<lora:slider:-2.5e0>"), ("a cat, <lora:slider:-2>", "")),
    # regex metacharacters in the name and the activation text are plain text; a near-miss name stays
    (
        "a.b(c)+[d]",
        "<lora:aXb(c)+[d]:1>",
        "",
        ("<lora:a.b(c)+[d]:0.7>", "<lora:a.b(c)+[d]:-0.3>"),
        ("<lora:aXb(c)+[d]:1>, <lora:a.b(c)+[d]:0.7> x.*(y)", ""),
    ),
    # {prompt} in the activation text wraps the prompt and the second click unwraps it (S14)
    ("wrap", "a cat", "", None, ("masterpiece, a cat, ink style, <lora:wrap:0.7>", "")),
    (
        "wrap",
        "a cat",
        "",
        ("<lora:wrap:0.7>", "<lora:wrap:-0.5:0.2>"),
        ("masterpiece, a cat, ink style, <lora:wrap:0.7>", ""),
    ),
]


@pytest.mark.parametrize(("name", "prompt", "negative", "edit", "first"), CASES)
def test_second_click_removes_what_the_first_inserted_whatever_the_weight_became(
    page, name, prompt, negative, edit, first
):
    page.fill(box(page, "txt2img"), prompt)
    page.fill(box(page, "txt2img", True), negative)
    click(page, name)
    assert texts(page) == first
    if edit is not None:
        page.fill(box(page, "txt2img"), first[0].replace(*edit))
        if first[1]:
            page.fill(box(page, "txt2img", True), first[1].replace("(blurry:1)", "(blurry:-0.8)"))
    click(page, name)
    assert texts(page) == (prompt, negative)
    assert page.evaluate("builtinClicks") == 0


def test_click_tells_gradio_about_each_changed_box(page):
    click(page, "x")
    assert page.evaluate("updated") == ["txt2img_prompt", "txt2img_neg_prompt"]
    page.evaluate("updated.length = 0")
    click(page, "slider")
    assert page.evaluate("updated") == ["txt2img_prompt"]  # no negative text: that box is left alone


def test_card_writes_into_the_prompt_of_its_own_tab(page):
    click(page, "x", "img2img")
    assert texts(page, "img2img") == ("<lora:x:0.7> xstyle", "(blurry:1)")
    assert texts(page, "txt2img") == ("", "")
    assert page.evaluate("updated") == ["img2img_prompt", "img2img_neg_prompt"]


def test_separator_and_default_multiplier_are_read_at_click_time(page):
    page.evaluate(
        "() => { opts.extra_networks_add_text_separator = ' '; opts.extra_networks_default_multiplier = 1.5; }"
    )
    try:
        page.fill(box(page, "txt2img"), "a cat")
        click(page, "x")
        assert texts(page)[0] == "a cat <lora:x:1.5> xstyle"
    finally:
        page.evaluate(
            "([sep, m]) => { opts.extra_networks_add_text_separator = sep; opts.extra_networks_default_multiplier = m; }",
            [SEP, DEFAULT_MULTIPLIER],
        )


def test_cards_keep_the_webui_card_dom(page):
    """USERS C22: the card element the webui makes (``.card`` with ``data-name``) is what carries the click."""
    names = page.evaluate(
        "() => [...document.querySelectorAll('#txt2img_lora_cards .card')].map(c => c.dataset.name)"
    )
    assert sorted(names) == sorted(LORAS)
    assert page.evaluate(
        "() => [...document.querySelectorAll('.card')].every(c => c.getAttribute('onclick').startsWith("
        "'loraExtPageCardClicked(this, '))"
    )


def test_page_allowing_the_negative_prompt_writes_into_the_box_focused_last(page):
    """What the webui's ``cardClicked`` does for a page with ``allow_negative_prompt``: a card without negative text
    goes into the prompt box of its tab that had the focus last (the Lora page itself does not allow it)."""
    page.focus(box(page, "txt2img", True))
    page.evaluate(
        """() => loraExtPageCardClicked(document.querySelector('#txt2img_lora_cards .card'),
            {name: 'n', weight: '-1', activation: '', negative: '', allowNegative: true})"""
    )
    assert texts(page) == ("", "<lora:n:-1>")
    page.focus(box(page, "txt2img"))
    page.evaluate(
        """() => loraExtPageCardClicked(document.querySelector('#txt2img_lora_cards .card'),
            {name: 'n', weight: '-1', activation: '', negative: '', allowNegative: true})"""
    )
    assert texts(page) == ("<lora:n:-1>", "<lora:n:-1>")


def test_negative_text_toggle_matches_any_weight(page):
    got = page.evaluate(
        """() => [
            loraExtToggleWeighted('', 'bad (hands)', ', ', true),
            loraExtToggleWeighted('(bad (hands):-1e-1)', 'bad (hands)', ', ', true),
            loraExtToggleWeighted('ugly, (bad (hands):-1e-1), blurry', 'bad (hands)', ', ', false),
            loraExtToggleWeighted('ugly, (bad (hands):lots)', 'bad (hands)', ', ', false),
            loraExtToggleWeighted('a.b', 'a+b', ', ', false),
            // what our LoRA tab wrote (bare) is taken out by the page, and the other way round
            loraExtToggleWeighted('ugly, blurry', 'blurry', ', ', true),
            loraExtToggleWeighted('ugly, blurry', 'blurry', ', ', false),
            loraExtToggleText('ugly, (blurry:1.2)', 'blurry', ', ', true),
            loraExtToggleText('ugly, (blurry:1.2), x', 'blurry', ', ', false),
            loraExtToggleText('ugly, (blurry:lots)', 'blurry', ', ', false),
        ]"""
    )
    assert got == [
        "(bad (hands):1)",
        "(bad (hands):-1e-1)",
        "ugly, blurry",
        "ugly, (bad (hands):lots)",
        "a.b",
        "ugly, blurry",
        "ugly",
        "ugly, (blurry:1.2)",
        "ugly, x",
        "ugly, (blurry:lots)",  # not a weight: neither form is there, nothing is cut out of it
    ]
