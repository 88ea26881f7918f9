"""Hashes against independently computed sha256 values; laziness, persistence and shorthash lookup."""

from __future__ import annotations

import hashlib
import os

import torch
from test_library_tree import header_length, write_lora

from lora_ext.library import Hashes, LoraLibrary


def _independent(path) -> tuple[str, str]:
    data = path.read_bytes()
    return hashlib.sha256(data[8 + header_length(path) :]).hexdigest(), hashlib.sha256(data).hexdigest()


def _library(root, cache):
    library = LoraLibrary([root], cache_path=cache)
    library.refresh()
    return library


def test_addnet_and_full_hash_equal_hashlib_over_byte_ranges(tmp_path):
    path = write_lora(tmp_path / "L" / "a.safetensors", "sdxl", {"ss_output_name": "a"})
    library = _library(tmp_path / "L", tmp_path / "c.json")
    hashes = library.hashes(library.entries()[0])
    addnet, full = _independent(path)
    assert isinstance(hashes, Hashes)
    assert (hashes.addnet, hashes.sha256, hashes.shorthash, hashes.source) == (
        addnet,
        full,
        addnet[:12],
        "computed",
    )
    assert addnet != full


def test_addnet_hash_ignores_metadata_edits(tmp_path):
    first = write_lora(tmp_path / "A" / "a.safetensors", "sd1", {"ss_output_name": "one"}, seed=3)
    second = write_lora(
        tmp_path / "B" / "a.safetensors", "sd1", {"ss_output_name": "two", "x": "y" * 500}, seed=3
    )
    lib_a, lib_b = _library(tmp_path / "A", False), _library(tmp_path / "B", False)
    ha, hb = lib_a.hashes(lib_a.entries()[0]), lib_b.hashes(lib_b.entries()[0])
    assert ha.addnet == hb.addnet
    assert ha.sha256 != hb.sha256
    assert hashlib.sha256(first.read_bytes()).hexdigest() == ha.sha256
    assert hashlib.sha256(second.read_bytes()).hexdigest() == hb.sha256


def test_embedded_sshs_model_hash_is_preferred(tmp_path):
    embedded = "0123456789abcdef" * 4
    path = write_lora(tmp_path / "L" / "a.safetensors", "sd1", {"sshs_model_hash": embedded.upper()})
    library = _library(tmp_path / "L", False)
    entry = library.entries()[0]
    known = library.hashes(entry, compute=False)  # no reading needed
    assert known == Hashes(embedded, None, embedded[:12], "sshs_model_hash")
    assert library.hash_reads == 0
    full = library.hashes(entry)
    addnet, sha = _independent(path)
    assert (full.addnet, full.shorthash, full.source) == (embedded, embedded[:12], "sshs_model_hash")
    assert (full.computed_addnet, full.sha256) == (addnet, sha)


def test_pt_file_hash_is_full_file_sha256(tmp_path):
    path = tmp_path / "L" / "old.pt"
    path.parent.mkdir()
    torch.save({"lora_unet_x.lora_down.weight": torch.ones(2, 3)}, path)
    library = _library(tmp_path / "L", False)
    hashes = library.hashes(library.entries()[0])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (hashes.addnet, hashes.sha256) == (digest, digest)


def test_hashes_are_lazy_computed_once_and_persisted(tmp_path):
    path = write_lora(tmp_path / "L" / "a.safetensors", "sd1")
    cache = tmp_path / "cache.json"
    library = _library(tmp_path / "L", cache)
    assert library.hash_reads == 0  # refresh never hashes
    entry = library.entries()[0]
    assert library.hashes(entry, compute=False) is None
    first = library.hashes(entry)
    assert library.hashes(entry) == first
    library.refresh()
    assert library.hashes(library.entries()[0]) == first
    assert library.hash_reads == 1
    fresh = _library(tmp_path / "L", cache)  # a new process: the cache file holds the hash
    assert fresh.hashes(fresh.entries()[0]) == first
    assert fresh.hash_reads == 0
    write_lora(path, "sd1", seed=99)  # changed content, same size: hashed again
    st = os.stat(path)  # file times are as coarse as the kernel tick: make the new mtime distinct
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh.refresh()
    changed = fresh.hashes(fresh.entries()[0])
    assert changed.addnet == _independent(path)[0] != first.addnet
    assert fresh.hash_reads == 1


def test_by_shorthash(tmp_path):
    a = write_lora(tmp_path / "L" / "a.safetensors", "sd1", seed=1)
    write_lora(tmp_path / "L" / "b.safetensors", "sd1", seed=2)
    write_lora(tmp_path / "L" / "c.safetensors", "sd1", {"sshs_model_hash": "fe" * 32}, seed=3)
    write_lora(
        tmp_path / "L" / "d.safetensors",
        "sd1",
        {"modelspec.hash_sha256": "0x" + "c0ffee" * 10 + "abcd"},
        seed=4,
    )
    library = _library(tmp_path / "L", tmp_path / "cache.json")
    addnet, full = _independent(a)
    assert library.by_shorthash(addnet[:12]) == []  # unknown until hashed
    assert [e.name for e in library.by_shorthash("fefefefefefe")] == ["c"]  # embedded hashes are known
    assert [e.name for e in library.by_shorthash("C0FFEEC0FFEE")] == ["d"]  # OneTrainer's modelspec hash
    assert [e.name for e in library.by_shorthash(addnet[:12], compute_missing=True)] == ["a"]
    assert [e.name for e in library.by_shorthash(full[:10])] == ["a"]  # Civitai AutoV2
    assert library.by_shorthash("e3b0c44298fc") == []  # empty-input hash never matches (USERS H6)
    assert library.by_shorthash("zz") == []
    fresh = _library(tmp_path / "L", tmp_path / "cache.json")  # the bulk hashing was saved once, at the end
    assert [e.name for e in fresh.by_shorthash(addnet[:12])] == ["a"]
    assert fresh.hash_reads == 0


def test_concurrent_requests_hash_a_file_once(tmp_path):
    import threading

    path = write_lora(tmp_path / "L" / "a.safetensors", "sdxl")
    library = _library(tmp_path / "L", tmp_path / "cache.json")
    entry = library.entries()[0]
    results = []
    threads = [threading.Thread(target=lambda: results.append(library.hashes(entry))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert library.hash_reads == 1
    assert {r.addnet for r in results} == {_independent(path)[0]}
