"""card_data: the pure function from library entries to the tab's browser records (USERS C11, C18, S5, S6, P9)."""

from __future__ import annotations

import json
from pathlib import Path

from lora_ext.library.entry import CivitaiInfo, LoraEntry, Summary
from lora_ext.library.search_terms import dataset_tags
from lora_ext.ui.cards import card_data, data_block_html, tag_names


def entry(relpath: str, **kw) -> LoraEntry:
    name = relpath.rpartition("/")[2]
    base = dict(
        name=name,
        alias=name,
        relpath=relpath,
        path=f"/loras/{relpath}.safetensors",
        root="/loras",
        ext=".safetensors",
        size=2048,
        mtime=100.0,
        ctime=50.0,
    )
    base.update(kw)
    return LoraEntry(**base)


def by_name(data):
    return {c["name"]: c for c in data["cards"]}


def test_tag_name_follows_preferred_name_and_avoids_clashes():
    entries = [
        entry("a", alias="Alpha"),
        entry("b", alias="shared"),
        entry("c", alias="shared"),
        entry("x/dup"),
        entry("y/dup"),
        entry("d", alias="a"),  # alias equal to another file's name: the filename wins (S5)
    ]
    assert tag_names(entries, "alias") == {
        "a": "Alpha",
        "b": "b",
        "c": "c",
        "x/dup": "x/dup",
        "y/dup": "y/dup",
        "d": "d",
    }
    assert tag_names(entries, "filename")["a"] == "a"


def test_records_carry_weight_activation_negative_and_mismatch():
    entries = [
        entry(
            "w", user_metadata={"preferred weight": -0.5, "activation text": "trig", "negative text": "ugly"}
        ),
        entry("zero", user_metadata={"preferred weight": 0}, arch="SDXL"),
        entry("unk", arch="Unknown"),
        entry("sd1", arch="SD1", summary=Summary(algorithms=("lora",), rank=8)),
    ]
    cards = by_name(card_data(entries, model_arch="SD1", default_multiplier=0.7))
    assert cards["w"]["weight"] == "-0.5"
    assert cards["w"]["activation"] == "trig" and cards["w"]["negative"] == "ugly"
    assert cards["zero"]["weight"] is None  # 0 means "default multiplier" (C7)
    assert cards["zero"]["mismatch"] and "lora-ext-mismatch" in cards["zero"]["html"]
    assert not cards["unk"]["mismatch"] and not cards["sd1"]["mismatch"]
    assert "lora r8" in cards["sd1"]["html"]


def test_html_escapes_user_text_and_keeps_card_dom():
    evil = entry(
        'we<ird>/x"y&z',
        alias="<script>alert(1)</script>",
        user_metadata={"activation text": "<b>bold</b>", "tags": ['<i>x"', "ink"]},
    )
    card = card_data([evil])["cards"][0]
    html = card["html"]
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    # the user's own tags: one line on the card, and its tooltip (C17)
    assert (
        '<div class="lora-ext-usertags" title="Your tags: #&lt;i&gt;x&quot; #ink">#&lt;i&gt;x&quot; #ink</div>'
        in html
    )
    assert "lora-ext-usertags" not in card_data([entry("plain")])["cards"][0]["html"]
    assert 'data-name="we&lt;ird&gt;/x&quot;y&amp;z"' in html
    assert html.startswith('<div class="lora-ext-card card"')  # C22


def test_search_text_covers_name_alias_folder_description_words_and_tags():
    e = entry(
        "Styles/Ink",
        alias="InkWash",
        description="Sumi brush look",
        civitai=CivitaiInfo(found=True, base_model="SD 1.5", trained_words=("inkwash style",)),
        metadata={"ss_tag_frequency": {"1_ds": {"mountain": 5, "river": 9}}},
    )
    s = card_data([e])["cards"][0]["search"]
    for word in ("ink", "inkwash", "styles/ink", "sumi brush", "inkwash style", "river", "mountain"):
        assert word in s


