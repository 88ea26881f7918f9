"""``LoraLibrary``: the scanned, cached, thread-safe index of LoRA files under one or more roots.

Readers (``entries``, ``resolve``, ``lookup``, ...) use the current immutable snapshot; ``refresh`` builds a new one
off to the side and swaps it in under a lock, so a generation resolving names during a refresh sees either the old
or the new index, never a half-built one. Refreshes and cache writes are serialized by a second lock.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import threading
from collections.abc import Sequence
from typing import Any, Literal

from lora_ext.errors import Problem
from lora_ext.library import arch as arch_rules
from lora_ext.library.cache import DEFAULT_CACHE_NAME, load_cache, save_cache
from lora_ext.library.entry import EMBEDDED_PREVIEW, Hashes, LoraEntry, RefreshReport, Resolution
from lora_ext.library.filedata import COVER_KEY, FileData, read_file_data
from lora_ext.library.hashing import hash_file
from lora_ext.library.header import read_header
from lora_ext.library.names import NameIndex
from lora_ext.library.natural import natural_key
from lora_ext.library.paths import safe_path
from lora_ext.library.scan import FoundFile, walk_roots
from lora_ext.library.sidecars import SidecarData, find_preview, read_sidecars, write_json_atomic

HiddenMode = Literal["when searched", "always", "never"]

#: sha256 of empty input; a shorthash equal to it identifies nothing (USERS H6).
_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    entries: tuple[LoraEntry, ...] = ()
    index: NameIndex = dataclasses.field(default_factory=lambda: NameIndex(()))
    by_path: dict[str, LoraEntry] = dataclasses.field(default_factory=dict)
    fingerprints: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)


class LoraLibrary:
    """Index of LoRA files under ``roots`` (A1111: ``models/Lora`` and ``models/LyCORIS``).

    roots: folders scanned recursively, in priority order (a ``folder/name`` present in two roots means the first).
    cache_path: the persistent cache file; None = ``<first root>/.lora_ext_cache.json``; False = no cache file.
    hidden: the webui's ``extra_networks_hidden_models`` (any case): "always" / "when searched" list files under
        dot-folders with ``hidden=True``; "never" skips those folders entirely.
    allow_external_links: follow links whose target lies outside every root (refused by default).
    preview_extension: the webui's ``samples_format``, tried after the standard preview extensions.

    Nothing is scanned until ``refresh()`` is called.
    """

    def __init__(
        self,
        roots: Sequence[str | os.PathLike[str]],
        cache_path: str | os.PathLike[str] | None | Literal[False] = None,
        hidden: str = "when searched",
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
        self._snapshot = _Snapshot()
        self._swap_lock = threading.Lock()
        self._refresh_lock = threading.RLock()
        self._hash_lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] | None = None  # cache records, guarded by _refresh_lock
        self._encoded: dict[
            str, str
        ] = {}  # path -> its record as JSON text; dropped whenever the record changes
        self._file_data: dict[str, tuple[list[int], FileData]] = {}
        self._sidecar_data: dict[str, tuple[list[list[Any]], SidecarData]] = {}
        self._hashes: dict[str, tuple[list[int], str, str]] = {}
        self._sort_keys: dict[str, tuple] = {}  # path -> natural sort key (guarded by _refresh_lock)
        self._texts: dict[str, tuple[tuple[int, int], str]] = {}  # sidecar path -> ((size, mtime_ns), text)
        self._counter_lock = threading.Lock()
        self._reads = 0
        self._hash_reads = 0
        self._read_log: list[str] | None = None
        self.last_report = RefreshReport()

    # ----------------------------------------------------------------------------------------------- counters
    @property
    def reads(self) -> int:
        """Files opened and read so far (headers, sidecars, covers; not hashing)."""
        return self._reads

    @property
    def hash_reads(self) -> int:
        """Files hashed so far (each a full streamed read)."""
        return self._hash_reads

    def _count(self, path: str) -> None:
        with self._counter_lock:
            self._reads += 1
            if self._read_log is not None:
                self._read_log.append(path)

    def _read_text(self, path: str) -> str:
        self._count(path)
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read()

    def _sidecar_reader(self, folder: str, sfp: list[list[Any]]):
        """A ``read_text`` that re-reads a sidecar only when its own (size, mtime_ns) changed since the last read."""
        stats = {os.path.join(folder, name): (size, mtime_ns) for name, size, mtime_ns in sfp}

        def read(path: str) -> str:
            stat = stats.get(path)
            held = self._texts.get(path)
            if held is not None and stat is not None and held[0] == stat:
                return held[1]
            text = self._read_text(path)
            if stat is not None:
                self._texts[path] = (stat, text)
            return text

        return read

    # ----------------------------------------------------------------------------------------------- refresh
    def refresh(self) -> RefreshReport:
        """Rescan the roots; re-read only files whose (size, mtime) or sidecars changed; swap in the new index.

        Returns what changed, per-file problems (the other files list fine), duplicate-name lines and the number
        of file reads this refresh made.
        """
        with self._refresh_lock:
            report = RefreshReport()
            self._read_log = report.read_paths
            try:
                dirty = self._refresh_locked(report)
            finally:
                self._read_log = None
            report.reads = len(report.read_paths)
            if dirty:
                problem = save_cache(self.cache_path, self._records or {}, self._encoded)
                if problem is not None:
                    report.errors.append(problem)
            self.last_report = report
            return report

    def _refresh_locked(self, report: RefreshReport) -> bool:
        dirty = False
        if self._records is None:
            self._records, problem = load_cache(self.cache_path)
            if problem is not None:
                report.errors.append(problem)
                dirty = True
        records = self._records
        found, problems = walk_roots(self.roots, self.hidden == "never", self.allow_external_links)
        report.errors.extend(problems)
        root_order = {root: i for i, root in enumerate(self.roots)}
        sort_keys = self._sort_keys
        for item in found:
            if item.path not in sort_keys:
                sort_keys[item.path] = natural_key(item.relpath + item.ext)
        found.sort(key=lambda f: (root_order[f.root], sort_keys[f.path]))
        old = self._snapshot
        entries: list[LoraEntry] = []
        fingerprints: dict[str, tuple[Any, ...]] = {}
        seen: set[str] = set()
        for item in found:
            if item.path in seen:  # the same file reached through two roots (nested roots)
                continue
            seen.add(item.path)
            fp = [item.size, item.mtime_ns]
            sfp = [list(s) for s in item.sidecar_stats]
            preview = self._preview_name(item)
            key = (fp, sfp, preview, item.relpath, item.root, item.hidden)
            previous = old.by_path.get(item.path)
            if previous is not None and old.fingerprints.get(item.path) == key:
                entries.append(previous)
                fingerprints[item.path] = key
                if previous.problems:
                    report.errors.extend(previous.problems)
                continue
            data, data_dirty = self._file_data_for(item, fp, records)
            sidecars, sidecar_dirty = self._sidecars_for(item, sfp, records)
            dirty = dirty or data_dirty or sidecar_dirty
            record = records.get(item.path)
            if record is not None and record.get("sfp") != sfp:  # a re-read file keeps its sidecars cached
                record["sfp"] = sfp
                record["sidecars"] = sidecars.to_dict()
                self._encoded.pop(item.path, None)
                dirty = True
            entry = self._build_entry(item, data, sidecars, preview)
            entries.append(entry)
            fingerprints[item.path] = key if data.cacheable else ("retry",)  # e.g. permissions: read again
            report.errors.extend(entry.problems)
            (report.changed if previous is not None else report.added).append(item.path)
        report.removed.extend(p for p in old.by_path if p not in seen)
        for path in [p for p in records if p not in seen]:
            del records[path]
            self._encoded.pop(path, None)
            dirty = True
        for table in (self._file_data, self._sidecar_data, self._sort_keys):
            for path in [p for p in table if p not in seen]:
                del table[path]
        live_sidecars = {
            os.path.join(os.path.dirname(item.path), stat[0]) for item in found for stat in item.sidecar_stats
        }
        for path in [p for p in self._texts if p not in live_sidecars]:
            del self._texts[path]
        unchanged = not (report.added or report.changed or report.removed) and len(entries) == len(
            old.entries
        )
        if unchanged and all(a is b for a, b in zip(entries, old.entries, strict=True)):
            report.duplicates.extend(old.index.duplicates)
            return dirty  # same entries in the same order: keep the index
        snapshot = _Snapshot(
            entries=tuple(entries),
            index=NameIndex(entries),
            by_path={e.path: e for e in entries},
            fingerprints=fingerprints,
        )
        with self._swap_lock:
            self._snapshot = snapshot
        report.duplicates.extend(snapshot.index.duplicates)
        return dirty

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
            self._count(item.path)
        data = read_file_data(item.path, item.ext, item.size)
        if data.cacheable:
            fresh = {"fp": fp, "data": data.to_dict()}
            if record is not None and "sidecars" in record:  # sidecars have their own fingerprint, hashes not
                fresh["sfp"], fresh["sidecars"] = record.get("sfp"), record["sidecars"]
            records[item.path] = fresh
            self._encoded.pop(item.path, None)
            self._file_data[item.path] = (fp, data)
        else:
            records.pop(item.path, None)
            self._encoded.pop(item.path, None)
            self._file_data.pop(item.path, None)
        return data, True

    def _sidecars_for(self, item: FoundFile, sfp: list[list[Any]], records: dict[str, dict[str, Any]]):
        held = self._sidecar_data.get(item.path)
        if held is not None and held[0] == sfp:
            return held[1], False
        record = records.get(item.path)
        if record is not None and record.get("sfp") == sfp and "sidecars" in record:
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

    def _preview_name(self, item: FoundFile) -> str | None:
        folder = os.path.dirname(item.path)

        def inside(name: str) -> bool:  # a preview that is a link out of the roots is never offered
            path = os.path.join(folder, name)
            if self.allow_external_links or not os.path.islink(path):
                return True
            return not isinstance(self.safe_path(path), Problem)

        name = find_preview(item.name, item.siblings, self.preview_extension, inside)
        return os.path.join(folder, name) if name else None

    def _build_entry(
        self, item: FoundFile, data: FileData, sidecars: SidecarData, preview: str | None
    ) -> LoraEntry:
        user = sidecars.user_metadata
        civitai_arch = sidecars.civitai.arch if sidecars.civitai is not None else None
        arch, arch_source = arch_rules.combine(data.detection, user, civitai_arch)
        description = user.get("description")
        if not isinstance(description, str) or not description.strip():
            description = sidecars.text_description
        alias = data.metadata.get("ss_output_name")
        if preview is None and data.cover_count:
            preview = EMBEDDED_PREVIEW + "0"
        return LoraEntry(
            name=item.name,
            alias=alias.strip() if isinstance(alias, str) and alias.strip() else item.name,
            relpath=item.relpath,
            path=item.path,
            root=item.root,
            ext=item.ext,
            size=item.size,
            mtime=item.mtime,
            ctime=item.ctime,
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

        Order: exact ``folder/name`` relpath -> exact filename stem (duplicates: shallowest, then first in root and
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
        else its ``folder/name`` (A1111's "refer to Lora by" setting, USERS S4-S6)."""
        index = self._snapshot.index
        candidates = [entry.alias, entry.name] if prefer == "alias" else [entry.name]
        for candidate in candidates:
            found = index.lookup(candidate)
            if found.entry is not None and found.entry.path == entry.path and found.via in ("name", "alias"):
                return candidate
        return entry.relpath

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
        self._count(current.path)
        header = read_header(checked)
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
        with self._refresh_lock:
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
            text = self._read_text(path)
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
            computation; A1111's ``--no-hashing``); None when nothing is known.
        persist: write a new hash to the cache file now (bulk callers pass False and call ``save_cache()``).
        """
        current = self._known(entry)
        if isinstance(current, Problem):
            return current
        embedded = current.sshs_model_hash
        with self._hash_lock:
            try:
                st = os.stat(current.path)
            except OSError as exc:
                return Problem(current.path, f"Cannot read this LoRA file ({exc.strerror or exc}).")
            fp = [st.st_size, st.st_mtime_ns]
            known = self._known_hashes(current.path, fp)
            if known is None and compute:
                checked = self.safe_path(current.path)
                if isinstance(checked, Problem):
                    return checked
                try:
                    addnet, full = hash_file(checked, current.ext == ".safetensors")
                except OSError as exc:
                    return Problem(current.path, f"Cannot hash this LoRA file ({exc.strerror or exc}).")
                with self._counter_lock:
                    self._hash_reads += 1
                known = (addnet, full)
                self._hashes[current.path] = (fp, addnet, full)
                with self._refresh_lock:
                    record = (self._records or {}).get(current.path)
                    if record is not None and record.get("fp") == fp:
                        record["hashes"] = {"addnet": addnet, "sha256": full}
                        self._encoded.pop(current.path, None)
                        if persist:
                            save_cache(self.cache_path, self._records or {}, self._encoded)
        if known is None:
            if embedded is None:
                return None
            return Hashes(addnet=embedded, sha256=None, shorthash=embedded[:12], source="sshs_model_hash")
        addnet, full = known
        if embedded is not None:
            return Hashes(embedded, full, embedded[:12], "sshs_model_hash", computed_addnet=addnet)
        return Hashes(addnet, full, addnet[:12], "computed", computed_addnet=addnet)

    def _known_hashes(self, path: str, fp: list[int]) -> tuple[str, str] | None:
        held = self._hashes.get(path)
        if held is not None and held[0] == fp:
            return held[1], held[2]
        # no refresh lock: a page build must not wait for a running refresh; dict reads are atomic
        record = (self._records or {}).get(path)
        hashes = record.get("hashes") if record is not None and record.get("fp") == fp else None
        if isinstance(hashes, dict) and "addnet" in hashes and "sha256" in hashes:
            self._hashes[path] = (fp, hashes["addnet"], hashes["sha256"])
            return hashes["addnet"], hashes["sha256"]
        return None

    def by_shorthash(self, shorthash: str, compute_missing: bool = False) -> list[LoraEntry]:
        """Entries whose addnet hash (embedded or computed) or full sha256 starts with ``shorthash`` (>= 8 hex).

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
        before = self._hash_reads
        for entry in self._snapshot.entries:
            hashes = self.hashes(entry, compute=compute_missing, persist=False)
            if not isinstance(hashes, Hashes):
                continue
            values = (hashes.addnet, hashes.computed_addnet, hashes.sha256)
            if any(v and v.startswith(wanted) for v in values):
                matches.append(entry)
        if self._hash_reads != before:
            self.save_cache()
        return matches

    def save_cache(self) -> Problem | None:
        """Write the cache file now (refresh and single hash computations do this themselves)."""
        with self._refresh_lock:
            return save_cache(self.cache_path, self._records or {}, self._encoded)
