"""Card records for the LoRA tab: a pure function from library entries to JSON-ready dicts.

The browser (javascript/lora_ext.js) receives all records at once and filters, sorts and pages them itself, so
search stays client-side and only one page of cards is in the DOM. Each record carries its card HTML, built by
joining strings with every user-provided text HTML-escaped (USERS P9).
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lora_ext.library.entry import LoraEntry
from lora_ext.library.items import shown_entries
from lora_ext.library.search_terms import dataset_tags, hash_terms
from lora_ext.library.usable_names import unusable_hint, usable_tag_name
from lora_ext.ui.tagfilter import card_tags, listed_tags

#: Architectures a checkpoint can be; a card of another known architecture is marked as a mismatch (USERS C18).
LOADABLE_ARCHS = ("SD1", "SD2", "SDXL")
#: Dataset tags per dataset put into a card's search text.
SEARCH_TAGS = 40
DEFAULT_PAGE_SIZE = 60
#: The neutral placeholder of a LoRA without a preview: a soft grey square saying "no preview".
PLACEHOLDER = (
    "data:image/svg+xml;utf8,"
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 40 40'><rect width='40' height='40' fill='%23888' "
    "fill-opacity='0.18'/><text x='20' y='22' font-family='sans-serif' font-size='5' text-anchor='middle' "
    "fill='%23888'>no preview</text></svg>"
)

PreviewUrl = Callable[[LoraEntry], "str | None"]


def no_preview(entry: LoraEntry) -> str | None:
    """Preview URL function for callers that serve no images: every card shows the placeholder."""
    return None


def _natural(text: str) -> list[Any]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text.lower()) if p]


def tag_names(entries: Sequence[LoraEntry], preferred: str = "alias") -> dict[str, str]:
    """relpath -> tag name by the names alone, for callers without a library (the bench, unit tests).

    The tab uses ``LoraLibrary.tag_name`` instead (``card_data(..., library=...)``), which asks the library's own
    resolver. Here: an alias shared by two files is never used (the bare name is, USERS S5); a bare name shared by
    two files becomes the folder-qualified relpath (S6).
    """
    name_count = Counter(e.name for e in entries)
    alias_count = Counter(e.alias for e in entries)
    out = {}
    for e in entries:
        name = e.name if name_count[e.name] == 1 else e.relpath
        if preferred == "alias" and e.alias and alias_count[e.alias] == 1 and name_count.get(e.alias, 0) == 0:
            name = e.alias
        out[e.relpath] = name
    return out


def entry_keys(entries: Sequence[LoraEntry]) -> list[str]:
    """The unique key of each entry's card, in order: its relpath, or ``relpath@N`` for the N-th (N >= 2) file
    with the same relpath under another root (two roots may both hold ``sub/x``)."""
    seen: Counter[str] = Counter()
    keys = []
    for e in entries:
        seen[e.relpath] += 1
        keys.append(e.relpath if seen[e.relpath] == 1 else f"{e.relpath}@{seen[e.relpath]}")
    return keys


def format_size(size: int) -> str:
    """Human-readable byte count (``1.2 MB``)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def format_weight(weight: float) -> str:
    """A weight as the tag shows it (``0.8``, ``1``, ``-1.5``)."""
    return f"{weight:g}"


def _algo_label(entry: LoraEntry) -> str:
    s = entry.summary
    algo = "+".join(s.algorithms) if s.algorithms else entry.ext.lstrip(".")
    return f"{algo} r{s.rank}" if s.rank else algo


def search_tags(metadata: dict[str, Any], limit: int = SEARCH_TAGS) -> list[str]:
    """Up to ``limit`` dataset tags per dataset, in file order (kohya writes them as first seen), for the search
    text. Not sorted by count: this runs for every card of a 5 000-LoRA library on each refresh."""
    freq = metadata.get("ss_tag_frequency")
    if isinstance(freq, str):
        return [t for t, _ in dataset_tags(metadata)[:limit]]
    out: list[str] = []
    if isinstance(freq, dict):
        for tags in freq.values():
            if isinstance(tags, dict):
                out += itertools.islice(tags, limit)
    return out


def _search_text(entry: LoraEntry, tags: list[str], hashes: Any | None = None) -> str:
    parts = [entry.name, entry.alias, entry.relpath, entry.description, entry.activation_text, entry.arch]
    parts += [str(entry.user_metadata.get("notes", "")), *entry.user_tags]
    if entry.civitai is not None:
        parts += list(entry.civitai.trained_words) + [entry.civitai.base_model]
    parts += hash_terms(entry, hashes)
    parts += tags
    return " ".join(p for p in parts if p).lower()


