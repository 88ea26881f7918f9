"""The Extra Networks "Lora" page (A1111_CONTRACT §4): one-word title, item dicts per §4.3 and §4.4.

Differences from the built-in, on purpose (§16): a LoRA made for another model version is shown with a badge in
its description and a search term, and hidden only when the user opted to (``lora_ext_hide_incompatible``); cards of
unknown version are hidden for the model versions listed in ``lora_hide_unknown_for_versions``, as in the built-in
(empty by default); card sort keys carry the real creation and modification dates (not swapped); same-named files
in different folders get distinct items.

Card clicks (USERS C11, C12, N4, S14): each item carries an ``onclick`` calling ``loraExtPageCardClicked`` in
``javascript/lora_ext.js``, the same insert/toggle as our LoRA tab's cards (any weight form, extra arguments, the
``{prompt}`` placeholder); the webui's default ``cardClicked`` toggle only recognises ``[\\d.]+`` weights (§13).
``prompt`` and ``negative_prompt`` stay as the built-in writes them, for other extensions that read them. Search
terms carry the hashes the library already knows without reading the file (C15, H5).
"""

from __future__ import annotations

import html
import json
import os
from typing import Any

from lora_ext.hosts.a1111.model import model_architecture
from lora_ext.library import EMBEDDED_PREVIEW
from lora_ext.library.search_terms import hash_terms
from lora_ext.library.usable_names import unusable_hint, usable_tag_name
from lora_ext.syntax import format_weight

TITLE = "Lora"  # one word: the webui's metadata routes look pages up by name (§4.1)
KNOWN_VERSIONS = ("SD1", "SD2", "SDXL")


def card_version(entry: Any) -> str:
    """The card's SD version: user metadata ``sd version`` when it names a version, else the detected one."""
    user = entry.user_metadata.get("sd version") if isinstance(entry.user_metadata, dict) else None
    if isinstance(user, str) and user in (*KNOWN_VERSIONS, "Unknown"):
        return user
    return (
        entry.arch
        if entry.arch in KNOWN_VERSIONS
        else ("Unknown" if entry.arch in ("Unknown", "", None) else entry.arch)
    )


def incompatible(version: str, model_arch: str) -> bool:
    """True when a card of ``version`` cannot apply to a model of ``model_arch`` (both known)."""
    return model_arch in KNOWN_VERSIONS and version not in ("Unknown", model_arch)


def item_names(entries: list[Any]) -> dict[str, Any]:
    """Unique item name -> entry: the file stem, or ``folder/stem`` where several files share a stem."""
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.name] = counts.get(entry.name, 0) + 1
    return {(entry.name if counts[entry.name] == 1 else entry.relpath): entry for entry in entries}


def card_click(tag_name: str | None, entry: Any, allow_negative_prompt: bool) -> str:
    """The item's ``onclick`` (§4.3): a call of ``loraExtPageCardClicked(this, {...})`` with the tag name (null: no
    name reaches this file, and a click inserts nothing), the
    preferred weight as text (null: the default multiplier at click time), the activation and negative texts,
    HTML-escaped because the webui splices a given ``onclick`` into the card's attribute as it is."""
    weight = entry.preferred_weight  # None when absent or 0 ("use the default multiplier")
    card = {
        "name": tag_name,
        "weight": format_weight(weight) if weight is not None else None,
        "activation": (entry.activation_text or "").strip(),
        "negative": (entry.negative_text or "").strip(),
        "allowNegative": bool(allow_negative_prompt),
    }
    return html.escape(f"loraExtPageCardClicked(this, {json.dumps(card)})")


def search_hashes(library: Any, entry: Any) -> tuple[str | None, list[str]]:
    """(short hash or None, hash search terms) from the hashes the library knows without reading the file: the
    embedded ``sshs_model_hash``, the addnet hash and the file's sha256 (Civitai AutoV2 is its first 10 digits)."""
    hashes = library.known_hashes(entry)
    return getattr(hashes, "shorthash", None), hash_terms(entry, hashes)


