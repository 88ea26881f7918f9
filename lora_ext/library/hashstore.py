"""Lazy file hashes: computed once per (path, size, mtime), kept in memory and in the cache records.

Looking up a known hash never waits for a computation in progress; two threads asking for the same unknown
file's hash compute it once (a lock per path).
"""

from __future__ import annotations

import os
import threading

from lora_ext.errors import Problem
from lora_ext.library.hashing import hash_file
from lora_ext.library.indexer import Indexer
from lora_ext.library.reads import ReadCounter


class HashStore:
    """(addnet, sha256) per file, 64 lower-case hex each.

    indexer: whose cache records persist the hashes. persist_lock: the library's lock, held while touching them.
    """

    def __init__(self, indexer: Indexer, counter: ReadCounter, persist_lock: threading.RLock):
        self._indexer = indexer
        self._counter = counter
        self._persist_lock = persist_lock
        self._memory: dict[str, tuple[list[int], str, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def known(self, path: str, fp: list[int]) -> tuple[str, str] | None:
        """(addnet, sha256) for ``path`` at fingerprint ``fp`` without reading the file, or None."""
        held = self._memory.get(path)
        if held is not None and held[0] == fp:
            return held[1], held[2]
        cached = self._indexer.cached_hashes(path, fp)
        if cached is not None:
            self._memory[path] = (fp, *cached)
        return cached

    def compute(
        self, path: str, real_path: str, is_safetensors: bool, persist: bool
    ) -> tuple[str, str] | Problem:
        """Hash the file now unless another thread just did; store in memory and in the cache records.

        path: the library path (key); real_path: the checked file to open. persist: save the cache file now.
        """
        with self._locks_lock:
            lock = self._locks.setdefault(path, threading.Lock())
        with lock:
            try:
                st = os.stat(real_path)
            except OSError as exc:
                return Problem(path, f"Cannot read this LoRA file ({exc.strerror or exc}).")
            fp = [st.st_size, st.st_mtime_ns]
            known = self.known(path, fp)
            if known is not None:
                return known
            try:
                addnet, full = hash_file(real_path, is_safetensors)
            except OSError as exc:
                return Problem(path, f"Cannot hash this LoRA file ({exc.strerror or exc}).")
            self._counter.count_hash()
            self._memory[path] = (fp, addnet, full)
        with self._persist_lock:
            if self._indexer.store_hashes(path, fp, addnet, full) and persist:
                self._indexer.save()
        return addnet, full

    def forget_missing(self, live: set[str]) -> None:
        """Drop memory for files no longer in the library."""
        for path in [p for p in self._memory if p not in live]:
            self._memory.pop(path, None)
        with self._locks_lock:
            for path in [p for p in self._locks if p not in live]:
                self._locks.pop(path, None)
