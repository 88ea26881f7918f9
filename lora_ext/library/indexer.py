"""Builds library snapshots: walks the roots and re-reads only what changed, backed by the persistent cache.

An ``Indexer`` is not thread-safe by itself; ``LoraLibrary`` calls it under its refresh lock. What it produces,
a ``Snapshot``, is immutable and shared freely.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from lora_ext.errors import Problem
from lora_ext.library import arch as arch_rules
from lora_ext.library.cache import load_cache, save_cache
from lora_ext.library.entry import EMBEDDED_PREVIEW, LoraEntry, RefreshReport
from lora_ext.library.filedata import FileData, read_file_data
from lora_ext.library.firstseen import first_seen
from lora_ext.library.names import NameIndex
from lora_ext.library.natural import natural_key
from lora_ext.library.paths import safe_path
from lora_ext.library.reads import ReadCounter
from lora_ext.library.scan import FoundFile, walk_roots
from lora_ext.library.sidecars import SidecarData, find_preview, read_sidecars

#: ``ss_output_name`` values that are no alias (lower case): kohya writes "None" when trained without --output_name,
#: and the webui forbids that alias (A1111_CONTRACT §10.1), so such files go by their file name.
NO_ALIAS = ("none",)

#: Fingerprint of a file whose last read failed for a reason that may pass (permissions): never equal to a real one.
_RETRY = ("retry",)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One immutable state of the library: entries in natural order, the name index, and what each entry was
    built from (``fingerprints``: path -> (size/mtime, sidecar stats, preview, relpath, root, hidden))."""

    entries: tuple[LoraEntry, ...] = ()
    index: NameIndex = dataclasses.field(default_factory=lambda: NameIndex(()))
    by_path: dict[str, LoraEntry] = dataclasses.field(default_factory=dict)
    fingerprints: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)


