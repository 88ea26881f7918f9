"""HTTP routes through FastAPI's TestClient (A1111_CONTRACT §12) and the Extra Networks page items and metadata
editor (§4.3, §4.4, §5, §16)."""

from __future__ import annotations

import json
import os

import pytest
from fake_webui.harness import Webui, fake_modules
from fake_webui.lora_fixtures import install, write_lora


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("page_loras")
    return {
        "x": write_lora(folder, "x", "sd1", seed=1),
        "xl": write_lora(folder, "xl", "sdxl", seed=3),
    }


@pytest.fixture
def webui(tmp_path, store):
    with fake_modules():
        w = Webui(tmp_path)
        install(store["x"], w.lora_dir, "x")  # present at startup, like the webui's first scan
        w.start()
        w.load_model("sd1")
        try:
            yield w
        finally:
            w.stop()


def page():
    from modules import ui_extra_networks

    return ui_extra_networks.extra_pages[0]


def test_get_loras_has_the_builtin_fields(webui):
    client = webui.client()
    response = client.get("/sdapi/v1/loras")
    assert response.status_code == 200
    data = response.json()
    assert [d["name"] for d in data] == ["x"]
    assert set(data[0]) == {"name", "alias", "path", "metadata"}
    assert data[0]["path"] == str(webui.lora_dir / "x.safetensors")
    assert data[0]["alias"] == "x"
    assert data[0]["metadata"]["ss_network_module"] == "networks.lora"


def test_refresh_loras_finds_new_files(webui, store):
    client = webui.client()
    assert len(client.get("/sdapi/v1/loras").json()) == 1
    install(store["x"], webui.lora_dir / "sub", "second")
    response = client.post("/sdapi/v1/refresh-loras")
    assert response.status_code == 200 and response.json() is None
    assert sorted(d["name"] for d in client.get("/sdapi/v1/loras").json()) == ["second", "x"]


def test_inspect_returns_coverage_and_metadata(webui, store):
    client = webui.client()
    data = client.get("/lora_ext/v1/inspect", params={"name": "x"}).json()
    assert data["coverage"]["verdict"] == "ok"
    assert data["coverage"]["keys_total"] == data["coverage"]["keys_matched"] > 0
    assert data["metadata"]["ss_output_name"] == "x"
    assert data["sd_version"] == "SD1"
    install(store["xl"], webui.lora_dir, "xl")
    client.post("/sdapi/v1/refresh-loras")
    data = client.get("/lora_ext/v1/inspect", params={"name": "xl"}).json()
    assert data["coverage"]["verdict"] == "refused"


def test_inspect_unknown_name_is_a_404_with_a_suggestion(webui):
    response = webui.client().get("/lora_ext/v1/inspect", params={"name": "xx"})
    assert response.status_code == 404
    assert "Lora not found: xx" in response.json()["detail"] and "'x'" in response.json()["detail"]


def test_page_item_dict(webui):
    from modules import ui_extra_networks

    (webui.lora_dir / "x.json").write_text(
        json.dumps(
            {
                "activation text": "xstyle",
                "preferred weight": -0.5,
                "negative text": "blurry",
                "mine": 1,
                "tags": "ink, Portrait",
            }
        )
    )
    (webui.lora_dir / "x.png").write_bytes(b"\x89PNG\r\n")
    page().refresh()
    items = list(page().list_items())
    assert len(items) == 1
    item = items[0]
    assert item["name"] == "x"
    assert item["filename"] == str(webui.lora_dir / "x.safetensors")
    assert item["prompt"] == '"<lora:x:" + "-0.5" + ">" + " xstyle"'
    assert item["negative_prompt"] == ui_extra_networks.quote_js("(blurry:1)")
    assert item["preview"].startswith("./sd_extra_networks/thumb?filename=")
    assert item["local_preview"] == str(webui.lora_dir / "x.png")
    assert item["sd_version"] == "SD1"
    assert item["user_metadata"]["mine"] == 1
    assert "Lora/x.safetensors" in item["search_terms"]
    assert {"ink", "Portrait"} <= set(item["search_terms"])  # the user's own tags are searchable (USERS C17)
    st = os.stat(webui.lora_dir / "x.safetensors")
    assert item["sort_keys"]["date_modified"] == int(st.st_mtime)
    assert set(item["sort_keys"]) == {"default", "date_created", "date_modified", "name", "path"}
    assert item["metadata"]["ss_output_name"] == "x"


