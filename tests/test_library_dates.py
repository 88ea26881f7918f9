"""Dates for sorting (USERS C14): when the library first saw a file (kept in its cache, no extra reads) and when
Civitai published the version (``{name}.civitai.info``)."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import pytest
from test_library_tree import write_lora

from lora_ext.library import LoraLibrary
from lora_ext.library.sidecars import parse_civitai

DAY = 86_400


def _set_mtime(path, seconds: float) -> None:
    os.utime(path, (seconds, seconds))


def _library(root, cache):
    return LoraLibrary([root], cache_path=cache)


def _added(library, path) -> float:
    return library.get(str(path)).added


@pytest.fixture
def old_files(tmp_path):
    """Two files that were in the folder long before lora_ext first ran (mtimes 30 and 20 days ago)."""
    root = tmp_path / "L"
    now = time.time()
    a = write_lora(root / "a.safetensors", "sd1", seed=1)
    b = write_lora(root / "sub" / "b.safetensors", "sd1", seed=2)
    _set_mtime(a, now - 30 * DAY)
    _set_mtime(b, now - 20 * DAY)
    return root, a, b


def test_files_present_when_the_cache_is_created_get_their_mtime(old_files, tmp_path):
    root, a, b = old_files
    library = _library(root, tmp_path / "cache.json")
    library.refresh()
    assert _added(library, a) == pytest.approx(os.stat(a).st_mtime)
    assert _added(library, b) == pytest.approx(os.stat(b).st_mtime)


def test_a_new_file_gets_now_and_keeps_it_across_rescans_and_restarts(old_files, tmp_path):
    root, a, b = old_files
    cache = tmp_path / "cache.json"
    library = _library(root, cache)
    library.refresh()
    new = write_lora(root / "new.safetensors", "sd1", seed=3)
    _set_mtime(new, time.time() - 10 * DAY)  # an old file copied in keeps its mtime; it is still new here
    before = time.time()
    report = library.refresh()
    after = time.time()
    assert report.read_paths == [str(new)]  # the date costs no read of its own
    added = _added(library, new)
    assert before <= added <= after
    assert library.refresh().reads == 0 and _added(library, new) == added  # rescan
    restarted = _library(root, cache)  # a new process with the cache file
    assert restarted.refresh().reads == 0
    assert _added(restarted, new) == added
    assert _added(restarted, a) == pytest.approx(os.stat(a).st_mtime)


def test_a_replaced_file_keeps_its_first_seen_date(old_files, tmp_path):
    root, a, _ = old_files
    cache = tmp_path / "cache.json"
    library = _library(root, cache)
    library.refresh()
    first = _added(library, a)
    write_lora(a, "sdxl", seed=9)  # a new version downloaded over the old file
    report = library.refresh()
    assert report.changed == [str(a)] and library.get(str(a)).arch == "SDXL"
    assert _added(library, a) == first
    restarted = _library(root, cache)
    restarted.refresh()
    assert _added(restarted, a) == first


def test_a_deleted_file_put_back_later_counts_as_new(old_files, tmp_path):
    root, _, b = old_files
    library = _library(root, tmp_path / "cache.json")
    library.refresh()
    data = b.read_bytes()
    b.unlink()
    library.refresh()
    b.write_bytes(data)
    before = time.time()
    library.refresh()
    assert _added(library, b) >= before


def test_a_moved_or_renamed_file_keeps_its_date_header_data_and_hashes(old_files, tmp_path):
    """Moved to another folder under a new name between two refreshes (``os.rename`` keeps size and mtime): the file
    keeps its first-seen date, its header is not read again and its hashes are known without hashing, also in a new
    process."""
    root, a, _ = old_files
    cache = tmp_path / "cache.json"
    library = _library(root, cache)
    library.refresh()
    first = _added(library, a)
    hashes = library.hashes(library.get(str(a)))
    moved = root / "other" / "renamed.safetensors"
    moved.parent.mkdir()
    os.rename(a, moved)
    report = library.refresh()
    assert (report.added, report.removed, report.reads) == ([str(moved)], [str(a)], 0)
    assert _added(library, moved) == first
    assert library.hashes(library.get(str(moved)), compute=False) == hashes
    restarted = _library(root, cache)
    assert restarted.refresh().reads == 0
    assert _added(restarted, moved) == first
    assert restarted.hashes(restarted.get(str(moved)), compute=False) == hashes


def test_moves_that_cannot_be_told_apart_count_as_new(tmp_path):
    """Two files with the same size and mtime both move: which went where is unknown, so both are new."""
    root = tmp_path / "L"
    stamp = time.time() - 5 * DAY
    a = write_lora(root / "a.safetensors", "sd1", seed=1)
    b = write_lora(root / "b.safetensors", "sd1", seed=2)
    assert a.stat().st_size == b.stat().st_size
    for path in (a, b):
        os.utime(path, ns=(int(stamp * 1e9), int(stamp * 1e9)))
    library = _library(root, tmp_path / "cache.json")
    library.refresh()
    os.rename(a, root / "c.safetensors")
    os.rename(b, root / "d.safetensors")
    before = time.time()
    report = library.refresh()
    assert report.reads == 2
    assert _added(library, root / "c.safetensors") >= before
    assert _added(library, root / "d.safetensors") >= before


def test_an_unreadable_file_keeps_its_date_until_it_reads_again(old_files, tmp_path, monkeypatch):
    import lora_ext.library.indexer as indexer_module
    from lora_ext.errors import Problem
    from lora_ext.library.filedata import FileData

    root, a, _ = old_files
    library = _library(root, tmp_path / "cache.json")
    library.refresh()
    first = _added(library, a)
    real = indexer_module.read_file_data

    def denied(path, ext, size):  # a permission problem that may pass: not cached, read again next time
        if path == str(a):
            return FileData(problems=(Problem(path, "Permission denied"),), cacheable=False)
        return real(path, ext, size)

    monkeypatch.setattr(indexer_module, "read_file_data", denied)
    _set_mtime(a, time.time())
    library.refresh()
    assert _added(library, a) == first
    monkeypatch.setattr(indexer_module, "read_file_data", real)
    _set_mtime(a, time.time() + 5)
    library.refresh()
    assert not library.get(str(a)).problems and _added(library, a) == first


def test_without_a_cache_file_the_first_scan_uses_mtimes_and_later_files_now(old_files):
    root, a, _ = old_files
    library = LoraLibrary([root], cache_path=False)
    library.refresh()
    assert _added(library, a) == pytest.approx(os.stat(a).st_mtime)
    new = write_lora(root / "later.safetensors", "sd1", seed=4)
    _set_mtime(new, 1_000_000)
    before = time.time()
    library.refresh()
    assert _added(library, new) >= before


def test_an_unusable_cache_is_rebuilt_with_mtimes(old_files, tmp_path):
    root, a, _ = old_files
    cache = tmp_path / "cache.json"
    cache.write_text("{not json")
    library = _library(root, cache)
    library.refresh()
    assert _added(library, a) == pytest.approx(os.stat(a).st_mtime)


def test_a_cache_written_before_dates_were_kept_gives_the_recorded_mtime(old_files, tmp_path):
    root, a, b = old_files
    cache = tmp_path / "cache.json"
    _library(root, cache).refresh()
    data = json.loads(cache.read_text())
    for record in data["files"].values():
        del record["added"]
    cache.write_text(json.dumps(data))
    recorded = data["files"][str(a)]["fp"][1] / 1e9
    library = _library(root, cache)
    assert library.refresh().reads == 0
    assert _added(library, a) == pytest.approx(recorded)
    write_lora(a, "sdxl", seed=9)  # replaced: the date it had is written into the new record
    library.refresh()
    assert _added(library, a) == pytest.approx(recorded)
    assert json.loads(cache.read_text())["files"][str(a)]["added"] == pytest.approx(recorded)


def test_page_items_carry_the_dates_in_whole_seconds(old_files, tmp_path):
    from lora_ext.library import page_items

    root, a, _ = old_files
    (root / "a.civitai.info").write_text(json.dumps({"id": 1, "publishedAt": "2023-05-01T12:00:00.000Z"}))
    library = _library(root, tmp_path / "cache.json")
    library.refresh()
    items = {i["name"]: i for i in page_items(library)}
    assert items["a"]["sort_keys"]["date_added"] == int(os.stat(a).st_mtime)
    assert items["a"]["sort_keys"]["date_published"] == 1682942400
    assert items["b"]["sort_keys"]["date_published"] is None


# ------------------------------------------------------------------------------------------------ Civitai dates
@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (
            {"id": 1, "publishedAt": "2023-05-01T12:00:00.000Z", "createdAt": "2022-01-01T00:00:00Z"},
            1682942400,
        ),
        ({"id": 1, "publishedAt": None, "createdAt": "2023-05-01T12:00:00Z"}, 1682942400),
        ({"id": 1, "createdAt": "2023-05-01T14:00:00+02:00"}, 1682942400),
        ({"id": 1, "publishedAt": "2023-05-01T12:00:00"}, 1682942400),  # no zone: UTC
        ({"id": 1, "publishedAt": "yesterday", "createdAt": "2023-05-01T12:00:00Z"}, 1682942400),
        ({"id": 1, "publishedAt": "yesterday"}, None),
        ({"id": 1, "publishedAt": 1682942400}, None),
        ({"id": 1}, None),
        ({}, None),
    ],
)
def test_civitai_publish_date(info, expected):
    assert parse_civitai(info).published == expected
    assert datetime.fromtimestamp(1682942400, timezone.utc).isoformat() == "2023-05-01T12:00:00+00:00"


def test_publish_date_survives_the_cache_and_an_old_cache_reads_the_info_once(tmp_path):
    root = tmp_path / "L"
    write_lora(root / "c.safetensors", "sd1")
    info = root / "c.civitai.info"
    info.write_text(json.dumps({"id": 5, "baseModel": "SD 1.5", "publishedAt": "2023-05-01T12:00:00Z"}))
    cache = tmp_path / "cache.json"
    _library(root, cache).refresh()
    library = _library(root, cache)
    assert library.refresh().reads == 0
    assert library.entries()[0].civitai.published == 1682942400
    data = json.loads(cache.read_text())  # as a cache from before publish dates were kept
    for record in data["files"].values():
        del record["sidecars"]["civitai"]["published"]
    cache.write_text(json.dumps(data))
    library = _library(root, cache)
    assert library.refresh().read_paths == [str(info)]  # only the sidecars, not the header
    assert library.entries()[0].civitai.published == 1682942400
    again = _library(root, cache)
    assert again.refresh().reads == 0 and again.entries()[0].civitai.published == 1682942400