def test_dataset_tags_sum_over_datasets():
    meta = {"ss_tag_frequency": json.dumps({"a": {"x": 2, "y": 1}, "b": {"x": 3}})}
    assert dataset_tags(meta) == [("x", 5), ("y", 1)]


def test_sort_keys_and_natural_path_rank():
    entries = [entry("img10", size=5), entry("img2", size=7), entry("a/img1", size=1)]
    cards = by_name(card_data(entries))
    assert [cards[n]["sort"]["path"] for n in ("a/img1", "img2", "img10")] == [0, 1, 2]
    assert cards["img2"]["sort"]["size"] == 7 and cards["img2"]["sort"]["modified"] == 100.0


def test_data_block_is_inert_json_with_version():
    data = card_data([entry("x", description="</script><img src=x onerror=alert(1)>")])
    block = data_block_html(data, "lora_ext")
    inner = block.split(">", 1)[1].rsplit("</script>", 1)[0]
    assert "</script>" not in inner
    assert json.loads(inner.replace("<\\/", "</")) == data
    other = data_block_html(card_data([entry("y")]), "lora_ext")
    assert block.split('data-version="')[1][:16] != other.split('data-version="')[1][:16]


def test_five_thousand_entries_produce_all_cards():
    entries = [entry(f"f{i % 50}/lora_{i}", size=i) for i in range(5000)]
    data = card_data(entries, model_arch="SD1")
    assert len(data["cards"]) == 5000
    assert len({c["name"] for c in data["cards"]}) == 5000


def test_tag_names_come_from_the_library_and_resolve_to_the_card_file(tmp_path):
    """Two roots holding the same sub/x: every card's tag resolves (through the library) to that card's own file,
    a file no name reaches is marked shadowed and inserts nothing, and the card keys stay unique. Both roots are
    folders named ``loras`` here, so not even ``ROOT/folder/name`` reaches the second ``sub/z``."""
    from lora_ext.library import LoraLibrary
    from tests.test_ui_previews import write_lora

    r1, r2 = tmp_path / "r1" / "loras", tmp_path / "r2" / "loras"
    for root in (r1, r2):
        (root / "sub").mkdir(parents=True)
    write_lora(r1 / "sub" / "x.safetensors")
    write_lora(r2 / "sub" / "x.safetensors", {"ss_output_name": "x_other"})  # reachable by its alias
    write_lora(r1 / "sub" / "z.safetensors")
    write_lora(r2 / "sub" / "z.safetensors")  # same relpath, no alias: nothing reaches it
    write_lora(r2 / "solo.safetensors", {"ss_output_name": "Solo Alias"})
    library = LoraLibrary([str(r1), str(r2)], cache_path=False)
    library.refresh()

    for preferred in ("alias", "filename"):
        cards = card_data(library.entries(), preferred_name=preferred, library=library)["cards"]
        keys = [c["name"] for c in cards]
        assert len(set(keys)) == len(keys) == 5
        shadowed = [c for c in cards if c["tag_name"] is None]
        assert [c["name"] for c in shadowed] == ["sub/z@2"]
        assert "lora-ext-shadowed" in shadowed[0]["html"] and "Rename one" in shadowed[0]["html"]
        for card, entry in zip(cards, library.entries(), strict=True):
            if card["tag_name"] is not None:
                assert library.resolve(card["tag_name"]).path == entry.path, (preferred, card["tag_name"])
        names = {
            Path(e.root).parent.name + ":" + c["name"]: c["tag_name"]
            for c, e in zip(cards, library.entries(), strict=True)
        }
        assert names["r2:sub/x@2"] == "x_other"  # the file name "x" means r1's file: the alias is the way
        assert names["r2:solo"] == ("Solo Alias" if preferred == "alias" else "solo")


