"""Incremental refresh (counting reads), the persistent cache, and corrupt inputs reported per file."""

from __future__ import annotations

import json
import os

import pytest
from test_library_tree import PNG_1PX, build_tree, write_lora

from lora_ext.errors import Problem
from lora_ext.library import LoraEntry, LoraLibrary
from lora_ext.library.cache import CACHE_VERSION


def _library(base, cache):
    return LoraLibrary([base / "Lora", base / "LyCORIS"], cache_path=cache)


def _bump_mtime(path, seconds=10):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


@pytest.fixture
def tree(tmp_path):
    paths = build_tree(tmp_path)
    library = _library(tmp_path, tmp_path / "cache.json")
    first = library.refresh()
    return library, paths, first


def test_first_refresh_reads_each_header_and_sidecar_once(tree, tmp_path):
    _, paths, first = tree
    safetensors = [str(p) for p in paths.values() if p.suffix == ".safetensors"]
    sidecars = [
        tmp_path / "Lora" / name
        for name in ("style_a.json", "style_a.txt", "pony/pony_char.json", "pony/pony_char.civitai.info")
    ] + [tmp_path / "Lora" / "covers" / "covered.description.txt"]
    assert sorted(first.read_paths) == sorted(safetensors + [str(p) for p in sidecars])
    assert first.reads == len(first.read_paths)
    assert sorted(first.added) == sorted(str(p) for p in paths.values())
    assert (first.changed, first.removed) == ([], [])


def test_unchanged_refresh_reads_nothing(tree):
    library, _, _ = tree
    again = library.refresh()
    assert (again.reads, again.added, again.changed, again.removed) == (0, [], [], [])


def test_edited_sidecar_rereads_only_that_sidecar(tree, tmp_path):
    library, paths, _ = tree
    sidecar = tmp_path / "Lora" / "style_a.json"
    data = json.loads(sidecar.read_text())
    data["activation text"] = "edited"
    sidecar.write_text(json.dumps(data))
    _bump_mtime(sidecar)
    report = library.refresh()
    assert report.read_paths == [str(sidecar)]
    assert report.changed == [str(paths["style_a"])]
    assert library.get(str(paths["style_a"])).activation_text == "edited"


def test_touched_file_rereads_only_its_header(tree):
    library, paths, _ = tree
    _bump_mtime(paths["villain"])
    report = library.refresh()
    assert report.read_paths == [str(paths["villain"])]
    assert report.changed == [str(paths["villain"])]


def test_added_and_deleted_files(tree, tmp_path):
    library, paths, _ = tree
    new = write_lora(tmp_path / "Lora" / "new" / "fresh.safetensors", "sdxl", {"ss_output_name": "freshy"})
    report = library.refresh()
    assert (report.added, report.read_paths, report.changed) == ([str(new)], [str(new)], [])
    assert library.resolve("freshy").path == str(new)
    os.remove(paths["villain"])
    report = library.refresh()
    assert (report.removed, report.reads) == ([str(paths["villain"])], 0)
    missing = library.resolve("Villain")
    assert isinstance(missing, Problem) and "Lora not found" in missing.message


def test_preview_added_without_reading(tree, tmp_path):
    library, paths, _ = tree
    (tmp_path / "Lora" / "chars" / "Villain.preview.gif").write_bytes(PNG_1PX)
    report = library.refresh()
    assert (report.changed, report.reads) == ([str(paths["villain"])], 0)
    assert library.get(str(paths["villain"])).preview.endswith("Villain.preview.gif")


def test_cache_file_spares_reads_in_a_new_instance(tree, tmp_path):
    library, paths, _ = tree
    entries = {e.path: e for e in library.entries()}
    fresh = _library(tmp_path, tmp_path / "cache.json")
    report = fresh.refresh()
    assert report.reads == 0
    assert sorted(report.added) == sorted(entries)
    for entry in fresh.entries():
        old = entries[entry.path]
        assert (
            entry.metadata,
            entry.summary,
            entry.arch,
            entry.user_metadata,
            entry.civitai,
            entry.description,
        ) == (
            old.metadata,
            old.summary,
            old.arch,
            old.user_metadata,
            old.civitai,
            old.description,
        )
    _bump_mtime(paths["style_a"])  # its sidecars (json, txt) are unchanged: only the header is read again
    library.refresh()
    other = _library(tmp_path, tmp_path / "cache.json")
    assert other.refresh().read_paths == []
    _bump_mtime(paths["style_a"])
    other = _library(tmp_path, tmp_path / "cache.json")
    assert other.refresh().read_paths == [str(paths["style_a"])]


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00\xff garbage", b'{"version": %d, "files": [1, 2]}' % CACHE_VERSION, b"[]"],
)
def test_garbage_cache_is_rebuilt(tmp_path, garbage):
    paths = build_tree(tmp_path)
    cache = tmp_path / "cache.json"
    cache.write_bytes(garbage)
    library = _library(tmp_path, cache)
    report = library.refresh()
    assert len(library.entries()) == len(paths)
    assert [p.severity for p in report.errors if p.subject == str(cache)] == ["warning"]
    assert json.loads(cache.read_text())["version"] == CACHE_VERSION  # rewritten valid
    assert _library(tmp_path, cache).refresh().reads == 0


