"""The inspector panel: what a LoRA's Civitai info links to, and that file text is escaped (USERS C8, C21)."""

from __future__ import annotations

from lora_ext.library.entry import CivitaiInfo, LoraEntry
from lora_ext.ui.inspector import inspector_html


def entry(**kw) -> LoraEntry:
    base = dict(
        name="x",
        alias="x",
        relpath="x",
        path="/loras/x.safetensors",
        root="/loras",
        ext=".safetensors",
        size=1,
        mtime=0.0,
        ctime=0.0,
    )
    base.update(kw)
    return LoraEntry(**base)


def test_civitai_info_links_to_the_model_version_page():
    info = CivitaiInfo(found=True, base_model="Pony", trained_words=("<b>",), model_id=123, version_id=456)
    html = inspector_html(entry(civitai=info), prefix="p")
    assert 'href="https://civitai.com/models/123?modelVersionId=456"' in html
    assert 'data-tag="&lt;b&gt;">&lt;b&gt;</button>' in html  # trained words are escaped


def test_no_link_without_a_civitai_model():
    assert "civitai.com" not in inspector_html(entry(civitai=CivitaiInfo(found=False)), prefix="p")
    assert "civitai.com" not in inspector_html(entry(), prefix="p")
    only_model = inspector_html(entry(civitai=CivitaiInfo(found=True, model_id=7)), prefix="p")
    assert 'href="https://civitai.com/models/7"' in only_model


def test_civitai_trigger_words_are_offered_one_click_each_never_inserted_by_themselves():
    """S13, C8: the trained words are buttons that add one word to the activation text when clicked."""
    info = CivitaiInfo(found=True, trained_words=("ink wash", 'say "hi"'))
    html = inspector_html(entry(civitai=info, metadata={"ss_tag_frequency": {"1_x": {"cat": 3}}}), prefix="p")
    assert '<button class="lora-ext-dstag" data-prefix="p" data-tag="ink wash">ink wash</button>' in html
    assert 'data-tag="say &quot;hi&quot;"' in html
    assert 'data-tag="cat">cat <small>3</small></button>' in html
    assert html.index("Trigger words") < html.index("Dataset tags")
