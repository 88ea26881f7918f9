"""Split one file key into (component, module path, normalized part) using the tables in ``tables``.

Kohya-style keys (``lora_unet_…``) have no dots in the module key, so the part is everything after the first dot.
Dotted keys (diffusers, PEFT, ComfyUI) carry the module path in dots, so the part is found from the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lora_ext.keys.tables import (
    BARE_ROOTS,
    DOTTED_FORBIDDEN_PARTS,
    DOTTED_PREFIX_KEEP,
    DOTTED_PREFIXES,
    DOTTED_REWRITES,
    FLAT_PREFIX_KEEP,
    FLAT_PREFIXES,
    PART_NAMES,
)

_REWRITES = tuple((re.compile(p), r) for p, r in DOTTED_REWRITES)
#: Dotted part suffixes, longest (most segments) first.
_DOTTED_PARTS = sorted(PART_NAMES, key=lambda p: (-p.count("."), -len(p)))
#: PEFT saves some keys with the adapter name (``lora_A.default.weight``); drop it.
_ADAPTER_NAME = re.compile(r"\.(lora_[AB]|lora_magnitude_vector)\.default(\.weight)?$")


@dataclass(frozen=True)
class KeyParts:
    """component: "unet"/"te1"/"te2". module: dotted or flattened module path (dots kept for dotted keys).
    part: normalized part name. raw_part: the part as written (e.g. ``lora_magnitude_vector``). dotted: key style."""

    component: str
    module: str
    part: str
    raw_part: str
    dotted: bool


def parse_key(key: str) -> KeyParts | None:
    """Parse ``key``; None when no convention recognizes it."""
    for prefix, component in FLAT_PREFIXES:
        if key.startswith(prefix) and "." in key:
            module, raw_part = key[len(prefix) :].split(".", 1)
            part = PART_NAMES.get(raw_part)
            if part is None or not module:
                return None
            module = FLAT_PREFIX_KEEP.get(prefix, "") + module
            return KeyParts(component, module, part, raw_part, dotted=False)
    return _parse_dotted(key)


def _parse_dotted(key: str) -> KeyParts | None:
    rest = _ADAPTER_NAME.sub(lambda m: f".{m.group(1)}{m.group(2) or ''}", key)
    component = None
    for prefix, comp in DOTTED_PREFIXES:
        if rest.startswith(prefix):
            rest = DOTTED_PREFIX_KEEP.get(prefix, "") + rest[len(prefix) :]
            component = comp
            break
    if component is None:
        component = BARE_ROOTS.get(rest.split(".", 1)[0])
        if component is None:
            return None
    for pattern, replacement in _REWRITES:
        rest = pattern.sub(replacement, rest)
    for raw_part in _DOTTED_PARTS:
        if raw_part in DOTTED_FORBIDDEN_PARTS:
            continue
        if rest.endswith("." + raw_part):
            module = rest[: -len(raw_part) - 1]
            if module:
                return KeyParts(component, module, PART_NAMES[raw_part], raw_part, dotted=True)
    return None
