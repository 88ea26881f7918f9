"""Name resolution over a generated tree: relpaths, bare names, duplicates, aliases, case, suggestions."""

from __future__ import annotations

import pytest
from test_library_tree import build_tree, write_lora

from lora_ext.errors import Problem
from lora_ext.library import LoraEntry, LoraLibrary, page_items


@pytest.fixture
def tree(tmp_path):
    paths = build_tree(tmp_path)
    library = LoraLibrary([tmp_path / "Lora", tmp_path / "LyCORIS"], cache_path=tmp_path / "cache.json")
    report = library.refresh()
    return library, paths, report


def _path(result) -> str:
    assert isinstance(result, LoraEntry), result
    return result.path


def test_every_relpath_resolves_to_its_file(tree):
    library, paths, _ = tree
    entries = library.entries()
    assert {e.path for e in entries} == {str(p) for p in paths.values()}
    for entry in entries:
        assert _path(library.resolve(entry.relpath)) == entry.path
        assert library.lookup(entry.relpath).problems == ()


def test_bare_names_and_folder_names(tree):
    library, paths, _ = tree
    assert _path(library.resolve("style_a")) == str(paths["style_a"])
    assert _path(library.resolve("chars/Villain")) == str(paths["villain"])
    assert _path(library.resolve("Villain")) == str(paths["villain"])
    assert _path(library.resolve("model.v2.final")) == str(paths["dotted"])  # inner dots are not extensions
    assert _path(library.resolve("loha_thing")) == str(paths["loha"])  # second root
    assert _path(library.resolve("legacy")) == str(paths["legacy"])
    assert _path(library.resolve("chars\\old\\hero")) == str(paths["hero_old"])  # Windows separators
    assert _path(library.resolve("style_a.safetensors")) == str(paths["style_a"])


def test_duplicate_bare_name_uses_shallowest_then_natural_order_and_warns(tree):
    library, paths, report = tree
    resolution = library.lookup("hero")
    # chars/hero and other/hero are both one level deep; chars/ comes first; chars/old/hero is deeper
    assert resolution.entry is not None and resolution.entry.path == str(paths["hero"])
    assert resolution.via == "name"
    (warning,) = resolution.problems
    assert warning.severity == "warning"
    assert "matches 3 files" in warning.message and "other/hero" in warning.message
    assert "chars/old/hero" in warning.message
    assert any(
        "'hero' names 3 files" in line and "chars/hero.safetensors" in line for line in report.duplicates
    )
    assert _path(library.resolve("other/hero")) == str(paths["hero_other"])


def test_aliases(tree):
    library, paths, report = tree
    assert _path(library.resolve("StyleAlias")) == str(paths["style_a"])
    assert _path(library.resolve("hero_v2")) == str(paths["hero"])
    # an alias shared by two files resolves to none of them, with a message naming both
    result = library.resolve("shared")
    assert isinstance(result, Problem) and result.severity == "error"
    assert "x/shared1" in result.message and "y/shared2" in result.message
    assert any("Alias 'shared' is shared" in line for line in report.duplicates)
    # a filename always wins over a clashing alias
    assert _path(library.resolve("style_a")) == str(paths["style_a"])
    assert any("Alias 'style_a'" in line and "z/impostor" in line for line in report.duplicates)
    assert _path(library.resolve("impostor")) == str(paths["impostor"])


def test_case_insensitive_fallback_notes_it(tree):
    library, paths, _ = tree
    resolution = library.lookup("VILLAIN")
    assert resolution.entry is not None and resolution.entry.path == str(paths["villain"])
    assert resolution.via == "case-insensitive name"
    assert [p.severity for p in resolution.problems] == ["info"]
    assert _path(library.resolve("stylealias")) == str(paths["style_a"])
    assert _path(library.resolve("CHARS/OLD/HERO")) == str(paths["hero_old"])


def test_unknown_name_suggests_close_names(tree):
    library, _, _ = tree
    result = library.resolve("vilain")
    assert isinstance(result, Problem)
    assert result.message.startswith("Lora not found: vilain (did you mean 'Villain'")
    result = library.resolve("chars/heroo")
    assert isinstance(result, Problem) and result.details[0] == "chars/hero"
    result = library.resolve("completely-unrelated-name")
    assert isinstance(result, Problem) and "did you mean" not in result.message
    assert "Lora not found: completely-unrelated-name" in result.message


@pytest.mark.parametrize("name", ["../Lora/style_a", "/etc/passwd", "chars/../../x", "C:/x", "..", "a\x00b"])
def test_traversal_names_are_refused(tree, name):
    library, _, _ = tree
    result = library.resolve(name)
    assert isinstance(result, Problem)
    assert "Refused" in result.message


