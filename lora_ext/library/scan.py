"""Walk the library roots: LoRA files, their sibling file names, and per-file problems.

Only ``stat`` calls happen here; no file content is read. Symlinked folders are followed once (a folder reached
twice through links is skipped, so loops end), and links whose target lies outside every root are refused unless
the library allows external links.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lora_ext.errors import Problem
from lora_ext.library.entry import LORA_EXTENSIONS
from lora_ext.library.paths import is_within


@dataclass(slots=True)  # not frozen: thousands are made per refresh and frozen init is several times slower
class FoundFile:
    """One LoRA file seen by the walk (treated as read-only).

    path: absolute path under ``root`` (links not resolved). relpath: POSIX path below the root, no extension.
    size: bytes. mtime_ns: modification time in ns. mtime, ctime: seconds (ctime = birth time where available).
    siblings: every file name in the same folder (for sidecar and preview lookup without more syscalls).
    sidecar_stats: (file name, size, mtime_ns) of the readable sidecars present (json, txt, civitai.info).
    """

    path: str
    root: str
    relpath: str
    name: str
    ext: str
    size: int
    mtime_ns: int
    mtime: float
    ctime: float
    hidden: bool
    siblings: frozenset[str]
    sidecar_stats: tuple[tuple[str, int, int], ...]


#: Sidecar suffixes whose content the library reads (appended to the stem).
SIDECAR_SUFFIXES: tuple[str, ...] = (".json", ".txt", ".description.txt", ".civitai.info")


_EXTENSIONS = frozenset(LORA_EXTENSIONS)


def split_extension(filename: str) -> tuple[str, str] | None:
    """(stem, lower-case extension) when ``filename`` has a LoRA extension, else None. Inner dots stay in the stem."""
    dot = filename.rfind(".")
    if dot <= 0:
        return None
    ext = filename[dot:].lower()
    return (filename[:dot], ext) if ext in _EXTENSIONS else None


def walk_roots(
    roots: list[str], skip_hidden: bool, allow_external_links: bool
) -> tuple[list[FoundFile], list[Problem]]:
    """All LoRA files under ``roots`` (in root order, natural order not applied) and the problems met."""
    walker = _Walker(roots, skip_hidden, allow_external_links)
    for root in roots:
        if os.path.isdir(root):
            walker.walk(root, [(root, "", False)])
        else:
            walker.problems.append(
                Problem(
                    root,
                    "This Lora folder does not exist; create it or fix the path in the settings.",
                    "info",
                )
            )
    while walker.links:  # linked folders last, across all roots
        root, folder, rel, hidden = walker.links.pop(0)
        walker.walk(root, [(folder, rel, hidden)])
    return walker.found, walker.problems


class _Walker:
    """One walk over the roots. Real folders of every root are scanned before linked ones, so a folder reachable
    both ways is listed under its real path; each folder (by real path) is scanned once, which ends link loops."""

    def __init__(self, roots: list[str], skip_hidden: bool, allow_external: bool):
        self.real_roots = [os.path.realpath(r) for r in roots]
        self.skip_hidden = skip_hidden
        self.allow_external = allow_external
        self.found: list[FoundFile] = []
        self.problems: list[Problem] = []
        self.visited: set[str] = set()
        self.links: list[tuple[str, str, str, bool]] = []  # (root, folder, relpath, hidden)

    def walk(self, root: str, stack: list[tuple[str, str, bool]]) -> None:
        while stack:
            folder, rel, hidden = stack.pop()
            real = os.path.realpath(folder)
            if real in self.visited:
                continue
            self.visited.add(real)
            self._scan_folder(root, folder, rel, hidden, stack)

    def _scan_folder(self, root, folder, rel, hidden, stack) -> None:
        try:
            with os.scandir(folder) as iterator:
                items = sorted(iterator, key=lambda item: item.name, reverse=True)  # popped in name order
        except OSError as exc:
            self.problems.append(
                Problem(folder, f"Cannot list this folder ({exc.strerror or exc}); its LoRAs are skipped.")
            )
            return
        names = frozenset(item.name for item in items)
        for item in items:
            dot = item.name.startswith(".")
            if dot and self.skip_hidden:
                continue
            child_rel = f"{rel}/{item.name}" if rel else item.name
            try:
                is_dir = item.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not item.is_symlink():
                    stack.append((item.path, child_rel, hidden or dot))
                elif self.allow_external or _inside(item.path, self.real_roots):
                    self.links.append((root, item.path, child_rel, hidden or dot))
                else:
                    self.problems.append(_outside(item.path))
                continue
            parts = split_extension(item.name)
            if parts is not None:
                self._add_file(root, folder, rel, hidden or dot, item, parts, names)

    def _add_file(self, root, folder, rel, hidden, item, parts, names) -> None:
        stem, ext = parts
        try:
            st = item.stat()
        except OSError as exc:
            if item.is_symlink():
                message = "Broken link: its target does not exist. Fix or remove the link."
            else:
                message = f"Cannot read this file ({exc.strerror or exc})."
            self.problems.append(Problem(item.path, message))
            return
        if not item.is_file():
            return
        if item.is_symlink() and not self.allow_external and not _inside(item.path, self.real_roots):
            self.problems.append(_outside(item.path))
            return
        sidecars = []
        for suffix in SIDECAR_SUFFIXES:
            sidecar = stem + suffix
            if sidecar in names:
                try:
                    sst = os.stat(os.path.join(folder, sidecar))
                    sidecars.append((sidecar, sst.st_size, sst.st_mtime_ns))
                except OSError:
                    sidecars.append((sidecar, -1, -1))
        created = getattr(st, "st_birthtime", None)
        self.found.append(
            FoundFile(
                path=item.path,  # roots are absolute, so this is too
                root=root,
                relpath=(f"{rel}/{stem}" if rel else stem),
                name=stem,
                ext=ext,
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                mtime=st.st_mtime,
                ctime=float(created if created is not None else st.st_ctime),
                hidden=hidden,
                siblings=names,
                sidecar_stats=tuple(sidecars),
            )
        )


def _inside(path: str, real_roots: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(is_within(real, r) for r in real_roots)


def _outside(path: str) -> Problem:
    return Problem(
        path,
        "This link points outside the Lora folders and is ignored. Move its target into a Lora folder, or add the "
        "target folder as a library root.",
        "warning",
    )