def test_a_card_behind_an_earlier_root_gets_the_root_qualified_tag(tmp_path):
    """Roots with different folder names: the second root's sub/z is reached as ``ROOT/sub/z``, not shadowed."""
    from lora_ext.library import LoraLibrary
    from tests.test_ui_previews import write_lora

    r1, r2 = tmp_path / "Lora", tmp_path / "LyCORIS"
    for root in (r1, r2):
        (root / "sub").mkdir(parents=True)
        write_lora(root / "sub" / "z.safetensors")
    library = LoraLibrary([str(r1), str(r2)], cache_path=False)
    library.refresh()
    cards = card_data(library.entries(), preferred_name="filename", library=library)["cards"]
    assert [c["tag_name"] for c in cards] == ["z", "LyCORIS/sub/z"]
    for card, entry in zip(cards, library.entries(), strict=True):
        assert library.resolve(card["tag_name"]).path == entry.path


def test_search_finds_hashes_the_library_already_knows(tmp_path):
    """C15, H5: a user pastes the sha256 prefix Civitai shows (AutoV2, 10 digits) or the infotext short hash into
    the search; it finds the card once the library knows the file's hashes, without reading any file for it."""
    from lora_ext.library import LoraLibrary, page_items
    from tests.test_ui_previews import write_lora

    write_lora(tmp_path / "hashed.safetensors")
    write_lora(tmp_path / "other.safetensors", {"ss_output_name": "other"})
    library = LoraLibrary([str(tmp_path)], cache_path=False)
    library.refresh()
    hashed = next(e for e in library.entries() if e.name == "hashed")
    before = card_data(library.entries(), library=library)["cards"]
    assert library.hash_reads == 0  # building cards never hashes
    hashes = library.hashes(hashed)
    cards = by_name(card_data(library.entries(), library=library))
    for term in (hashes.sha256[:10], hashes.shorthash, hashes.addnet):
        assert term in cards["hashed"]["search"]
        assert term not in cards["other"]["search"]
        assert term not in by_name({"cards": before})["hashed"]["search"]
    items = {i["name"]: i for i in page_items(library)}
    assert hashes.sha256[:10] in items["hashed"]["search_text"]


def test_hidden_folders_follow_the_libraries_hidden_mode(tmp_path):
    """C1: files under dot-folders are search-only by default; the webui's "Hidden extra networks" setting
    ("always" / "never", passed to the library) decides for the LoRA tab too."""
    from lora_ext.library import LoraLibrary
    from tests.test_ui_previews import write_lora

    (tmp_path / ".old").mkdir()
    write_lora(tmp_path / "shown.safetensors")
    write_lora(tmp_path / ".old" / "secret.safetensors")
    seen = {}
    for mode in ("when searched", "always", "never"):
        library = LoraLibrary([str(tmp_path)], cache_path=False, hidden=mode)
        library.refresh()
        seen[mode] = {c["name"]: c["hidden"] for c in card_data(library.entries(), library=library)["cards"]}
    assert seen["when searched"] == {"shown": False, ".old/secret": True}
    assert seen["always"] == {"shown": False, ".old/secret": False}
    assert seen["never"] == {"shown": False}


def test_a_file_name_no_tag_can_carry_gets_a_hint_instead_of_a_broken_tag(tmp_path):
    """``style=v2.safetensors`` would insert ``<lora:style=v2:1>``, which every parser reads as an option and no
    name: the card uses the file's alias when it has a usable one, else says to rename the file and inserts nothing."""
    from lora_ext.library import LoraLibrary
    from tests.test_ui_previews import write_lora

    write_lora(tmp_path / "style=v2.safetensors")
    write_lora(tmp_path / "dim=8.safetensors", {"ss_output_name": "dim8"})
    library = LoraLibrary([str(tmp_path)], cache_path=False)
    library.refresh()
    cards = by_name(card_data(library.entries(), library=library, preferred_name="filename"))
    assert cards["style=v2"]["tag_name"] is None
    assert "rename the file" in cards["style=v2"]["html"]
    assert cards["dim=8"]["tag_name"] == "dim8"