def test_page_item_onclick_calls_our_toggle_and_prompt_stays_the_builtins(webui):
    """USERS C11, C12, N4, S14: the item's ``onclick`` (HTML-escaped as the webui splices it, §4.3) hands our
    toggle the tag name, the preferred weight, the activation text ({prompt} kept) and the negative text; ``prompt``
    and ``negative_prompt`` stay the built-in's JS expressions for other extensions that read them."""
    import html

    from modules import ui_extra_networks

    (webui.lora_dir / "x.json").write_text(
        json.dumps(
            {
                "activation text": ' masterpiece, {prompt}, "ink"\nstyle ',
                "preferred weight": -1.5,
                "negative text": "bad (hands)",
            }
        )
    )
    page().refresh()
    item = page().create_item("x", 0)
    call = html.unescape(item["onclick"])
    assert call.startswith("loraExtPageCardClicked(this, {") and call.endswith("})")
    assert json.loads(call[len("loraExtPageCardClicked(this, ") : -1]) == {
        "name": "x",
        "weight": "-1.5",
        "activation": 'masterpiece, {prompt}, "ink"\nstyle',
        "negative": "bad (hands)",
        "allowNegative": False,
    }
    assert not set("<>\"'") & set(item["onclick"].replace("&lt;", "").replace("&gt;", ""))
    quote_js = ui_extra_networks.quote_js
    assert item["prompt"] == (
        '"<lora:x:" + "-1.5" + ">" + ' + quote_js('  masterpiece, {prompt}, "ink"\nstyle ')
    )
    assert item["negative_prompt"] == quote_js("(bad (hands):1)")


def test_page_onclick_without_preferred_weight_leaves_the_default_multiplier_to_click_time(webui):
    import html

    call = html.unescape(page().create_item("x", 0)["onclick"])
    assert json.loads(call[len("loraExtPageCardClicked(this, ") : -1])["weight"] is None


def test_page_search_terms_carry_the_hashes_the_library_knows(webui):
    """USERS C15, H5: once the library has hashed the file, the card is found by its sha256 (Civitai AutoV2 is the
    first 10 digits) and its addnet hash; listing the cards hashes nothing."""
    import hashlib

    from fake_webui.harness import lora_host

    path = webui.lora_dir / "x.safetensors"
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    library = lora_host().library
    assert sha256 not in page().create_item("x", 0)["search_terms"]  # not known yet, and not computed here
    hashes = library.hashes(library.resolve("x"))
    item = page().create_item("x", 0)
    assert sha256 in item["search_terms"] and hashes.addnet in item["search_terms"]
    assert item["shorthash"] == hashes.shorthash


def test_default_weight_expression_when_no_preferred_weight(webui):
    item = page().create_item("x", 0)
    assert item["prompt"] == '"<lora:x:" + opts.extra_networks_default_multiplier + ">"'


def test_incompatible_lora_shown_with_badge_unless_user_hides(webui, store):
    from modules import shared, ui_extra_networks

    install(store["xl"], webui.lora_dir, "xl")
    page().refresh()
    names = [i["name"] for i in page().list_items()]
    assert names == ["x", "xl"]
    item = page().create_item("xl", 1)
    assert item["description"].startswith("[SDXL LoRA, current model SD1]")
    shared.opts.lora_ext_hide_incompatible = True
    assert [i["name"] for i in page().list_items()] == ["x"]
    # the single-card route never filters (create_item(name, enable_filter=False), §4.2)
    page().create_html("txt2img")
    html = ui_extra_networks.get_single_card("lora", "txt2img", "xl")["html"]
    assert "data-name='xl'" in html


def test_metadata_route_and_card_html(webui):
    from modules import ui_extra_networks

    html = page().create_html("txt2img")
    assert "onclick='loraExtPageCardClicked(this, {&quot;name&quot;: &quot;x&quot;" in html
    assert "cardClicked(" not in html  # the webui's default toggle only knows [\\d.]+ weights (§13)
    meta = ui_extra_networks.get_metadata("lora", "x")
    assert json.loads(meta["metadata"])["ss_output_name"] == "x"


