"""The LoRA tab's library features in real chromium: sort by date added and Civitai publish date (USERS C14),
descriptions on cards as text or sanitised HTML without changing the card size (C5, C20), and the training-tag
filter combined with search, folders and favourites (C17).

The first tests put the tab's real markup, style.css, script and ``card_data`` records into a blank page; the
last one runs the standalone app on a real library folder.
"""

from __future__ import annotations

import pytest
from test_ui_cards import entry

from lora_ext.library.entry import CivitaiInfo
from lora_ext.ui.browser import browser_html
from lora_ext.ui.cards import card_data, data_block_html
from tests.browser_helpers import REPO, browser_page, js_source, screenshot

EVIL = (
    "<b>bold</b> <i>it</i><script>window.pwned = 'script'</script>"
    "<img src=x onerror=\"window.pwned = 'onerror'\">"
    "<iframe src=\"javascript:window.pwned = 'iframe'\"></iframe><object data=x></object><embed src=x>"
    "<svg><script>window.pwned = 'svg'</script><circle onload=\"window.pwned = 'svgload'\"/></svg>"
    "<style>.lora-ext-card { display: none }</style>"
    "<a href=\"jav&#x09;ascript:window.pwned = 'link'\" onclick=\"window.pwned = 'onclick'\">bad link</a> "
    '<a href="https://example.com/x" style="position:fixed" onmouseover="window.pwned = 1">good link</a>'
    '<p onclick="window.pwned = 2">para</p></div></div><b>after'
)


@pytest.fixture(scope="module")
def page():
    css = (REPO / "style.css").read_text(encoding="utf-8")
    with browser_page() as p:
        p.set_content(
            "<html><head><style>" + css + "</style></head><body><div id='mount'></div>"
            "<script>" + js_source() + "</script></body></html>"
        )
        yield p


def mount(page, prefix: str, data: dict) -> None:
    """The tab's browser markup and data block for ``prefix`` in the page (replacing the previous tab)."""
    body = (
        f'<div id="{prefix}_browser">'
        + browser_html(prefix)
        + f'</div><div id="{prefix}_data">'
        + data_block_html(data, prefix)
        + "</div>"
    )
    page.evaluate(
        "html => { document.getElementById('mount').innerHTML = html; loraExtScan(); }",
        body,
    )


def shown(page) -> list[str]:
    return page.eval_on_selector_all(".lora-ext-grid .lora-ext-card", "els => els.map(e => e.dataset.name)")


def test_select_sorts_by_date_added_and_publish_date_with_missing_last(page):
    cards = [
        {"name": n, "search": n, "folder": "", "arch": "SD1", "fav": False, "tags": [], "sort": s}
        for n, s in [
            ("old", {"path": 0, "added": 100, "published": 300}),
            ("new", {"path": 1, "added": 300, "published": None}),
            ("mid", {"path": 2, "added": 200, "published": 100}),
            ("none", {"path": 3, "added": 150}),
        ]
    ]
    got = page.evaluate(
        """cards => {
            const names = st => loraExtSelect(cards, st).map(c => c.name);
            return [names({sort: 'added'}), names({sort: 'added', desc: true}),
                    names({sort: 'published'}), names({sort: 'published', desc: true})];
        }""",
        cards,
    )
    assert got[0] == ["old", "none", "mid", "new"]
    assert got[1] == ["new", "mid", "none", "old"]
    assert got[2] == ["mid", "old", "new", "none"]  # no publish date: last, in path order
    assert got[3] == ["old", "mid", "new", "none"]  # ... in both directions


def test_sort_select_orders_cards_by_date_added_and_civitai_published(page):
    entries = [
        entry("a", added=300.0, civitai=CivitaiInfo(found=True, published=50.0)),
        entry("b", added=100.0),
        entry("c", added=200.0, civitai=CivitaiInfo(found=True, published=70.0)),
    ]
    mount(page, "sorts", card_data(entries))
    assert shown(page) == ["a", "b", "c"]
    page.select_option(".lora-ext-sort", "added")
    assert shown(page) == ["b", "c", "a"]
    page.click(".lora-ext-order")
    assert shown(page) == ["a", "c", "b"]
    page.select_option(".lora-ext-sort", "published")
    assert shown(page) == ["c", "a", "b"]  # newest first; b has no publish date and stays last
    page.click(".lora-ext-order")
    assert shown(page) == ["a", "c", "b"]


def desc_state(page) -> list[dict]:
    return page.eval_on_selector_all(
        ".lora-ext-grid .lora-ext-card",
        """els => els.map(e => { const d = e.querySelector('.lora-ext-desc');
            return {name: e.dataset.name, html: d && d.innerHTML, text: d && d.textContent,
                    cls: d && d.className}; })""",
    )