def make_page(host: Any) -> Any:
    from modules import shared, ui_extra_networks

    quote_js = ui_extra_networks.quote_js

    class ExtraNetworksPageLoraExt(ui_extra_networks.ExtraNetworksPage):
        def __init__(self) -> None:
            super().__init__(TITLE)
            self._entries: dict[str, Any] = {}

        def refresh(self) -> None:
            host.refresh()
            self._entries = {}

        def _index(self) -> dict[str, Any]:
            if not self._entries:
                self._entries = item_names(host.library.entries())
            return self._entries

        def create_item(self, name, index=None, enable_filter=True):
            entry = self._index().get(name)
            if entry is None:
                host.library.refresh()
                self._entries = {}
                entry = self._index().get(name)
                if entry is None:
                    return None
            model_arch = model_architecture(shared.sd_model)
            version = card_version(entry)
            mismatch = incompatible(version, model_arch)
            if (
                enable_filter
                and shared.sd_model is not None
                and not getattr(shared.opts, "lora_show_all", False)
            ):
                if mismatch and getattr(shared.opts, "lora_ext_hide_incompatible", False):
                    return None
                if version == "Unknown" and model_arch in (
                    getattr(shared.opts, "lora_hide_unknown_for_versions", []) or []
                ):
                    return None
            path, _ = os.path.splitext(entry.path)
            prefer = "filename" if getattr(shared.opts, "lora_preferred_name", "") == "Filename" else "alias"
            usable = usable_tag_name(host.library, entry, prefer)
            tag_name = usable or host.library.tag_name(entry, prefer)
            weight = entry.preferred_weight  # None when absent or 0 ("use the default multiplier")
            weight_js = (
                quote_js(format_weight(weight))
                if weight is not None
                else "opts.extra_networks_default_multiplier"
            )
            prompt = quote_js(f"<lora:{tag_name}:") + " + " + weight_js + " + " + quote_js(">")
            if entry.activation_text:
                prompt += " + " + quote_js(" " + entry.activation_text)
            negative = quote_js(f"({entry.negative_text}:1)") if entry.negative_text else quote_js("")
            description = entry.description or ""
            shorthash, hash_search = search_hashes(host.library, entry)
            search_terms = [self.search_terms_from_path(entry.path), *hash_search, *entry.user_tags]
            if usable is None:  # a click inserts nothing; the card says why (``prompt`` stays the built-in's)
                description = f"[{unusable_hint(entry)}] {description}".strip()
            if mismatch:
                description = f"[{version} LoRA, current model {model_arch}] {description}".strip()
                search_terms.append(f"incompatible {version}")
            metadata = dict(entry.metadata)
            preview = None
            if entry.preview and not entry.preview.startswith(EMBEDDED_PREVIEW):
                preview = self.link_preview(entry.preview)
            elif entry.cover_count:
                # the webui json.loads this value (find_embedded_preview, /cover-images): a JSON string, not a list
                metadata["ssmd_cover_images"] = json.dumps(_covers(entry.path))
                preview = self.find_embedded_preview(path, name, metadata)
            return {
                "name": name,
                "filename": entry.path,
                "shorthash": shorthash,
                "preview": preview,
                "description": description,
                "search_terms": [t for t in search_terms if t],
                "local_preview": f"{path}.{shared.opts.samples_format}",
                "metadata": metadata,
                "sort_keys": {
                    "default": index if index is not None else 0,
                    "date_created": int(entry.ctime),
                    "date_modified": int(entry.mtime),
                    "name": entry.name.lower(),
                    "path": entry.path.lower(),
                },
                "sd_version": version,
                "user_metadata": dict(entry.user_metadata),
                "prompt": prompt,
                "negative_prompt": negative,
                "onclick": card_click(usable, entry, self.allow_negative_prompt),
            }

        def list_items(self):
            self._entries = {}
            for index, name in enumerate(self._index()):
                item = self.create_item(name, index)
                if item is not None:
                    yield item

        def allowed_directories_for_previews(self):
            return [d for d in host.library.roots if d]

        def create_user_metadata_editor(self, ui, tabname):
            from lora_ext.hosts.a1111.editor import make_editor

            return make_editor(ui, tabname, self, host)

    return ExtraNetworksPageLoraExt()


def _covers(path: str) -> list:
    """Embedded ``ssmd_cover_images`` for the webui's cover-images route (read only when the file has covers)."""
    from modules import sd_models

    try:
        covers = sd_models.read_metadata_from_safetensors(path).get("ssmd_cover_images", [])
    except Exception:
        return []
    if isinstance(covers, str):
        try:
            covers = json.loads(covers)
        except ValueError:
            return []
    return covers if isinstance(covers, list) else []