class Indexer:
    """Walks ``roots`` and turns files into entries, reusing earlier work keyed by (size, mtime_ns).

    Three layers of reuse: the previous snapshot's entry (nothing about the file changed), parsed data held in
    memory, and the cache file's records (a new process). Sidecars have their own fingerprint, and each sidecar
    file is re-read only when its own (size, mtime_ns) changed.

    Each record also keeps the date the library first saw its file (``lora_ext.library.firstseen``); ``clock``
    gives "now" for it (seconds since the epoch, once per refresh).
    """

    def __init__(
        self,
        roots: list[str],
        cache_path: str | None,
        skip_hidden: bool,
        allow_external_links: bool,
        preview_extension: str | None,
        counter: ReadCounter,
        clock: Callable[[], float] = time.time,
    ):
        self.roots = roots
        self.cache_path = cache_path
        self.skip_hidden = skip_hidden
        self.allow_external_links = allow_external_links
        self.preview_extension = preview_extension
        self.counter = counter
        self.clock = clock
        self.records: dict[str, dict[str, Any]] | None = None  # the cache file's content once loaded
        self.encoded: dict[str, str] = {}  # path -> its record as JSON text; dropped when the record changes
        self._file_data: dict[str, tuple[list[int], FileData]] = {}
        self._sidecar_data: dict[str, tuple[list[list[Any]], SidecarData]] = {}
        self._sort_keys: dict[str, tuple] = {}
        self._texts: dict[str, tuple[tuple[int, int], str]] = {}  # sidecar path -> ((size, mtime_ns), text)
        self._stale: set[str] = (
            set()
        )  # LoRA paths whose sidecars we just wrote: re-read them whatever the stats
        # True while a refresh builds a new cache: the files it finds get their mtime as first-seen date
        self._bootstrap = False
        self._now = 0.0  # the time of the current refresh, seconds since the epoch

    # ----------------------------------------------------------------------------------------------- cache
    def save(self) -> Problem | None:
        """Write the cache file (only changed records are re-encoded)."""
        return save_cache(self.cache_path, self.records or {}, self.encoded)

    def cached_hashes(self, path: str, fp: list[int]) -> tuple[str, str] | None:
        """(addnet, sha256) stored for ``path`` at fingerprint ``fp``, or None. Safe without the refresh lock
        (single dict reads)."""
        record = (self.records or {}).get(path)
        hashes = record.get("hashes") if record is not None and record.get("fp") == fp else None
        if (
            isinstance(hashes, dict)
            and isinstance(hashes.get("addnet"), str)
            and isinstance(hashes.get("sha256"), str)
        ):
            return hashes["addnet"], hashes["sha256"]
        return None

    def store_hashes(self, path: str, fp: list[int], addnet: str, sha256: str) -> bool:
        """Remember hashes in the record of ``path`` when it still has fingerprint ``fp``; True when stored."""
        record = (self.records or {}).get(path)
        if record is None or record.get("fp") != fp:
            return False
        record["hashes"] = {"addnet": addnet, "sha256": sha256}
        self.encoded.pop(path, None)
        return True

    def mark_stale(self, lora_path: str, sidecar_path: str) -> None:
        """The sidecar ``sidecar_path`` of ``lora_path`` was just rewritten: the next refresh re-reads it even if
        its size and mtime look unchanged (file times are only as fine as the kernel's clock tick)."""
        self._stale.add(lora_path)
        self._texts.pop(sidecar_path, None)
        record = (self.records or {}).get(lora_path)
        if record is not None:
            record.pop("sfp", None)
            self.encoded.pop(lora_path, None)

    # ----------------------------------------------------------------------------------------------- refresh
    def refresh(self, old: Snapshot, report: RefreshReport) -> tuple[Snapshot, bool]:
        """A snapshot of the roots now (``old`` itself when nothing changed) and whether the cache needs saving."""
        dirty = False
        self._now = self.clock()
        if self.records is None:
            existed = self.cache_path is not None and os.path.exists(self.cache_path)
            self.records, problem = load_cache(self.cache_path)
            self._bootstrap = not existed or problem is not None
            if problem is not None:
                report.errors.append(problem)
                dirty = True
        found, problems = walk_roots(self.roots, self.skip_hidden, self.allow_external_links)
        report.errors.extend(problems)
        found = self._sorted_unique(found)
        dirty = self._adopt_moved(found) or dirty
        entries: list[LoraEntry] = []
        fingerprints: dict[str, tuple[Any, ...]] = {}
        for item in found:
            fp = [item.size, item.mtime_ns]
            sfp = [list(s) for s in item.sidecar_stats]
            preview = self._preview_path(item)
            key = (fp, sfp, preview, item.relpath, item.root, item.hidden)
            previous = old.by_path.get(item.path)
            if (
                previous is not None
                and old.fingerprints.get(item.path) == key
                and item.path not in self._stale
            ):
                entry = previous
            else:
                entry, cacheable, changed = self._entry_for(item, fp, sfp, preview)
                dirty = dirty or changed
                key = key if cacheable else _RETRY
                if previous is None:
                    report.added.append(item.path)
                elif not _failed_again(old.fingerprints.get(item.path), entry, previous):
                    report.changed.append(item.path)
            entries.append(entry)
            fingerprints[item.path] = key
            report.errors.extend(entry.problems)
        self._stale.clear()
        self._bootstrap = False
        seen = set(fingerprints)
        report.removed.extend(p for p in old.by_path if p not in seen)
        dirty = self._forget_missing(seen, found) or dirty
        same = len(entries) == len(old.entries) and all(
            a is b for a, b in zip(entries, old.entries, strict=True)
        )
        if same and not report.removed:
            report.duplicates.extend(old.index.duplicates)
            return old, dirty
        snapshot = Snapshot(
            entries=tuple(entries),
            index=NameIndex(entries),
            by_path={e.path: e for e in entries},
            fingerprints=fingerprints,
        )
        report.duplicates.extend(snapshot.index.duplicates)
        return snapshot, dirty

    def _adopt_moved(self, found: list[FoundFile]) -> bool:
        """Give a file found at a path the cache has no record of the record of a file gone from its path since the
        last refresh with the same (size, mtime_ns): a move or rename inside the roots, which keeps both. The file
        then keeps its first-seen date, its header data (no read) and its hashes (no re-hash). Only a one-to-one
        match is taken; two candidates on either side leave every file new. True when a record moved."""
        records = self.records
        if not records:
            return False
        arrivals: dict[tuple[int, int], list[str]] = {}
        for item in found:
            if item.path not in records:
                arrivals.setdefault((item.size, item.mtime_ns), []).append(item.path)
        if not arrivals:
            return False
        present = {item.path for item in found}
        departures: dict[tuple[int, int], list[str]] = {}
        for path, record in records.items():
            fp = record.get("fp")
            if path not in present and isinstance(fp, list) and len(fp) == 2:
                key = (fp[0], fp[1])
                if key in arrivals:
                    departures.setdefault(key, []).append(path)
        moved = False
        for key, old_paths in departures.items():
            if len(old_paths) == 1 and len(arrivals[key]) == 1:
                records[arrivals[key][0]] = records.pop(old_paths[0])
                self.encoded.pop(old_paths[0], None)
                moved = True
        return moved

    def _sorted_unique(self, found: list[FoundFile]) -> list[FoundFile]:
        """Root order, then natural path order; a file reached through two roots (nested roots) once."""
        root_order = {root: i for i, root in enumerate(self.roots)}
        sort_keys = self._sort_keys
        for item in found:
            if item.path not in sort_keys:
                sort_keys[item.path] = natural_key(item.relpath + item.ext)
        found.sort(key=lambda f: (root_order[f.root], sort_keys[f.path]))
        seen: set[str] = set()
        unique = []
        for item in found:
            if item.path not in seen:
                seen.add(item.path)
                unique.append(item)
        return unique

    def _entry_for(self, item: FoundFile, fp, sfp, preview) -> tuple[LoraEntry, bool, bool]:
        """(entry, whether its data may be cached, whether the cache changed)."""
        records = self.records if self.records is not None else {}
        data, data_changed = self._file_data_for(item, fp, records)
        sidecars, sidecars_changed = self._sidecars_for(item, sfp, records)
        record = records.get(item.path)
        if record is not None and (
            record.get("sfp") != sfp or sidecars_changed
        ):  # re-read sidecars are cached
            record["sfp"], record["sidecars"] = sfp, sidecars.to_dict()
            self.encoded.pop(item.path, None)
            sidecars_changed = True
        added = first_seen(record, item.mtime, self._now, self._bootstrap)
        entry = build_entry(item, data, sidecars, preview, added)
        return entry, data.cacheable, data_changed or sidecars_changed

    def _file_data_for(self, item: FoundFile, fp: list[int], records: dict[str, dict[str, Any]]):
        held = self._file_data.get(item.path)
        if held is not None and held[0] == fp:
            return held[1], False
        record = records.get(item.path)
        if record is not None and record.get("fp") == fp and "data" in record:
            try:
                data = FileData.from_dict(record["data"])
                self._file_data[item.path] = (fp, data)
                return data, False
            except (KeyError, TypeError, ValueError):
                pass
        if item.ext == ".safetensors":  # other containers are not opened (their header would need unpickling)
            self.counter.count(item.path)
        data = read_file_data(item.path, item.ext, item.size)
        self.encoded.pop(item.path, None)
        added = first_seen(record, item.mtime, self._now, self._bootstrap)  # a replaced file keeps its date
        if data.cacheable:
            fresh: dict[str, Any] = {"fp": fp, "data": data.to_dict(), "added": added}
            if record is not None and "sidecars" in record:  # sidecars have their own fingerprint; hashes not
                fresh["sfp"], fresh["sidecars"] = record.get("sfp"), record["sidecars"]
            records[item.path] = fresh
            self._file_data[item.path] = (fp, data)
        else:  # read again next time; only the first-seen date is kept
            records[item.path] = {"added": added}
            self._file_data.pop(item.path, None)
        return data, True

    def _sidecars_for(self, item: FoundFile, sfp: list[list[Any]], records: dict[str, dict[str, Any]]):
        stale = item.path in self._stale
        held = self._sidecar_data.get(item.path)
        if held is not None and held[0] == sfp and not stale:
            return held[1], False
        record = records.get(item.path)
        if record is not None and record.get("sfp") == sfp and "sidecars" in record and not stale:
            try:
                data = SidecarData.from_dict(record["sidecars"])
                self._sidecar_data[item.path] = (sfp, data)
                return data, False
            except (KeyError, TypeError, ValueError):
                pass
        folder = os.path.dirname(item.path)
        data = read_sidecars(folder, item.name, [s[0] for s in sfp], self._sidecar_reader(folder, sfp))
        self._sidecar_data[item.path] = (sfp, data)
        return data, True

    def _sidecar_reader(self, folder: str, sfp: list[list[Any]]):
        """A ``read_text`` that re-reads a sidecar only when its own (size, mtime_ns) changed since the last read."""
        stats = {os.path.join(folder, name): (size, mtime_ns) for name, size, mtime_ns in sfp}

        def read(path: str) -> str:
            stat = stats.get(path)
            held = self._texts.get(path)
            if held is not None and stat is not None and held[0] == stat:
                return held[1]
            text = self.counter.read_text(path)
            if stat is not None:
                self._texts[path] = (stat, text)
            return text

        return read

    def _preview_path(self, item: FoundFile) -> str | None:
        folder = os.path.dirname(item.path)

        def inside(name: str) -> bool:  # a preview that is a link out of the roots is never offered
            path = os.path.join(folder, name)
            if self.allow_external_links or not os.path.islink(path):
                return True
            return not isinstance(safe_path(path, self.roots), Problem)

        name = find_preview(item.name, item.siblings, self.preview_extension, inside)
        return os.path.join(folder, name) if name else None

    def _forget_missing(self, seen: set[str], found: list[FoundFile]) -> bool:
        """Drop memory and cache records of files that are gone; True when the cache changed."""
        records = self.records if self.records is not None else {}
        gone = [p for p in records if p not in seen]
        for path in gone:
            del records[path]
            self.encoded.pop(path, None)
        for table in (self._file_data, self._sidecar_data, self._sort_keys):
            for path in [p for p in table if p not in seen]:
                del table[path]
        live = {os.path.join(os.path.dirname(i.path), s[0]) for i in found for s in i.sidecar_stats}
        for path in [p for p in self._texts if p not in live]:
            del self._texts[path]
        return bool(gone)


