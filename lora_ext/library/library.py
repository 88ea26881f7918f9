"""``LoraLibrary``: the scanned, cached, thread-safe index of LoRA files under one or more roots.

Readers (``entries``, ``resolve``, ``lookup``, ...) use the current immutable snapshot; ``refresh`` builds a new one
off to the side (``Indexer``) and swaps it in, so a generation resolving names during a refresh sees either the
old or the new index, never a half-built one. Refreshes, sidecar writes and cache writes are serialized by one
lock; hash lookups never wait for them.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Sequence
from typing import Any, Literal

from lora_ext.errors import Problem
from lora_ext.formats.safetensors_header import read_safetensors_header
from lora_ext.library.cache import DEFAULT_CACHE_NAME
from lora_ext.library.entry import EMBEDDED_PREVIEW, Hashes, LoraEntry, RefreshReport, Resolution
from lora_ext.library.filedata import COVER_KEY
from lora_ext.library.hashstore import HashStore
from lora_ext.library.indexer import Indexer, Snapshot
from lora_ext.library.names import root_qualified
from lora_ext.library.paths import safe_path
from lora_ext.library.reads import ReadCounter
from lora_ext.library.sidecars import write_json_atomic

HiddenMode = Literal["when searched", "always", "never"]

#: sha256 of empty input; a shorthash equal to it identifies nothing (USERS H6).
_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class LoraLibrary:
    """Index of LoRA files under ``roots`` (A1111: ``models/Lora`` and ``models/LyCORIS``).

    roots: folders scanned recursively, in priority order (a ``folder/name`` present in two roots means the first).
    cache_path: the persistent cache file; None = ``<first root>/.lora_ext_cache.json``; False = no cache file.
    hidden: the webui's ``extra_networks_hidden_models`` (any case), for pages: files under dot-folders get
        ``hidden=True`` and "always" shows them, "when searched" shows them only for searches, "never" leaves them
        off the page (``page_items``); they resolve by name in every mode, as in the webui.
    list_hidden: the webui's ``list_hidden_files``; False skips dot-folders (and dot-files) entirely.
    allow_external_links: follow links whose target lies outside every root (refused by default).
    preview_extension: the webui's ``samples_format``, tried after the standard preview extensions.

    Nothing is scanned until ``refresh()`` is called.
    """

    def __init__(
        self,
        roots: Sequence[str | os.PathLike[str]],
        cache_path: str | os.PathLike[str] | None | Literal[False] = None,
        hidden: str = "when searched",
        list_hidden: bool = True,
        allow_external_links: bool = False,
        preview_extension: str | None = None,
    ):
        self.roots = [os.path.abspath(os.fspath(r)) for r in roots]
        if cache_path is None:
            self.cache_path = os.path.join(self.roots[0], DEFAULT_CACHE_NAME) if self.roots else None
        elif cache_path is False:
            self.cache_path = None
        else:
            self.cache_path = os.path.abspath(os.fspath(cache_path))
        mode = hidden.strip().lower()
        if mode not in ("when searched", "always", "never"):
            raise ValueError(f"hidden must be 'when searched', 'always' or 'never', not {hidden!r}")
        self.hidden: HiddenMode = mode  # type: ignore[assignment]
        self.allow_external_links = allow_external_links
        self.preview_extension = preview_extension
        self._counter = ReadCounter()
        self._lock = threading.RLock()  # refreshes, sidecar writes, cache records
        self._indexer = Indexer(
            self.roots,
            self.cache_path,
            not list_hidden,
            allow_external_links,
            preview_extension,
            self._counter,
        )
        self._hashes = HashStore(self._indexer, self._counter, self._lock)
        self._snapshot = Snapshot()
        self.last_report = RefreshReport()

    @property
    def reads(self) -> int:
        """Files opened and read so far (headers, sidecars, covers; not hashing)."""
        return self._counter.reads

    @property
    def hash_reads(self) -> int:
        """Files hashed so far (each a full streamed read)."""
        return self._counter.hash_reads

    def refresh(self) -> RefreshReport:
        """Rescan the roots; re-read only files whose (size, mtime) or sidecars changed; swap in the new index.

        Returns what changed, per-file problems (the other files list fine), duplicate-name lines and the number
        of file reads this refresh made.
        """
        with self._lock:
            report = RefreshReport()
            with self._counter.logging_into(report.read_paths):
                snapshot, dirty = self._indexer.refresh(self._snapshot, report)
            self._snapshot = snapshot  # one reference assignment: readers see the old or the new snapshot
            self._hashes.forget_missing(set(snapshot.by_path))
            report.reads = len(report.read_paths)
            report.total = len(snapshot.entries)
            if dirty:
                problem = self._indexer.save()
                if problem is not None:
                    report.errors.append(problem)
            self.last_report = report
            return report

    def save_cache(self) -> Problem | None:
        """Write the cache file now (refreshes and single hash computations do this themselves)."""
        with self._lock:
            return self._indexer.save()

    # ----------------------------------------------------------------------------------------------- lookups
    def entries(self, include_hidden: bool = True) -> list[LoraEntry]:
        """All entries in stable natural order (root order, then path)."""
        entries = self._snapshot.entries
        return list(entries) if include_hidden else [e for e in entries if not e.hidden]

    def lookup(self, name: str) -> Resolution:
        """Resolve a tag name with all notes: see ``resolve`` for the order. Never raises for user input."""
        return self._snapshot.index.lookup(name)

    def resolve(self, name: str) -> LoraEntry | Problem:
        """The entry a tag name means, or a Problem ("Lora not found: x (did you mean y?)").

        Order: exact ``folder/name`` relpath -> exact filename stem (duplicates: visible before hidden, shallowest, first in root and
        natural path order; ``lookup`` carries the warning) -> alias (``ss_output_name``; a file name always wins
        over a clashing alias, and an alias shared by several files resolves to none) -> the same without a
        trailing ``.safetensors``-style extension -> the same case-insensitively -> not found, with suggestions.
        Traversal attempts (``..``, absolute paths) are refused.
        """
        resolution = self.lookup(name)
        if resolution.entry is not None:
            return resolution.entry
        errors = [p for p in resolution.problems if p.severity == "error"]
        return errors[0] if errors else self._snapshot.index.not_found(name)

    def suggestions(self, name: str, limit: int = 3) -> list[str]:
        """Known names close to ``name`` (for "did you mean")."""
        return self._snapshot.index.suggestions(name, limit)

    def duplicates(self) -> list[str]:
        """Lines describing duplicated bare names and clashing aliases in the current index."""
        return list(self._snapshot.index.duplicates)

    def tag_name(self, entry: LoraEntry, prefer: Literal["alias", "filename"] = "alias") -> str:
        """A name that resolves back to ``entry``: its alias (when preferred and unambiguous), else its file name,
        else its ``folder/name``, else ``ROOT/folder/name`` when an earlier root has the same ``folder/name``
        (A1111's "refer to Lora by" setting, USERS S4-S6). Only when two roots with the same folder name share a
        ``folder/name`` does no name reach the later file; then this returns its relpath, which names the earlier
        one (callers check with ``resolve``; the LoRA tab marks such a card as shadowed)."""
        index = self._snapshot.index
        candidates = [entry.alias, entry.name] if prefer == "alias" else [entry.name]
        for candidate in candidates:
            found = index.lookup(candidate)
            if found.entry is not None and found.entry.path == entry.path and found.via in ("name", "alias"):
                return candidate
        found = index.lookup(entry.relpath)
        if found.entry is not None and found.entry.path != entry.path:  # an earlier root has this folder/name
            qualified = root_qualified(entry)
            if getattr(index.lookup(qualified).entry, "path", None) == entry.path:
                return qualified
        return entry.relpath  # resolves to another file only when two roots share folder name and relpath

    def get(self, path: str) -> LoraEntry | None:
        """The current entry for an absolute file path, or None."""
        return self._snapshot.by_path.get(os.path.abspath(path))

    def _known(self, entry: LoraEntry) -> LoraEntry | Problem:
        current = self._snapshot.by_path.get(entry.path)
        if current is None:
            return Problem(entry.path, "This LoRA is not in the library (anymore). Refresh the Lora list.")
        return current

    # ----------------------------------------------------------------------------------------------- paths
    def safe_path(self, path: str) -> str | Problem:
        """Real path of ``path`` (relative to a root, or absolute) when it lies inside the roots, else a Problem."""
        return safe_path(path, self.roots)

    def preview_file(self, entry: LoraEntry) -> str | None | Problem:
        """Real path of the entry's preview image file; None when it has none or only an embedded cover."""
        current = self._known(entry)
        if isinstance(current, Problem):
            return current
        if current.preview is None or current.preview.startswith(EMBEDDED_PREVIEW):
            return None
        return self.safe_path(current.preview)

    def cover_image(self, entry: LoraEntry, index: int = 0) -> bytes | Problem:
        """Decoded bytes of the ``index``-th embedded ``ssmd_cover_images`` entry (read from the header now)."""
        current = self._known(entry)
        if isinstance(current, Problem):
            return current
        checked = self.safe_path(current.path)
        if isinstance(checked, Problem):
            return checked
        self._counter.count(current.path)
        header = read_safetensors_header(checked, validate=False)
        if isinstance(header, Problem):
            return header
        try:
            covers = json.loads(header.metadata.get(COVER_KEY, "[]"))
            item = covers[index]
            if "," in item[:64] and item.startswith("data:"):
                item = item.split(",", 1)[1]
            return base64.b64decode(item, validate=False)
        except (ValueError, IndexError, TypeError, AttributeError, binascii.Error):
            return Problem(
                current.path, f"The file has no readable embedded cover image number {index}.", "warning"
            )

    # ----------------------------------------------------------------------------------------------- sidecars
    def user_metadata(self, entry: LoraEntry) -> dict[str, Any]:
        """``{name}.json`` as it is on disk now (all keys); {} when absent or not a JSON object."""
        current = self._known(entry)
        if isinstance(current, Problem):
            return {}
        path = self._json_path(current)
        loaded = self._load_user_json(path)
        return loaded if isinstance(loaded, dict) else {}

    def write_user_metadata(self, entry: LoraEntry, data: dict[str, Any]) -> LoraEntry | Problem:
        """Merge ``data`` into ``{name}.json`` and write it atomically; keys set to None are removed, keys not in
        ``data`` (including unknown ones from other tools) are kept. Never touches the LoRA file (USERS F9).

        Returns the updated entry (the index is updated at once), or a Problem (unknown entry, existing JSON
        broken, folder not writable)."""
        with self._lock:
            current = self._known(entry)
            if isinstance(current, Problem):
                return current
            path = self._json_path(current)
            checked = safe_path(os.path.dirname(path), self.roots)
            if isinstance(checked, Problem):
                return checked
            existing = self._load_user_json(path)
            if isinstance(existing, Problem):
                return existing
            merged = dict(existing or {})
            for key, value in data.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            try:
                write_json_atomic(path, merged)
            except OSError as exc:
                return Problem(
                    path, f"Cannot save the user metadata ({exc.strerror or exc}). Check permissions."
                )
            except (TypeError, ValueError) as exc:  # a value JSON cannot hold; the old file is untouched
                return Problem(
                    path, f"Cannot save the user metadata: {exc}. Only text and numbers can be saved."
                )
            self._indexer.mark_stale(current.path, path)
            self.refresh()
            updated = self._snapshot.by_path.get(current.path)
            return (
                updated
                if updated is not None
                else Problem(current.path, "The LoRA disappeared while saving.")
            )

    def _json_path(self, entry: LoraEntry) -> str:
        return os.path.join(os.path.dirname(entry.path), entry.name + ".json")

    def _load_user_json(self, path: str) -> dict[str, Any] | None | Problem:
        if not os.path.exists(path):
            return None
        try:
            text = self._counter.read_text(path)
        except (OSError, UnicodeDecodeError) as exc:
            return Problem(path, f"Cannot read the user metadata ({exc}).")
        if not text.strip():
            return None
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            return Problem(
                path, f"The user metadata is not valid JSON ({exc}); fix or delete it before saving."
            )
        if not isinstance(loaded, dict):
            return Problem(path, "The user metadata is not a JSON object; fix or delete it before saving.")
        return loaded

    # ----------------------------------------------------------------------------------------------- hashes
    def hashes(self, entry: LoraEntry, compute: bool = True, persist: bool = True) -> Hashes | Problem | None:
        """Hashes of ``entry``'s file, computed lazily (one streamed pass) and never twice for an unchanged file.

        compute: False = only what is known without reading the file (embedded ``sshs_model_hash`` or a cached
            computation; A1111's ``--no-hashing``); None when nothing is known. Never waits for a computation.
        persist: write a new hash to the cache file now (bulk callers pass False and call ``save_cache()``).
        """
        current = self._known(entry)
        if isinstance(current, Problem):
            return current
        embedded = current.sshs_model_hash
        try:
            st = os.stat(current.path)
        except OSError as exc:
            return Problem(current.path, f"Cannot read this LoRA file ({exc.strerror or exc}).")
        known = self._hashes.known(current.path, [st.st_size, st.st_mtime_ns])
        if known is None and compute:
            checked = self.safe_path(current.path)
            if isinstance(checked, Problem):
                return checked
            computed = self._hashes.compute(current.path, checked, current.ext == ".safetensors", persist)
            if isinstance(computed, Problem):
                return computed
            known = computed
        return _hashes(embedded, known)

    def known_hashes(self, entry: LoraEntry) -> Hashes | None:
        """The hashes of ``entry`` known without touching the disk: embedded, or computed earlier for the file as
        the last refresh saw it (what card search shows, USERS C15); None when none is known yet."""
        snapshot = self._snapshot
        current = snapshot.by_path.get(entry.path)
        if current is None:
            return None
        key = snapshot.fingerprints.get(current.path)
        fp = key[0] if key and isinstance(key[0], list) else None
        known = self._hashes.known(current.path, fp) if fp is not None else None
        return _hashes(current.sshs_model_hash, known)

    def by_shorthash(self, shorthash: str, compute_missing: bool = False) -> list[LoraEntry]:
        """Entries whose addnet hash (embedded or computed), full sha256 or embedded ``modelspec.hash_sha256``
        starts with ``shorthash`` (>= 8 hex; the hash zoo of USERS H4).

        Only known hashes match unless ``compute_missing`` (then every file is hashed once). The empty-input hash
        matches nothing (USERS H6). The caller decides what to do with several matches.
        """
        wanted = shorthash.strip().lower()
        if (
            len(wanted) < 8
            or any(c not in "0123456789abcdef" for c in wanted)
            or _EMPTY_SHA256.startswith(wanted)
        ):
            return []
        matches = []
        before = self._counter.hash_reads
        for entry in self._snapshot.entries:
            spec = str(entry.metadata.get("modelspec.hash_sha256", "")).lower().removeprefix("0x")
            if spec and spec.startswith(wanted):
                matches.append(entry)
                continue
            hashes = self.hashes(entry, compute=compute_missing, persist=False)
            if not isinstance(hashes, Hashes):
                continue
            if any(
                v and v.startswith(wanted) for v in (hashes.addnet, hashes.computed_addnet, hashes.sha256)
            ):
                matches.append(entry)
        if self._counter.hash_reads != before:
            self.save_cache()
        return matches


def _hashes(embedded: str | None, known: tuple[str, str] | None) -> Hashes | None:
    """``Hashes`` from an embedded ``sshs_model_hash`` and a computed (addnet, sha256) pair, either maybe None."""
    if known is None:
        if embedded is None:
            return None
        return Hashes(addnet=embedded, sha256=None, shorthash=embedded[:12], source="sshs_model_hash")
    addnet, full = known
    if embedded is not None:
        return Hashes(embedded, full, embedded[:12], "sshs_model_hash", computed_addnet=addnet)
    return Hashes(addnet, full, addnet[:12], "computed", computed_addnet=addnet)