def test_editor_saves_fields_and_keeps_unknown_keys(webui):
    from modules import ui_extra_networks_user_metadata

    (webui.lora_dir / "x.json").write_text(json.dumps({"civitai": {"id": 5}}))
    page().refresh()
    page().create_html("txt2img")
    editor = page().create_user_metadata_editor(None, "txt2img")
    assert isinstance(editor, ui_extra_networks_user_metadata.UserMetadataEditor)
    assert editor.id_part == "txt2img_lora_edit_user_metadata"
    editor.save_lora_user_metadata("x", "desc", "SD1", "xstyle", -0.75, "ugly", "my notes")
    saved = json.loads((webui.lora_dir / "x.json").read_text())
    assert saved["civitai"] == {"id": 5}
    assert saved["preferred weight"] == -0.75 and saved["sd version"] == "SD1"
    assert saved["activation text"] == "xstyle" and saved["negative text"] == "ugly"
    assert "tags" not in saved  # the built-in's call (no tags argument) leaves them alone
    editor.save_lora_user_metadata("x", "desc", "SD1", "xstyle", -0.75, "ugly", "my notes", "ink, My Picks")
    assert json.loads((webui.lora_dir / "x.json").read_text())["tags"] == ["ink", "My Picks"]
    assert editor.put_values_into_components("x")[-1] == "ink, My Picks"
    editor.save_lora_user_metadata("x", "desc", "SD1", "xstyle", -0.75, "ugly", "my notes", " , ")
    saved = json.loads((webui.lora_dir / "x.json").read_text())
    assert "tags" not in saved and saved["civitai"] == {"id": 5}  # empty text removes them, other keys stay
    table = dict(editor.get_metadata_table("x"))
    assert table["Output name:"] == "x"
    assert table["Dataset size:"] == 12


def test_editor_ui_builds_and_tag_click_toggles(webui):
    import gradio as gr

    from lora_ext.hosts.a1111.editor import toggle_tag

    page().create_html("txt2img")
    editor = page().create_user_metadata_editor(None, "txt2img")
    with gr.Blocks():
        editor.create_ui()
    assert editor.slider_preferred_weight.minimum < 0
    values = editor.put_values_into_components("x")
    assert values[5] == "SD1"
    assert toggle_tag("a, b", "c") == "a, b, c"
    assert toggle_tag("a, c, b", "c") == "a, b"
    assert toggle_tag("", "c") == "c"


def test_lyco_dir_is_scanned_and_same_stem_in_two_folders_gets_distinct_items(webui, store):
    install(store["x"], webui.lyco_dir, "lyco_only")
    install(store["x"], webui.lora_dir / "sub", "x")
    page().refresh()
    names = sorted(i["name"] for i in page().list_items())
    assert "lyco_only" in names
    assert len([n for n in names if n.endswith("x")]) == 2 and len(set(names)) == len(names)
    sub = page().create_item("sub/x", 0)
    assert sub is not None and sub["prompt"].startswith('"<lora:sub/x:"')


def test_hide_unknown_for_versions_keeps_the_builtin_meaning(webui):
    """§7.1 ``lora_hide_unknown_for_versions`` is the user's own opt-in (default ``[]``): listed model versions hide
    cards of unknown version, as in the built-in, whether or not lora_ext hides incompatible ones."""
    from modules import shared

    (webui.lora_dir / "x.json").write_text(json.dumps({"sd version": "Unknown"}))
    page().refresh()
    assert [i["name"] for i in page().list_items()] == ["x"]
    shared.opts.lora_hide_unknown_for_versions = ["SDXL"]
    assert [i["name"] for i in page().list_items()] == ["x"]  # the loaded model is SD1
    shared.opts.lora_hide_unknown_for_versions = ["SD1"]
    assert [i["name"] for i in page().list_items()] == []
    assert page().create_item("x", 0, enable_filter=False) is not None
    shared.opts.lora_show_all = True
    assert [i["name"] for i in page().list_items()] == ["x"]


def test_page_card_of_a_name_no_tag_can_hold_inserts_nothing_and_says_why(webui, store):
    """``style=v2`` reads as an option inside a tag, so a click on its card would insert a tag naming no LoRA: the
    page's onclick gets no name (the click does nothing) and the description says to rename the file."""
    import html

    install(store["x"], webui.lora_dir, "style=v2")
    page().refresh()
    names = [item["name"] for item in page().list_items()]
    assert "style=v2" in names
    item = page().create_item("style=v2", 0)
    call = html.unescape(item["onclick"])
    assert json.loads(call[len("loraExtPageCardClicked(this, ") : -1])["name"] is None
    assert "rename the file" in item["description"]
    other = html.unescape(page().create_item("x", 0)["onclick"])
    assert json.loads(other[len("loraExtPageCardClicked(this, ") : -1])["name"] == "x"