def test_descriptions_are_off_by_default_then_text_then_sanitised_html(page):
    entries = [
        entry("evil", description=EVIL),
        entry("plain", description="line one\nline <two> & more"),
        entry("none"),
    ]
    mount(page, "descs", card_data(entries))
    assert page.input_value(".lora-ext-descmode") == "off"
    assert [d["html"] for d in desc_state(page)] == [None, None, None]

    page.select_option(".lora-ext-descmode", "text")
    state = {d["name"]: d for d in desc_state(page)}
    assert state["evil"]["text"] == EVIL  # shown as the text it is: no element made from it
    assert page.locator(".lora-ext-grid .lora-ext-desc *").count() == 0
    assert state["plain"]["text"] == "line one\nline <two> & more"
    assert state["none"]["html"] is None

    page.select_option(".lora-ext-descmode", "html")
    page.wait_for_timeout(300)  # time for anything that would load or fire
    state = {d["name"]: d for d in desc_state(page)}
    evil = page.locator(".lora-ext-card[data-name='evil'] .lora-ext-desc")
    assert evil.locator("b").first.inner_text() == "bold" and evil.locator("i").inner_text() == "it"
    assert evil.locator("p").inner_text() == "para"
    for tag in ("script", "img", "iframe", "object", "embed", "svg", "style", "circle"):
        assert page.locator(f".lora-ext-grid .lora-ext-desc {tag}").count() == 0, tag
    attributes = page.evaluate(
        "() => [...document.querySelectorAll('.lora-ext-grid .lora-ext-desc *')]"
        ".flatMap(e => [...e.attributes].map(a => a.name))"
    )
    assert set(attributes) <= {"href", "target", "rel", "title"}, attributes
    links = page.eval_on_selector_all(
        ".lora-ext-card[data-name='evil'] .lora-ext-desc a",
        "els => els.map(a => [a.textContent, a.getAttribute('href'), a.target])",
    )
    assert links == [["bad link", None, ""], ["good link", "https://example.com/x", "_blank"]]
    page.hover(".lora-ext-card[data-name='evil'] .lora-ext-desc p")
    page.click(".lora-ext-card[data-name='evil'] .lora-ext-desc a >> nth=0")
    assert page.evaluate("() => window.pwned") is None
    # the stray closing tags stayed inside the description: the card and its siblings are intact
    assert shown(page) == ["evil", "none", "plain"]
    assert page.locator(".lora-ext-card[data-name='evil'] .lora-ext-desc + .lora-ext-desc").count() == 0
    assert page.evaluate("() => document.querySelector('.lora-ext-card').parentElement.className") == (
        "lora-ext-grid"
    )
    assert "after" in state["evil"]["text"]
    # in HTML mode a description is read as HTML, as with the webui's setting: "<two>" is an (empty) unknown tag
    assert state["plain"]["text"] == "line one\nline  & more"

    # a click on a link of a description opens the link and inserts nothing; a click elsewhere on the card inserts
    page.evaluate(
        "() => { const h = document.createElement('div'); h.id = 'lora_ext_app_prompt';"
        " h.innerHTML = '<textarea></textarea>'; document.body.appendChild(h); }"
    )
    box = "#lora_ext_app_prompt textarea"
    with page.context.expect_page() as popup:
        page.click(".lora-ext-card[data-name='evil'] .lora-ext-desc a[href]")
    popup.value.close()
    assert page.input_value(box) == ""
    page.click(".lora-ext-card[data-name='evil'] .lora-ext-name")
    assert page.input_value(box) == "<lora:evil:1>"
    page.evaluate("() => document.getElementById('lora_ext_app_prompt').remove()")


def test_safe_html_keeps_formatting_and_drops_everything_active(page):
    cases = {
        "<b>x</b><em>y</em><br><ul><li>z</li></ul>": "<b>x</b><em>y</em><br><ul><li>z</li></ul>",
        "<font color=red>kept text</font>": "kept text",
        '<a href=" https://e.com">e</a>': '<a href="https://e.com" target="_blank" rel="noopener noreferrer'
        ' nofollow">e</a>',
        '<a href="data:text/html,<script>x</script>">d</a>': "<a>d</a>",
        '<a href="mailto:a@b.c" title="mail">m</a>': '<a title="mail" href="mailto:a@b.c" target="_blank"'
        ' rel="noopener noreferrer nofollow">m</a>',
        "<math><mi>x</mi></math><noscript><b>n</b></noscript><!-- c --><template><b>t</b></template>": "",
        "<table><tr><td>cell</td></tr></table>": "cell",
        "a &lt;script&gt; b": "a &lt;script&gt; b",
    }
    got = page.evaluate(
        """cases => Object.keys(cases).map(src => {
            const d = document.createElement('div'); d.appendChild(loraExtSafeHtml(src)); return d.innerHTML; })""",
        cases,
    )
    assert got == list(cases.values())
    assert page.evaluate("() => window.pwned") is None


