"""Infotext logic for LoRAs: the ``Lora hashes`` field, paste remapping by hash, AddNet fields to tags.

Pure functions on strings (A1111_CONTRACT §11, USERS H1–H9, N4); hosts read and write the infotext itself.

- Writing: ``Lora hashes: "a: 0123456789ab, b: 89abcdef0123"``; names as typed without ``:``/``,`` and without
  folders (H1, H3), 12-hex short hashes; the host quotes the value.
- Pasting: a tag is renamed to a local LoRA only when its hash is a valid short hash matching exactly one local
  name; every other case leaves the tag as written and says why (H6, H7); no hashes at all is fine (H9).
- AddNet (kohya additional-networks) fields become ``<lora:…>`` tags (H8).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence

from lora_ext.syntax import NETWORKS, TAG_PATTERN, format_tag, split_args, tag_name_problem

#: A1111's short hash: the first 12 hex digits of a sha256 (addnet hash or ``sshs_model_hash``), lowercase.
SHORTHASH_PATTERN = re.compile(r"[0-9a-f]{12}")

#: Short sha256 of empty input; seen on broken files and hash caches, it identifies nothing (USERS H6).
EMPTY_INPUT_SHORTHASH = "e3b0c44298fc"

#: The words of the note for a hash no local file has (hosts look for them to add why the search was partial).
MATCHES_NOTHING = "matches no local file"

# AddNet writes "name(0123abcd)" or "name (0123abcd)" for a model.
_ADDNET_MODEL = re.compile(r"(.*?)\s*\([0-9a-fA-F]+\)\s*")


def infotext_name(mentioned_name: str) -> str:
    """The name written to ``Lora hashes``: the part after the last ``/`` or ``\\``, ``:`` and ``,`` removed,
    outer whitespace stripped. ``"chars/alice: v2"`` → ``"alice v2"``."""
    base = re.split(r"[/\\]", mentioned_name)[-1]
    return base.replace(":", "").replace(",", "").strip()


def format_lora_hashes(pairs: list[tuple[str, str]]) -> str:
    """``Lora hashes`` value from (mentioned name, short hash) pairs: ``"a: 0123456789ab, b: 89abcdef0123"``.

    Names go through ``infotext_name``; pairs with an empty name or hash are skipped; a name already written
    keeps its first hash (the hires pass repeats the first pass's LoRAs, USERS H2). Order is kept.
    """
    written: dict[str, str] = {}
    for name, shorthash in pairs:
        key = infotext_name(name)
        value = shorthash.strip().replace(",", "").replace(":", "")
        if key and value and key not in written:
            written[key] = value
    return ", ".join(f"{key}: {value}" for key, value in written.items())


def parse_lora_hashes(value: object) -> dict[str, str]:
    """``{name: shorthash}`` from a ``Lora hashes`` value, quoted or not; junk entries are skipped.

    Hashes are lowercased, not validated (``remap_prompt_by_hashes`` checks them). Never raises.
    """
    if not isinstance(value, str):
        return {}
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        text = decoded if isinstance(decoded, str) else text[1:-1]
    hashes: dict[str, str] = {}
    for entry in text.split(","):
        name, colon, shorthash = entry.partition(":")
        name = name.strip(" \t\r\n\"'")
        shorthash = shorthash.strip(" \t\r\n\"'").lower()
        if colon and name and shorthash:
            hashes.setdefault(name, shorthash)
    return hashes


def remap_prompt_by_hashes(
    prompt: str,
    hashes: Mapping[str, str],
    lookup: Callable[[str], list[str]],
    also_in: Sequence[str] = (),
) -> tuple[str, list[str]]:
    """Rename ``<lora:…>``/``<lyco:…>`` tags of a pasted prompt to local LoRAs found by the infotext's hashes.

    hashes: ``Lora hashes`` as parsed (infotext name → short hash). A tag is looked up by its name as typed or by
        its ``infotext_name``.
    lookup: short hash (12 lowercase hex) → the local names (as a tag would write them) having that hash.
    also_in: the other prompts pasted with this one (the hires prompt), whose tags share ``hashes``.
    Only the name argument is replaced; weights and options stay byte-identical. Returns the new prompt and one
    note per decision: each rename, and each tag left as written because its hash is invalid, is the empty-input
    hash, matches no local name, or matches several, or because tags of different names (``a/x`` and ``b/x``, in
    this prompt or in ``also_in``) share its ``Lora hashes`` entry, which then cannot say which file it is.
    """
    decisions: dict[str, str | None] = {}
    notes: list[str] = []
    pieces: list[str] = []
    last = 0
    typed = _names_by_entry([prompt, *also_in], hashes)
    for match, args, index, alias in _hashed_tags(prompt, hashes):
        network, name = match.group(1), args[index]
        if alias not in decisions and len(typed[alias]) > 1:
            decisions[alias] = None
            notes.append(
                f"Lora hashes: {alias} stands for the tags {', '.join(typed[alias])}, so its hash does not say "
                "which file each means; left as written."
            )
        if alias not in decisions:
            decisions[alias] = _decide(alias, hashes[alias], lookup, notes)
        local = decisions[alias]
        if local is None or local == name:
            continue
        args[index] = local
        pieces += [prompt[last : match.start()], f"<{network}:{':'.join(args)}>"]
        last = match.end()
        notes.append(
            f"Lora hashes: {match.group(0)} now uses the local LoRA {local} (same hash {hashes[alias].strip().lower()})."
        )
    pieces.append(prompt[last:])
    return "".join(pieces), notes


def addnet_fields_to_tags(params: Mapping[str, object]) -> str | None:
    """``<lora:…>`` tags for the LoRA slots of kohya AddNet infotext fields, or None when there are none.

    For each ``AddNet Model N`` whose ``AddNet Module N`` is ``LoRA``: the model name without its trailing
    ``(hexhash)``, te = ``AddNet Weight A N`` (default 1.0), unet = ``AddNet Weight B N`` when given and different.
    The host appends the result to the prompt on a new line, as A1111 does. Slots whose name cannot be written in a
    tag are skipped; a weight that is not a number is written as found so that parsing reports it.
    """
    tags: list[str] = []
    for key in params:
        if not isinstance(key, str) or not key.startswith("AddNet Model "):
            continue
        slot = key[len("AddNet Model ") :]
        model = params.get(key)
        if params.get(f"AddNet Module {slot}") != "LoRA" or not isinstance(model, str):
            continue
        found = _ADDNET_MODEL.fullmatch(model)
        name = (found.group(1) if found else model).strip()
        if not name or tag_name_problem(name) is not None:
            continue
        tag = _addnet_tag(
            name, params.get(f"AddNet Weight A {slot}", 1.0), params.get(f"AddNet Weight B {slot}")
        )
        if tag is not None:
            tags.append(tag)
    return "".join(tags) if tags else None


def _addnet_tag(name: str, weight_a: object, weight_b: object) -> str | None:
    te = _number(weight_a)
    unet = _number(weight_b) if weight_b is not None else None
    if te is not None and (weight_b is None or unet is not None):
        return format_tag(name, te, unet)
    raw = [str(weight_a)] + ([str(weight_b)] if weight_b is not None else [])
    if any(c in text for text in raw for c in ":<>="):
        return None
    return f"<lora:{name}:{':'.join(raw)}>"


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _names_by_entry(prompts: Sequence[str], hashes: Mapping[str, str]) -> dict[str, list[str]]:
    """``Lora hashes`` entry → the different tag names (as typed, in order) that look it up in ``prompts``."""
    found: dict[str, list[str]] = {}
    for prompt in prompts:
        for _, args, index, alias in _hashed_tags(prompt, hashes):
            if args[index] not in found.setdefault(alias, []):
                found[alias].append(args[index])
    return found


def _hashed_tags(
    prompt: str, hashes: Mapping[str, str]
) -> Iterator[tuple[re.Match[str], list[str], int, str]]:
    """(match, its arguments, index of the name argument, ``Lora hashes`` entry) of each ``<lora:…>``/``<lyco:…>``
    tag of ``prompt`` that a ``hashes`` entry names, by the name as typed or by its ``infotext_name``."""
    for match in TAG_PATTERN.finditer(prompt):
        if match.group(1) not in NETWORKS:
            continue
        args = match.group(2).split(":")
        index = _name_index(args)
        if index is None:
            continue
        name = args[index]
        alias = name if name in hashes else infotext_name(name)
        if alias in hashes:
            yield match, args, index, alias


def _name_index(args: list[str]) -> int | None:
    """Index of the name among a tag's ``:``-split args: the first positional one (A1111's ``positional[0]``)."""
    for index, arg in enumerate(args):
        if not split_args([arg])[1]:
            return index
    return None


def _decide(alias: str, raw_hash: str, lookup: Callable[[str], list[str]], notes: list[str]) -> str | None:
    """The single local name for ``alias``'s hash, or None after adding a note saying why the tag stays."""
    shorthash = raw_hash.strip().lower()
    if not SHORTHASH_PATTERN.fullmatch(shorthash):
        notes.append(
            f'Lora hashes: {alias} has hash "{raw_hash}", not a 12-digit hex short hash; left as written.'
        )
        return None
    if shorthash == EMPTY_INPUT_SHORTHASH:
        notes.append(
            f"Lora hashes: {alias} has hash {shorthash}, the hash of empty input, which identifies no file; "
            "left as written."
        )
        return None
    names = list(dict.fromkeys(lookup(shorthash) or []))
    if len(names) == 1 and tag_name_problem(names[0]) is None:
        return names[0]
    if not names:
        notes.append(f"Lora hashes: {alias} has hash {shorthash}, which {MATCHES_NOTHING}; left as written.")
    elif len(names) == 1:
        notes.append(
            f"Lora hashes: {alias} has hash {shorthash}, which matches the local file {names[0]}, "
            "whose name cannot be written in a tag; left as written."
        )
    else:
        notes.append(
            f"Lora hashes: {alias} has hash {shorthash}, which matches {len(names)} local files "
            f"({', '.join(names)}); left as written."
        )
    return None
