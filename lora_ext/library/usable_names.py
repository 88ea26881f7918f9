"""The name a card inserts: one that a tag can carry and that resolves back to the card's own file.

Both card pages use it, so a click never inserts a name that means another file (a shadowed ``folder/name`` in a
second root) or no file at all (``style=v2`` reads as an option, not a name).
"""

from __future__ import annotations

from typing import Any

from lora_ext.library.entry import LoraEntry
from lora_ext.syntax import tag_name_problem

#: What a card says whose names cannot be written in a tag (see ``lora_ext.syntax.tag_name_problem``).
UNWRITABLE_HINT = (
    'A <lora:…> tag cannot hold this file name (":", ">" or one "="); rename the file to use it.'
)
#: What a shadowed card says (see ``usable_tag_name``).
SHADOWED_HINT = "Another Lora folder has a file with the same folder and name, and it wins. Rename one of them to use this one."


def usable_tag_name(library: Any, entry: LoraEntry, preferred: str) -> str | None:
    """``library.tag_name(entry, preferred)`` when that name resolves back to this very file and a tag can carry
    it; else the other kind of name (alias or file name) when that one does; else None (the file is shadowed:
    another root holds the same ``folder/name`` and no name reaches it; or no name of it fits in a tag, such as
    ``style=v2``, which parsers read as an option)."""
    for prefer in ("filename", "alias") if preferred == "filename" else ("alias", "filename"):
        name = library.tag_name(entry, prefer)
        if tag_name_problem(name) is not None:
            continue
        if name != entry.relpath:
            return name  # the library checked alias and file name against its resolver already
        if getattr(library.resolve(name), "path", None) == entry.path:
            return name
    return None


def unusable_hint(entry: LoraEntry) -> str:
    """Why no name reaches ``entry`` (when ``usable_tag_name`` gave None), and what to do."""
    return UNWRITABLE_HINT if tag_name_problem(entry.name) is not None else SHADOWED_HINT