def _failed_again(old_key: tuple[Any, ...] | None, entry: LoraEntry, previous: LoraEntry) -> bool:
    """True when a file whose last read failed (permissions) failed the same way again: nothing to redraw."""
    return old_key == _RETRY and entry == previous and entry.problems == previous.problems


def build_entry(
    item: FoundFile, data: FileData, sidecars: SidecarData, preview: str | None, added: float | None = None
) -> LoraEntry:
    """The entry for one found file from its header data, its sidecars and its preview path.

    added: when the library first saw the file, seconds since the epoch (default: its mtime).
    """
    user = sidecars.user_metadata
    civitai_arch = sidecars.civitai.arch if sidecars.civitai is not None else None
    arch, arch_source = arch_rules.combine(data.detection, user, civitai_arch)
    description = user.get("description")
    if not isinstance(description, str) or not description.strip():
        description = sidecars.text_description
    alias = data.metadata.get("ss_output_name")
    if not isinstance(alias, str) or alias.strip().lower() in NO_ALIAS:
        alias = None
    if preview is None and data.cover_count:
        preview = EMBEDDED_PREVIEW + "0"
    return LoraEntry(
        name=item.name,
        alias=alias.strip() if alias and alias.strip() else item.name,
        relpath=item.relpath,
        path=item.path,
        root=item.root,
        ext=item.ext,
        size=item.size,
        mtime=item.mtime,
        ctime=item.ctime,
        added=item.mtime if added is None else added,
        hidden=item.hidden,
        metadata=data.metadata,
        arch=arch,
        arch_source=arch_source,
        summary=data.summary,
        description=description,
        preview=preview,
        cover_count=data.cover_count,
        civitai=sidecars.civitai,
        user_metadata=user,
        problems=data.problems + sidecars.problems,
    )