def card_html(
    entry: LoraEntry,
    *,
    key: str,
    preview: str | None,
    mismatch: bool,
    fav: bool,
    weight: str,
    shadowed: bool = False,
) -> str:
    """The HTML of one card. ``key`` is the record's unique name; all text is escaped.

    shadowed: no tag name reaches this file (another root holds the same ``folder/name``, or its names cannot be
    written in a tag); the card says why and a click inserts nothing.
    """
    esc = html.escape
    arch_cls = "lora-ext-arch lora-ext-mismatch" if mismatch else "lora-ext-arch"
    arch_title = (
        f"{entry.arch} LoRA; the loaded model is another architecture, so it may not work"
        if mismatch
        else f"{entry.arch} LoRA"
    )
    img = esc(preview or PLACEHOLDER, quote=True)
    img_cls = "lora-ext-preview" if preview else "lora-ext-preview lora-ext-placeholder"
    hint = unusable_hint(entry)
    title = entry.path if not shadowed else f"{entry.path}\n{hint}"
    parts = [
        '<div class="lora-ext-card card',
        " lora-ext-shadowed" if shadowed else "",
        '" data-name="',
        esc(key, quote=True),
        '" title="',
        esc(title, quote=True),
        '"><img class="',
        img_cls,
        '" loading="lazy" alt="" src="',
        img,
        '"><div class="lora-ext-buttons"><button class="lora-ext-fav',
        " lora-ext-on" if fav else "",
        '" title="Favourite (saved in the LoRA\'s .json)">★</button>'
        '<button class="lora-ext-info" title="Details and editing">i</button></div>',
        '<div class="lora-ext-badges"><span class="',
        arch_cls,
        '" title="',
        esc(arch_title, quote=True),
        '">',
        esc(entry.arch),
        (" ⚠" if mismatch else ""),
        '</span><span class="lora-ext-algo" title="Algorithm and rank">',
        esc(_algo_label(entry)),
        '</span><span class="lora-ext-size" title="File size">',
        format_size(entry.size),
        '</span></div><div class="lora-ext-text"><div class="lora-ext-name">',
        esc(entry.name),
        "</div>",
    ]
    if entry.alias and entry.alias != entry.name:
        parts += ['<div class="lora-ext-alias" title="Alias (ss_output_name)">', esc(entry.alias), "</div>"]
    if shadowed:
        parts += ['<div class="lora-ext-problem">', esc(hint), "</div>"]
    elif weight or entry.activation_text:
        parts += ['<div class="lora-ext-activation" title="Weight and text a click inserts">']
        if weight:
            parts += ['<span class="lora-ext-weight">', esc(weight), "</span> "]
        parts += [esc(entry.activation_text), "</div>"]
    if entry.user_tags:
        text = " ".join("#" + t for t in entry.user_tags)
        parts.append(
            f'<div class="lora-ext-usertags" title="Your tags: {esc(text, quote=True)}">{esc(text)}</div>'
        )
    parts.append("</div></div>")
    return "".join(parts)


def card_record(
    entry: LoraEntry,
    *,
    tag_name: str | None,
    key: str | None = None,
    model_arch: str | None = None,
    preview_url: PreviewUrl = no_preview,
    path_rank: int = 0,
    hashes: Any | None = None,
    search_only: bool | None = None,
    tags: list[str] | None = None,
) -> dict[str, Any]:
    """The browser record of one entry (see ``card_data``); ``tag_name`` None marks a shadowed file; ``hashes``
    (a library ``Hashes``, when known) join the search text; ``search_only`` (default: the entry is under a
    dot-folder) shows the card only for searches; ``tags``: its ``search_tags`` when the caller has them."""
    tags = search_tags(entry.metadata) if tags is None else tags
    mismatch = bool(model_arch) and entry.arch != "Unknown" and entry.arch != model_arch
    fav = bool(entry.user_metadata.get("favorite"))
    pw = entry.preferred_weight
    weight = format_weight(pw) if pw is not None else ""
    key = key or entry.relpath
    return {
        "name": key,
        "tag_name": tag_name,
        "weight": weight or None,
        "activation": entry.activation_text.strip(),
        "negative": entry.negative_text.strip(),
        "search": _search_text(entry, tags, hashes),
        "folder": entry.folder,
        "arch": entry.arch,
        "mismatch": mismatch,
        "fav": fav,
        "hidden": entry.hidden if search_only is None else search_only,
        "desc": entry.description,
        "tags": [],
        "sort": {
            "name": entry.name.lower(),
            "path": path_rank,
            "created": entry.ctime,
            "modified": entry.mtime,
            "added": entry.added,
            "published": entry.civitai.published if entry.civitai is not None else None,
            "size": entry.size,
        },
        "html": card_html(
            entry,
            key=key,
            preview=preview_url(entry),
            mismatch=mismatch,
            fav=fav,
            weight=weight,
            shadowed=tag_name is None,
        ),
    }