def test_tag_name_resolves_back_to_each_entry(tree):
    library, paths, _ = tree
    for prefer in ("alias", "filename"):
        for entry in library.entries():
            name = library.tag_name(entry, prefer)
            assert _path(library.resolve(name)) == entry.path, (prefer, entry.relpath, name)
    by_path = {item["filename"]: item for item in page_items(library)}
    assert by_path[str(paths["style_a"])]["tag_name"] == "StyleAlias"
    assert by_path[str(paths["shared1"])]["tag_name"] == "shared1"  # clashing alias not offered
    assert by_path[str(paths["hero_other"])]["tag_name"] == "other/hero"  # duplicate bare name: folder form
    assert by_path[str(paths["hero"])]["tag_name"] == "hero_v2"


def test_same_relpath_in_two_roots_prefers_first_root_and_reports(tmp_path):
    write_lora(tmp_path / "A" / "same.safetensors", seed=1)
    write_lora(tmp_path / "B" / "same.safetensors", seed=2)
    library = LoraLibrary([tmp_path / "A", tmp_path / "B"], cache_path=False)
    report = library.refresh()
    assert _path(library.resolve("same")) == str(tmp_path / "A" / "same.safetensors")
    assert any("several Lora folders" in line for line in report.duplicates)
    assert any("<lora:B/same:…>" in line for line in report.duplicates)
    assert len(library.entries()) == 2


def test_a_file_shadowed_by_an_earlier_root_resolves_by_root_qualified_name(tmp_path):
    """Two roots with the same folder/name: the second file is reachable as ROOT/folder/name, and tag_name gives
    that form, never a name resolving to the other root's file."""
    write_lora(tmp_path / "Lora" / "sub" / "same.safetensors", seed=1)
    write_lora(tmp_path / "LyCORIS" / "sub" / "same.safetensors", seed=2)
    library = LoraLibrary([tmp_path / "Lora", tmp_path / "LyCORIS"], cache_path=False)
    library.refresh()
    first, second = sorted(library.entries(), key=lambda e: e.root)
    assert _path(library.resolve("sub/same")) == first.path
    assert _path(library.resolve("LyCORIS/sub/same")) == second.path
    assert _path(library.resolve("Lora/sub/same")) == first.path
    for entry in (first, second):
        for prefer in ("alias", "filename"):
            assert _path(library.resolve(library.tag_name(entry, prefer))) == entry.path
    assert library.tag_name(second, "filename") == "LyCORIS/sub/same"


def test_entries_are_in_natural_path_order(tmp_path):
    for name in ("a10", "a2", "B1", "a1"):
        write_lora(tmp_path / "L" / f"{name}.safetensors")
    library = LoraLibrary([tmp_path / "L"], cache_path=False)
    library.refresh()
    assert [e.name for e in library.entries()] == ["a1", "a2", "a10", "B1"]


def test_report_lines_name_duplicates_for_the_console(tree):
    library, _, report = tree
    lines = report.lines()
    assert lines[0].startswith(
        f"{len(library.entries())} LoRAs ({len(library.entries())} new, 0 changed, 0 removed)"
    )
    assert "duplicate name(s)" in lines[0]
    assert any(line.startswith("  duplicate: 'hero' names 3 files") for line in lines)
    assert len(report.lines(limit=1)) == 1 + 1 + 1  # summary, one duplicate, "… and N more"


def test_duplicate_bare_name_prefers_a_visible_file(tmp_path):
    write_lora(tmp_path / "L" / ".old" / "x.safetensors", seed=1)
    write_lora(tmp_path / "L" / "sub" / "x.safetensors", seed=2)
    library = LoraLibrary([tmp_path / "L"], cache_path=False)
    library.refresh()
    assert _path(library.resolve("x")) == str(tmp_path / "L" / "sub" / "x.safetensors")
    assert _path(library.resolve(".old/x")) == str(tmp_path / "L" / ".old" / "x.safetensors")


def test_output_name_none_is_no_alias(tmp_path):
    """kohya writes ``ss_output_name: "None"`` when trained without --output_name; the webui forbids that alias
    (A1111_CONTRACT §10.1), so a card never inserts ``<lora:None:…>`` and no "shared alias" note appears."""
    write_lora(tmp_path / "L" / "last.safetensors", metadata={"ss_output_name": "None"})
    write_lora(tmp_path / "L" / "sub" / "other.safetensors", metadata={"ss_output_name": "none"}, seed=1)
    library = LoraLibrary([tmp_path / "L"], cache_path=False)
    report = library.refresh()
    last = next(e for e in library.entries() if e.name == "last")
    assert last.alias == "last"
    assert library.tag_name(last, "alias") == "last"
    assert isinstance(library.resolve("None"), Problem)
    assert report.duplicates == []