def test_cache_from_another_version_is_rebuilt_quietly(tmp_path):
    build_tree(tmp_path)
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({"version": CACHE_VERSION - 1, "files": {"x": {"fp": [1, 2]}}}))
    report = _library(tmp_path, cache).refresh()
    assert [p.severity for p in report.errors if p.subject == str(cache)] == ["info"]
    assert json.loads(cache.read_text())["version"] == CACHE_VERSION
    assert "x" not in json.loads(cache.read_text())["files"]


def test_default_cache_lives_beside_the_first_root(tmp_path):
    build_tree(tmp_path)
    library = LoraLibrary([tmp_path / "Lora", tmp_path / "LyCORIS"])
    library.refresh()
    assert os.path.exists(tmp_path / "Lora" / ".lora_ext_cache.json")
    assert all(".lora_ext_cache" not in e.path for e in library.entries())


def test_unwritable_cache_location_is_a_warning_not_a_failure(tmp_path):
    write_lora(tmp_path / "L" / "a.safetensors")
    (tmp_path / "blocker").write_text("a file, not a folder")
    library = LoraLibrary([tmp_path / "L"], cache_path=tmp_path / "blocker" / "cache.json")
    report = library.refresh()
    assert [e.name for e in library.entries()] == ["a"]
    assert [p.severity for p in report.errors] == ["warning"]


def test_corrupt_inputs_are_reported_per_file_and_the_rest_lists(tmp_path, monkeypatch):
    root = tmp_path / "L"
    good = write_lora(root / "good.safetensors", "sd1", {"ss_output_name": "fine"})
    truncated = write_lora(root / "truncated.safetensors", "sd1")
    truncated.write_bytes(truncated.read_bytes()[:40])
    cut = write_lora(root / "cut.safetensors", "sd1")  # header intact, tensor data cut short
    cut.write_bytes(cut.read_bytes()[:-100])
    (root / "garbage.safetensors").write_bytes(os.urandom(3000))
    (root / "empty.safetensors").write_bytes(b"")
    (root / "notobject.safetensors").write_bytes(len(b"[1, 2]").to_bytes(8, "little") + b"[1, 2]")
    (root / "badjson.safetensors").write_bytes((5).to_bytes(8, "little") + b"{nope")
    bad_shape = b'{"m.lora_down.weight":{"dtype":"F16","shape":"x","data_offsets":[0,2]}}'
    (root / "badshape.safetensors").write_bytes(len(bad_shape).to_bytes(8, "little") + bad_shape + b"\0\0")
    unreadable = write_lora(root / "unreadable.safetensors", "sd1")
    os.chmod(unreadable, 0)
    (root / "broken.safetensors").symlink_to(root / "missing-target.safetensors")
    (root / "good.json").write_text("{broken json")
    import lora_ext.formats.safetensors_header as header_module

    real_open = open

    def deny(path, *args, **kwargs):  # root ignores file modes; refuse this one file like a permission error
        if str(path) == str(unreadable):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(header_module, "open", deny, raising=False)
    library = LoraLibrary([root], cache_path=tmp_path / "cache.json")
    report = library.refresh()
    by_subject = {}
    for problem in report.errors:
        by_subject.setdefault(problem.subject, []).append(problem)
    bad = ["truncated", "cut", "garbage", "empty", "notobject", "badjson", "badshape", "unreadable", "broken"]
    for name in bad:
        assert str(root / f"{name}.safetensors") in by_subject, name
    assert "truncated" in by_subject[str(truncated)][0].message
    assert "truncated" in by_subject[str(cut)][0].message
    assert library.get(str(cut)).summary.key_count == 9  # still summarized from its intact header
    assert "Permission denied" in by_subject[str(unreadable)][0].message
    assert "Broken link" in by_subject[str(root / "broken.safetensors")][0].message
    assert "not valid JSON" in by_subject[str(root / "good.json")][0].message
    entry = library.resolve("fine")
    assert isinstance(entry, LoraEntry) and entry.path == str(good) and entry.arch == "SD1"
    listed = sorted(e.name for e in library.entries())
    assert listed == sorted(["good", *[n for n in bad if n != "broken"]])  # still shown, with their problems
    assert library.get(str(root / "garbage.safetensors")).problems
    # a permission problem is retried on the next refresh; permanent corruption is remembered
    again = library.refresh()
    assert again.read_paths == [str(unreadable)]
    assert str(unreadable) in {p.subject for p in again.errors}
    assert again.changed == []  # failed the same way again: nothing to redraw


def test_missing_root_is_a_warning_and_other_roots_list(tmp_path):
    write_lora(tmp_path / "L" / "a.safetensors")
    library = LoraLibrary([tmp_path / "missing", tmp_path / "L"], cache_path=False)
    report = library.refresh()
    assert [e.name for e in library.entries()] == ["a"]
    assert [(p.subject, p.severity) for p in report.errors] == [(str(tmp_path / "missing"), "info")]
