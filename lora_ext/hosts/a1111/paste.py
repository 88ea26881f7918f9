"""Infotext paste hooks (A1111_CONTRACT §11): remap ``<lora:ALIAS:`` by ``Lora hashes`` (in the prompt and the hires
prompt) and convert AddNet fields.

A tag is renamed only when its short hash matches exactly one local LoRA; otherwise it stays as written and a note
says why (never a silent swap, §16). The notes are shown in the console and kept in ``params["lora_ext notes"]``.
AddNet fields become ``<lora:…>`` tags on a new prompt line unless the AddNet extension itself is active.
"""

from __future__ import annotations

from typing import Any

from lora_ext.hosts.a1111 import messages
from lora_ext.infotext import addnet_fields_to_tags, parse_lora_hashes, remap_prompt_by_hashes

NOTES_FIELD = "lora_ext notes"


def addnet_extension_active() -> bool:
    """The AddNet extension registers the infotext field "AddNet Module 1" on the txt2img script runner."""
    from modules import scripts

    runner = getattr(scripts, "scripts_txt2img", None)
    fields = getattr(runner, "infotext_fields", None) or []
    return any(len(f) > 1 and f[1] == "AddNet Module 1" for f in fields)


def local_names(host: Any, shorthash: str) -> list[str]:
    """Names (as a tag would write them) of the local LoRAs whose hash starts with ``shorthash``."""
    from modules import shared

    prefer = "filename" if getattr(shared.opts, "lora_preferred_name", "") == "Filename" else "alias"
    compute = not getattr(shared.cmd_opts, "no_hashing", False)
    library = host.library
    return [library.tag_name(e, prefer) for e in library.by_shorthash(shorthash, compute_missing=compute)]


#: Pasted fields whose tags are remapped: the prompt, and the hires prompt (written when it differs; its LoRAs are
#: in ``Lora hashes`` too, USERS H2).
PROMPT_FIELDS = ("Prompt", "Hires prompt")


def infotext_pasted(host: Any, infotext: str, params: dict) -> None:
    notes: list[str] = []
    hashes = parse_lora_hashes(params.get("Lora hashes"))
    texts = {key: params[key] for key in PROMPT_FIELDS if isinstance(params.get(key), str)}
    if hashes and texts:
        host.refresh()  # files renamed or added since the last scan must be found by their hash
        for key, text in texts.items():
            others = [other for other_key, other in texts.items() if other_key != key]
            params[key], remap_notes = remap_prompt_by_hashes(
                text, hashes, lambda h: local_names(host, h), also_in=others
            )
            notes += [note for note in remap_notes if note not in notes]
    prompt = params.get("Prompt")
    if isinstance(prompt, str) and not addnet_extension_active():
        tags = addnet_fields_to_tags(params)
        if tags:
            params["Prompt"] = f"{prompt}\n{tags}" if prompt else tags
    if notes:
        params[NOTES_FIELD] = notes
        for note in notes:
            messages.console(note)