def card_data(
    entries: Iterable[LoraEntry],
    *,
    preferred_name: str = "alias",
    default_multiplier: float = 1.0,
    model_arch: str | None = None,
    preview_url: PreviewUrl = no_preview,
    page_size: int = DEFAULT_PAGE_SIZE,
    library: Any | None = None,
) -> dict[str, Any]:
    """Everything the browser needs to show the tab: ``{"default_multiplier", "model_arch", "page_size", "tags",
    "cards"}``; ``tags`` = the tag filter's list, ``[tag, number of cards, "user" | "training"]``, the user's own
    tags first (``lora_ext.ui.tagfilter.listed_tags``; search-only cards are not counted).

    Each card: ``name`` (unique key, ``entry_keys``), ``tag_name`` (what ``<lora:NAME:W>`` uses; None for a shadowed
    file), ``weight`` (preferred weight as text or None = default multiplier at click time), ``activation``,
    ``negative``, ``search`` (lower-case text searched client-side), ``folder``, ``arch``, ``mismatch``, ``fav``,
    ``hidden`` (search-only), ``desc`` (the description as the user wrote it: text, or HTML the browser sanitises
    when the user asks for HTML), ``tags`` (its tags among the listed ones), ``sort`` keys (``path`` =
    natural-order rank; ``created``, ``modified``, ``added`` (first seen by the library) and ``published`` (Civitai;
    None when unknown) in seconds since the epoch; ``size`` in bytes) and ``html``.

    library: the ``LoraLibrary`` the entries come from; its ``tag_name`` decides the names (the tab always passes
    it), and the hashes it already knows (``known_hashes``, no file read) join the search text. Without it,
    ``tag_names`` decides from the names alone. Files under dot-folders follow the library's ``hidden`` mode (the
    webui's "Hidden extra networks"): "when searched" (default) makes them search-only, "always" shows them like
    the rest, "never" leaves them out. Linear in the number of entries (the bench calls it with 5 000 entries).
    """
    shown = shown_entries(entries, getattr(library, "hidden", "when searched"))
    items = [e for e, _ in shown]
    known = getattr(library, "known_hashes", None)
    hashes = [known(e) for e in items] if known is not None else [None] * len(items)
    if library is not None:
        names = [usable_tag_name(library, e, preferred_name) for e in items]
    else:
        by_relpath = tag_names(items, preferred_name)
        names = [by_relpath[e.relpath] for e in items]
    keys = entry_keys(items)
    order = sorted(range(len(items)), key=lambda i: _natural(items[i].relpath))
    rank = {i: r for r, i in enumerate(order)}
    searched = [search_tags(e.metadata) for e in items]
    training = [card_tags(t) for t in searched]
    user = [card_tags(e.user_tags) for e in items]
    visible = [i for i, (_, search_only) in enumerate(shown) if not search_only]
    listed = listed_tags([user[i] for i in visible], [training[i] for i in visible])
    cards = [
        card_record(
            e,
            tag_name=names[i],
            key=keys[i],
            model_arch=model_arch,
            preview_url=preview_url,
            path_rank=rank[i],
            hashes=hashes[i],
            search_only=shown[i][1],
            tags=searched[i],
        )
        for i, e in enumerate(items)
    ]
    wanted = {t for t, _, _ in listed}
    for card, mine, trained in zip(cards, user, training, strict=True):
        card["tags"] = [t for t in dict.fromkeys(mine + trained) if t in wanted]
    return {
        "default_multiplier": default_multiplier,
        "model_arch": model_arch,
        "page_size": page_size,
        "tags": [[t, n, kind] for t, n, kind in listed],
        "cards": cards,
    }


def data_block_html(data: dict[str, Any], prefix: str, salt: str = "") -> str:
    """The tab's data as an inert JSON block inside HTML; ``data-version`` changes whenever the content does.

    salt: mixed into the version to make the browser re-render unchanged content (to undo what it showed ahead of
    the server, e.g. a favourite star that could not be saved)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    version = hashlib.sha1((text + salt).encode("utf-8")).hexdigest()[:16]
    # "</" inside a <script> would end it; "<\/" is the same JSON string.
    text = text.replace("</", "<\\/")
    return "".join(
        [
            '<script type="application/json" class="lora-ext-data" data-prefix="',
            html.escape(prefix, quote=True),
            '" data-version="',
            version,
            '">',
            text,
            "</script>",
        ]
    )
