"""Infotext paste hooks (A1111_CONTRACT §11): remap ``<lora:ALIAS:`` by ``Lora hashes`` (in the prompt and the hires
prompt) and convert AddNet fields.

A tag is renamed only when its short hash matches exactly one local LoRA; otherwise it stays as written and a note
says why (never a silent swap, §16). The notes are shown in the console and kept in ``params["lora_ext notes"]``.

Paste runs for every infotext the webui parses (paste buttons, ``/sdapi/v1/png-info``), so it reads little: the
files the pasted names already point at are hashed (to confirm them), and the rest of the library only while the
files never hashed add up to at most ``PASTE_HASH_BUDGET`` bytes. Past that, only hashes already known are searched
and a note says how many files were not (files are hashed as they are used).
AddNet fields become ``<lora:…>`` tags on a new prompt line unless the AddNet extension itself is active.
"""

from __future__ import annotations

from typing import Any

from lora_ext.errors import Problem
from lora_ext.hosts.a1111 import messages
from lora_ext.infotext import (
    MATCHES_NOTHING,
    addnet_fields_to_tags,
    parse_lora_hashes,
    remap_prompt_by_hashes,
)

NOTES_FIELD = "lora_ext notes"


def addnet_extension_active() -> bool:
    """The AddNet extension registers the infotext field "AddNet Module 1" on the txt2img script runner."""
    from modules import scripts

    runner = getattr(scripts, "scripts_txt2img", None)
    fields = getattr(runner, "infotext_fields", None) or []
    return any(len(f) > 1 and f[1] == "AddNet Module 1" for f in fields)


#: Most bytes of never-hashed LoRA files one paste reads to look hashes up (a few seconds of reading).
PASTE_HASH_BUDGET = 2 * 1024**3


def local_names(host: Any, shorthash: str, compute: bool) -> list[str]:
    """Names (as a tag would write them) of the local LoRAs whose hash starts with ``shorthash``; ``compute``: hash
    the files not hashed yet first."""
    from modules import shared

    prefer = "filename" if getattr(shared.opts, "lora_preferred_name", "") == "Filename" else "alias"
    library = host.library
    return [library.tag_name(e, prefer) for e in library.by_shorthash(shorthash, compute_missing=compute)]


def never_hashed(library: Any) -> list[Any]:
    """Entries whose file has not been hashed yet (an embedded ``sshs_model_hash`` alone does not count: it cannot
    match a Civitai AutoV2 sha256)."""
    return [e for e in library.entries() if getattr(library.known_hashes(e), "sha256", None) is None]


def hash_pasted_names(library: Any, hashes: dict[str, str]) -> None:
    """Hash the local files the pasted ``Lora hashes`` names point at, so a name that is right is confirmed."""
    for name in hashes:
        entry = library.resolve(name)
        if not isinstance(entry, Problem):
            library.hashes(entry)


def search_budget_note(library: Any) -> tuple[bool, str | None]:
    """(hash the whole library now?, the note to add when a hash then matches nothing)."""
    unhashed = never_hashed(library)
    size = sum(e.size for e in unhashed)
    if size <= PASTE_HASH_BUDGET:
        return True, None
    return False, (
        f"Lora hashes: {len(unhashed)} LoRA files ({size / 1024**3:.1f} GB) have not been hashed yet and were not "
        f"searched (a paste reads at most {PASTE_HASH_BUDGET // 1024**3} GB); each file is hashed when it is used."
    )


#: Pasted fields whose tags are remapped: the prompt, and the hires prompt (written when it differs; its LoRAs are
#: in ``Lora hashes`` too, USERS H2).
PROMPT_FIELDS = ("Prompt", "Hires prompt")


def infotext_pasted(host: Any, infotext: str, params: dict) -> None:
    from modules import shared

    notes: list[str] = []
    hashes = parse_lora_hashes(params.get("Lora hashes"))
    texts = {key: params[key] for key in PROMPT_FIELDS if isinstance(params.get(key), str)}
    if hashes and texts:
        host.refresh()  # files renamed or added since the last scan must be found by their hash
        compute, skipped = False, None  # --no-hashing: only hashes already known are searched
        if not getattr(shared.cmd_opts, "no_hashing", False):
            hash_pasted_names(host.library, hashes)
            compute, skipped = search_budget_note(host.library)
        for key, text in texts.items():
            others = [other for other_key, other in texts.items() if other_key != key]
            params[key], remap_notes = remap_prompt_by_hashes(
                text, hashes, lambda h: local_names(host, h, compute), also_in=others
            )
            notes += [note for note in remap_notes if note not in notes]
        if skipped and any(MATCHES_NOTHING in note for note in notes):
            notes.append(skipped)
    prompt = params.get("Prompt")
    if isinstance(prompt, str) and not addnet_extension_active():
        tags = addnet_fields_to_tags(params)
        if tags:
            params["Prompt"] = f"{prompt}\n{tags}" if prompt else tags
    if notes:
        params[NOTES_FIELD] = notes
        for note in notes:
            messages.console(note)