def test_descriptions_keep_the_card_size_and_every_card_shows(page):
    long_text = "word " * 400 + "x" * 3000
    entries = [entry(f"c{i}", description=long_text if i % 2 else "") for i in range(8)]
    entries.append(entry("html", description="<h1>Title</h1>" + "<p>para</p>" * 50 + "<pre>" + "y" * 999))
    mount(page, "sizes", card_data(entries))
    boxes = (
        "() => [...document.querySelectorAll('.lora-ext-grid .lora-ext-card')].map(c => {"
        " const r = c.getBoundingClientRect(), i = c.querySelector('img').getBoundingClientRect(),"
        " t = c.querySelector('.lora-ext-text').getBoundingClientRect();"
        " return {w: r.width, h: r.height, iw: i.width, ih: i.height, textBottom: t.bottom, bottom: r.bottom}; })"
    )
    before = page.evaluate(boxes)
    line = page.evaluate(
        "() => parseFloat(getComputedStyle(document.querySelector('.lora-ext-grid .lora-ext-name')).fontSize)"
    )
    for mode in ("text", "html"):
        page.select_option(".lora-ext-descmode", mode)
        after = page.evaluate(boxes)
        assert len(after) == len(before) == 9
        heights = page.eval_on_selector_all(
            ".lora-ext-grid .lora-ext-desc", "els => els.map(e => e.getBoundingClientRect().height)"
        )
        assert len(heights) == 5 and all(0 < h <= 3 * 0.85 * 1.3 * line + 1 for h in heights), heights
        for old, new in zip(before, after, strict=True):
            assert new["w"] == old["w"] and (new["iw"], new["ih"]) == (old["iw"], old["ih"])
            assert 0 < new["h"] <= old["h"] + 3 * 0.85 * 1.3 * line + 8
            assert new["textBottom"] <= new["bottom"] + 0.5  # nothing spills out of the card
        screenshot(page, f"card_descriptions_{mode}")
    page.select_option(".lora-ext-descmode", "off")


def test_a_description_goes_above_the_activation_and_the_user_tags(page):
    entries = [
        entry("tags_only", description="about it", user_metadata={"tags": ["mine"]}),
        entry("both", description="about it", user_metadata={"tags": ["mine"], "activation text": "ink"}),
    ]
    mount(page, "order", card_data(entries))
    page.select_option(".lora-ext-descmode", "text")
    order = page.eval_on_selector_all(
        ".lora-ext-grid .lora-ext-card",
        "cs => cs.map(c => [...c.querySelector('.lora-ext-text').children].map(e => e.className.split(' ')[0]))",
    )
    assert order == [  # path order: "both", then "tags_only"
        ["lora-ext-name", "lora-ext-desc", "lora-ext-activation", "lora-ext-usertags"],
        ["lora-ext-name", "lora-ext-desc", "lora-ext-usertags"],
    ]
    page.select_option(".lora-ext-descmode", "off")


def _tagged(relpath: str, *tags: str, **kw):
    return entry(relpath, metadata={"ss_tag_frequency": {"5_x": {t: 2 for t in tags}}}, **kw)


def test_tag_filter_lists_common_tags_and_combines_with_search_folder_and_favourites(page):
    entries = [
        _tagged("ink", "ink wash", "mountain"),
        _tagged("sub/ink2", "ink wash", "river"),
        _tagged("sub/ink3", "Ink wash", user_metadata={"favorite": True}),
        _tagged("sub/other", "river"),
        entry("plain"),
    ]
    mount(page, "tags", card_data(entries))
    options = page.eval_on_selector_all(
        ".lora-ext-tagfilter option", "os => os.map(o => [o.value, o.textContent])"
    )
    assert options == [
        ["", "All tags"],
        ["ink wash", "ink wash (3)"],
        ["river", "river (2)"],
        ["mountain", "mountain (1)"],
    ]
    page.select_option(".lora-ext-tagfilter", "ink wash")
    assert shown(page) == ["ink", "sub/ink2", "sub/ink3"]
    page.fill(".lora-ext-search", "ink2")
    assert shown(page) == ["sub/ink2"]
    page.fill(".lora-ext-search", "")
    page.click(".lora-ext-folder[data-folder='sub']")
    assert shown(page) == ["sub/ink2", "sub/ink3"]
    page.check(".lora-ext-favonly")
    assert shown(page) == ["sub/ink3"]
    page.uncheck(".lora-ext-favonly")
    page.select_option(".lora-ext-tagfilter", "river")
    assert shown(page) == ["sub/ink2", "sub/other"]
    page.click(".lora-ext-folder[data-folder='']")
    page.select_option(".lora-ext-tagfilter", "")
    assert shown(page) == ["ink", "plain", "sub/ink2", "sub/ink3", "sub/other"]
    # new data without the chosen tag: the filter lets go instead of showing nothing
    page.select_option(".lora-ext-tagfilter", "mountain")
    assert shown(page) == ["ink"]
    page.evaluate(
        "html => { document.getElementById('tags_data').innerHTML = html; loraExtScan(); }",
        data_block_html(card_data(entries[1:]), "tags"),
    )
    assert page.input_value(".lora-ext-tagfilter") == ""
    assert shown(page) == ["plain", "sub/ink2", "sub/ink3", "sub/other"]
