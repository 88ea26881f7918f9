"""Name index: which entry a tag name means.

Lookup order (USERS S4-S6, S9; documented in ``LoraLibrary.resolve``):

1. exact ``folder/name`` relpath (a root-level file's relpath is its bare name);
2. exact bare filename stem. When several files share it, a file outside dot-folders wins over a hidden one,
   then the shallowest, then the first in root order and natural path order; the lookup carries a warning
   naming the others and the ``folder/name`` form to use;
3. exact alias (``ss_output_name``). A bare filename always wins over a clashing alias (step 2 comes first), and an
   alias shared by several files resolves to nothing, with a message (S5);
4. ``ROOT/folder/name`` with ROOT the name of a library root folder (``LyCORIS/sub/x``): the only name of a file
   whose ``folder/name`` also exists in an earlier root;
5. the same four with a trailing LoRA extension removed (``x.safetensors`` -> ``x``);
6. the first three case-insensitively, with an info note;
7. otherwise "Lora not found: x (did you mean y?)", suggestions from difflib over names, aliases and relpaths.

Names containing a ``..`` segment, an absolute path or a drive letter are refused before any lookup.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence

from lora_ext.errors import Problem
from lora_ext.library.entry import LORA_EXTENSIONS, LoraEntry, Resolution

_DRIVE = re.compile(r"^[A-Za-z]:")


def normalize_name(name: str) -> str | Problem:
    """Tag name with ``\\`` turned into ``/`` and surrounding blanks removed, or a Problem for traversal attempts."""
    text = name.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    if not text:
        return Problem(name or "<empty>", "Empty Lora name. Write <lora:name:weight> with the file name.")
    if "\x00" in text or text.startswith("/") or _DRIVE.match(text) or ".." in text.split("/"):
        return Problem(
            name,
            "Refused Lora name: names are file names or folder/name paths inside the Lora folders, "
            "without '..' or absolute paths.",
        )
    return text


class NameIndex:
    """Immutable lookup tables over one list of entries (already in natural path order)."""

    def __init__(self, entries: Sequence[LoraEntry]):
        self.by_relpath: dict[str, LoraEntry] = {}
        self.by_name: dict[str, list[LoraEntry]] = {}
        self.by_alias: dict[str, list[LoraEntry]] = {}
        self.by_rootpath: dict[str, LoraEntry] = {}
        self.duplicates: list[str] = []
        relpath_clash: dict[str, list[LoraEntry]] = {}
        for entry in entries:
            if entry.relpath in self.by_relpath:
                relpath_clash.setdefault(entry.relpath, [self.by_relpath[entry.relpath]]).append(entry)
            else:
                self.by_relpath[entry.relpath] = entry
            self.by_rootpath.setdefault(root_qualified(entry), entry)
            self.by_name.setdefault(entry.name, []).append(entry)
            if entry.alias and entry.alias != entry.name:
                self.by_alias.setdefault(entry.alias, []).append(entry)
        order = {id(entry): i for i, entry in enumerate(entries)}
        for same in self.by_name.values():
            if len(same) > 1:
                same.sort(key=lambda e: (e.hidden, e.relpath.count("/"), order[id(e)]))
        self.lower_relpath = _lower_map(self.by_relpath.items(), single=True)
        self.lower_name = _lower_map(self.by_name.items())
        self.lower_alias = _lower_map(self.by_alias.items())
        self._report(relpath_clash)
        self._candidates: dict[str, str] | None = None

    def _report(self, relpath_clash: dict[str, list[LoraEntry]]) -> None:
        for relpath, same in relpath_clash.items():
            paths = ", ".join(e.path for e in same)
            others = ", ".join(f"<lora:{root_qualified(e)}:…>" for e in same[1:])
            self.duplicates.append(
                f"'{relpath}' exists in several Lora folders ({paths}); '{relpath}' uses {same[0].path}. "
                f"Write {others} for the other{'s' if len(same) > 2 else ''}."
            )
        for name, same in self.by_name.items():
            if len(same) > 1:
                others = ", ".join(f"<lora:{e.relpath}:…>" for e in same[1:])
                self.duplicates.append(
                    f"'{name}' names {len(same)} files; <lora:{name}:…> uses {same[0].relpath}{same[0].ext}. "
                    f"Write {others} for the other{'s' if len(same) > 2 else ''}."
                )
        for alias, same in self.by_alias.items():
            if alias in self.by_name:
                shadowed = ", ".join(e.relpath for e in same)
                self.duplicates.append(
                    f"Alias '{alias}' of {shadowed} is also a file name; <lora:{alias}:…> uses the file "
                    f"{self.by_name[alias][0].relpath}."
                )
            elif len(same) > 1:
                users = ", ".join(e.relpath for e in same)
                self.duplicates.append(
                    f"Alias '{alias}' is shared by {users}; it resolves to none of them. Use the file names."
                )

    def lookup(self, name: str) -> Resolution:
        """Resolve a tag name (see the module docstring for the order)."""
        text = normalize_name(name)
        if isinstance(text, Problem):
            return Resolution(None, (text,))
        found = self._exact(text)
        if found is None:
            stem = _strip_extension(text)
            if stem != text:
                found = self._exact(stem)
        if found is None:
            found = self._case_insensitive(_strip_extension(text))
        if found is not None:
            return found
        return Resolution(None, (self.not_found(name),))

    def _exact(self, text: str) -> Resolution | None:
        entry = self.by_relpath.get(text)
        if entry is not None:
            return Resolution(entry, (), "relpath")
        same = self.by_name.get(text)
        if same:
            return Resolution(same[0], _duplicate_warning(text, same), "name")
        same = self.by_alias.get(text)
        if same:
            return _alias_resolution(text, same, "alias")
        entry = self.by_rootpath.get(text)
        if entry is not None:
            return Resolution(entry, (), "root")
        return None

    def _case_insensitive(self, text: str) -> Resolution | None:
        key = text.lower()
        for table, via in (
            (self.lower_relpath, "relpath"),
            (self.lower_name, "name"),
            (self.lower_alias, "alias"),
        ):
            same = table.get(key)
            if not same:
                continue
            if via == "alias":
                resolution = _alias_resolution(text, same, "case-insensitive alias")
                if resolution.entry is None:
                    return resolution
            else:
                resolution = Resolution(same[0], _duplicate_warning(text, same), f"case-insensitive {via}")
            entry = resolution.entry
            assert entry is not None
            shown = entry.relpath if via == "relpath" else (entry.name if via == "name" else entry.alias)
            note = Problem(
                text,
                f"No Lora named exactly '{text}'; using '{shown}' ({entry.relpath}{entry.ext}), which differs only "
                "in letter case.",
                "info",
            )
            return Resolution(entry, (*resolution.problems, note), resolution.via)
        return None

    def suggestions(self, name: str, limit: int = 3) -> list[str]:
        """Up to ``limit`` known names close to ``name`` (bare names, aliases and relpaths)."""
        if self._candidates is None:
            candidates: dict[str, str] = {}
            for table in (self.by_name, self.by_alias, self.by_relpath):
                for key in table:
                    candidates.setdefault(key.lower(), key)
            self._candidates = candidates
        key = name.strip().replace("\\", "/").lower()
        close = difflib.get_close_matches(key, list(self._candidates), n=limit, cutoff=0.6)
        if not close:  # a folder/name typo: compare the last part with bare names
            last = key.rpartition("/")[2]
            close = difflib.get_close_matches(
                last, [k for k in self._candidates if "/" not in k], n=limit, cutoff=0.6
            )
        return [self._candidates[k] for k in close]

    def not_found(self, name: str) -> Problem:
        """The "Lora not found" problem for ``name``, with suggestions when there are any."""
        close = self.suggestions(name)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        return Problem(
            name,
            f"Lora not found: {name}{hint}. Check the spelling, or press refresh on the Lora page after adding files.",
            "error",
            tuple(close),
        )


def root_qualified(entry: LoraEntry) -> str:
    """``ROOT/folder/name``: the entry's relpath behind the name of its root folder (``LyCORIS/sub/x``)."""
    return f"{os.path.basename(os.path.normpath(entry.root))}/{entry.relpath}"


