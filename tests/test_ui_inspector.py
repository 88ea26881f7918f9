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
    assert "&lt;b&gt;" in html and "<b>" not in html  # trained words are escaped


def test_no_link_without_a_civitai_model():
    assert "civitai.com" not in inspector_html(entry(civitai=CivitaiInfo(found=False)), prefix="p")
    assert "civitai.com" not in inspector_html(entry(), prefix="p")
    only_model = inspector_html(entry(civitai=CivitaiInfo(found=True, model_id=7)), prefix="p")
    assert 'href="https://civitai.com/models/7"' in only_model
