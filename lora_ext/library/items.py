"""Page items: one plain dict per LoRA with everything a card page needs (no HTML, no webui types)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from lora_ext.library.entry import EMBEDDED_PREVIEW, Hashes, LoraEntry
from lora_ext.library.search_terms import hash_terms

if TYPE_CHECKING:
    from lora_ext.library.library import LoraLibrary


def page_item(
    entry: LoraEntry,
    index: int,
    tag_name: str,
    search_only: bool = False,
    hashes: Hashes | None = None,
) -> dict[str, Any]:
    """Card data for one entry; ``hashes`` (when known) are searchable (USERS C15).

    Keys: ``key`` (unique: root-qualified path without extension), ``name`` (file stem), ``alias``, ``tag_name`` (what
    a click inserts; resolves back to this file), ``relpath``, ``filename`` (absolute path), ``folder``, ``arch``,
    ``arch_source``, ``preview`` (absolute image path or None), ``preview_embedded`` (an ``ssmd_cover_images`` cover
    is the preview), ``description``, ``activation_text``, ``negative_text``, ``preferred_weight`` (None = use the
    default multiplier), ``hidden``, ``search_only``, ``shorthash`` (embedded ``sshs_model_hash`` only, else None),
    ``sort_keys`` (``default`` = index in natural path order, ``name``, ``path``, ``date_created``,
    ``date_modified``, ``date_added`` (first seen by the library) in whole seconds since the epoch, not swapped;
    ``date_published`` = Civitai publish date in whole seconds, None without one), ``search_terms`` (list) and ``search_text`` (lower-case, one
    string, for substring search), ``problems`` (messages).
    """
    embedded = entry.preview is not None and entry.preview.startswith(EMBEDDED_PREVIEW)
    civitai_words = list(entry.civitai.trained_words) if entry.civitai is not None else []
    shorthash = entry.sshs_model_hash[:12] if entry.sshs_model_hash else None
    published = entry.civitai.published if entry.civitai is not None else None
    terms = [entry.relpath + entry.ext, entry.alias, entry.description, entry.activation_text, *civitai_words]
    terms = [t for t in terms if t] + [h for h in hash_terms(entry, hashes) if h not in terms]
    return {
        "key": f"{entry.root}/{entry.relpath}",
        "name": entry.name,
        "alias": entry.alias,
        "tag_name": tag_name,
        "relpath": entry.relpath,
        "filename": entry.path,
        "folder": entry.folder,
        "arch": entry.arch,
        "arch_source": entry.arch_source,
        "preview": None if embedded else entry.preview,
        "preview_embedded": embedded,
        "description": entry.description,
        "activation_text": entry.activation_text,
        "negative_text": entry.negative_text,
        "preferred_weight": entry.preferred_weight,
        "hidden": entry.hidden,
        "search_only": search_only,
        "shorthash": shorthash,
        "sort_keys": {
            "default": index,
            "name": entry.name.lower(),
            "path": entry.relpath.lower(),
            "date_created": int(entry.ctime),
            "date_modified": int(entry.mtime),
            "date_added": int(entry.added),
            "date_published": int(published) if published is not None else None,
        },
        "search_terms": terms,
        "search_text": "\n".join(terms).lower(),
        "problems": [p.message for p in entry.problems],
    }


def shown_entries(entries: Iterable[LoraEntry], mode: str) -> list[tuple[LoraEntry, bool]]:
    """(entry, search_only) for the entries a card page shows, in the given order, under the library's ``hidden``
    mode (the webui's "Hidden extra networks") for entries under dot-folders: "always" shows them like the rest,
    "when searched" marks them search-only, "never" leaves them out."""
    return [(e, e.hidden and mode == "when searched") for e in entries if not (e.hidden and mode == "never")]


def page_items(library: LoraLibrary, prefer: Literal["alias", "filename"] = "alias") -> list[dict[str, Any]]:
    """``page_item`` for the entries a page shows (``shown_entries``), in natural path order
    (``sort_keys["default"]`` counts them). Hashes the library already knows are searchable.
    """
    return [
        page_item(entry, i, library.tag_name(entry, prefer), search_only, library.known_hashes(entry))
        for i, (entry, search_only) in enumerate(shown_entries(library.entries(), library.hidden))
    ]