def _lower_map(items, single: bool = False) -> dict[str, list[LoraEntry]]:
    table: dict[str, list[LoraEntry]] = {}
    for key, value in items:
        table.setdefault(key.lower(), []).extend([value] if single else value)
    return table


def _strip_extension(text: str) -> str:
    lower = text.lower()
    for ext in LORA_EXTENSIONS:
        if lower.endswith(ext):
            return text[: -len(ext)]
    return text


def _duplicate_warning(text: str, same: list[LoraEntry]) -> tuple[Problem, ...]:
    if len(same) < 2:
        return ()
    others = ", ".join(f"'{e.relpath}'" for e in same[1:])
    return (
        Problem(
            text,
            f"'{text}' matches {len(same)} files; using {same[0].relpath}{same[0].ext}. "
            f"Write the folder/name form ({others}) to pick another.",
            "warning",
            tuple(e.path for e in same),
        ),
    )


def _alias_resolution(text: str, same: list[LoraEntry], via: str) -> Resolution:
    if len(same) == 1:
        return Resolution(same[0], (), via)
    users = ", ".join(f"'{e.relpath}'" for e in same)
    return Resolution(
        None,
        (
            Problem(
                text,
                f"Alias '{text}' is shared by {len(same)} files ({users}), so it picks none of them. "
                "Use the file name or folder/name instead.",
                "error",
                tuple(e.path for e in same),
            ),
        ),
    )
