"""Fake ``modules.patches`` (A1111_CONTRACT.md §9.2): patching the same (obj, field) twice with one key raises."""

from __future__ import annotations

originals: dict = {}


def patch(key, obj, field, replacement):
    patch_key = (obj, field)
    if patch_key in originals.setdefault(key, {}):
        raise RuntimeError(f"patch for {field} is already applied")
    original_func = getattr(obj, field)
    originals[key][patch_key] = original_func
    setattr(obj, field, replacement)
    return original_func


def undo(key, obj, field):
    patch_key = (obj, field)
    if patch_key not in originals.get(key, {}):
        return None
    original_func = originals[key].pop(patch_key)
    setattr(obj, field, original_func)
    return None


def original(key, obj, field):
    return originals.get(key, {}).get((obj, field), None)
