"""Counting file reads, so tests and reports can tell exactly what a refresh re-read."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadCounter:
    """Thread-safe count of files opened for reading, plus an optional log of paths for one thread.

    reads: headers, sidecars and covers read so far. hash_reads: files streamed for hashing so far.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reads = 0
        self.hash_reads = 0
        self._log: list[str] | None = None
        self._log_thread: int | None = None

    def count(self, path: str) -> None:
        """Record one read of ``path``."""
        with self._lock:
            self.reads += 1
            if self._log is not None and threading.get_ident() == self._log_thread:
                self._log.append(path)

    def count_hash(self) -> None:
        """Record one full streamed read for hashing."""
        with self._lock:
            self.hash_reads += 1

    @contextmanager
    def logging_into(self, log: list[str]) -> Iterator[None]:
        """Append the paths read by the calling thread to ``log`` until the block ends (reads by other threads,
        e.g. a page reading user metadata during a refresh, are counted but not logged)."""
        with self._lock:
            self._log, self._log_thread = log, threading.get_ident()
        try:
            yield
        finally:
            with self._lock:
                self._log, self._log_thread = None, None

    def read_text(self, path: str) -> str:
        """Read a UTF-8 text file (a BOM is dropped), counting it. Raises OSError / UnicodeDecodeError."""
        self.count(path)
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read()
