"""The one atomic-write helper behind the library cache and ``{name}.json`` sidecars (lora_ext.library.atomic)."""

from __future__ import annotations

import os

import pytest

from lora_ext.library import atomic
from lora_ext.library.atomic import write_text_atomic


def test_writes_text_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    write_text_atomic(str(target), "néw", prefix=".tmp-", suffix=".json")
    assert target.read_text(encoding="utf-8") == "néw"
    assert os.listdir(tmp_path) == ["a.json"]


def test_failed_replace_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    target.write_text("old")

    def refuse(src, dst):
        raise PermissionError("read-only")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_text_atomic(str(target), "new", prefix=".tmp-", suffix=".json")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.json"]
