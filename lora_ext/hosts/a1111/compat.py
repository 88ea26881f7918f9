"""Read-only stand-ins for the built-in's bare-name modules ``networks`` and ``lora`` (A1111_CONTRACT §1.3).

Some extensions import them by name (LoRA Block Weight: ``lora.loaded_loras``; civitai: ``lora.available_loras``;
Regional Prompter: ``networks``). With the built-in disabled, ``install`` puts module objects under those names in
``sys.modules`` (never files: a top-level ``networks.py`` would be shadowed or shadow the built-in), only when the
names are free, and keeps their tables in sync with the host after every activation and refresh.

Covered: ``networks.loaded_networks``, ``networks.available_networks``, ``networks.available_network_aliases``,
``networks.list_available_networks()``, ``networks.originals`` (None); ``lora.loaded_loras``,
``lora.available_loras``, ``lora.available_lora_aliases``, ``lora.list_available_loras()``. The lists are rebuilt by
the host, so writing to them (``lora.loaded_loras.clear()``) changes nothing in lora_ext, by design.
``networks.load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None)`` is real: it patches the
loaded model with exactly those LoRAs through lora_ext (Regional Prompter and LoRA Block Weight call it).
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

NAMES = ("networks", "lora")
MARK = "__lora_ext_compat__"


class NetworkInfo:
    """What the built-in's ``NetworkOnDisk`` / loaded ``Network`` objects expose that extensions read."""

    def __init__(
        self,
        entry: Any,
        mentioned_name: str | None = None,
        te: float = 1.0,
        unet: float = 1.0,
        dyn: Any = None,
    ):
        self.name = entry.name
        self.alias = entry.alias
        self.filename = entry.path
        self.metadata = entry.metadata
        self.is_safetensors = os.path.splitext(entry.path)[1].lower() == ".safetensors"
        self.sd_version = entry.arch
        self.mentioned_name = mentioned_name or entry.name
        self.te_multiplier = te
        self.unet_multiplier = unet
        self.dyn_dim = dyn
        self.multiplier = te

    def __repr__(self) -> str:
        return f"NetworkInfo({self.name!r})"


def _sync(host: Any, mods: dict[str, types.ModuleType]) -> None:
    weights = list(getattr(host.last, "weights", []))
    loaded = []
    for i, (req, entry, _) in enumerate(host.last.active):
        applied = weights[i] if i < len(weights) else req  # this pass's weights (hires: hr=)
        loaded.append(NetworkInfo(entry, req.name, applied.te, applied.unet, applied.dyn))
    available: dict[str, NetworkInfo] = {}
    aliases: dict[str, NetworkInfo] = {}
    library = host._library  # no scan just to mirror tables
    for entry in library.entries() if library is not None else []:
        info = NetworkInfo(entry)
        available[entry.name] = info
        aliases[entry.name] = info
        aliases.setdefault(entry.alias, info)
    networks, lora = mods.get("networks"), mods.get("lora")
    for module, loaded_name, available_name, alias_name in (
        (networks, "loaded_networks", "available_networks", "available_network_aliases"),
        (lora, "loaded_loras", "available_loras", "available_lora_aliases"),
    ):
        if module is None:
            continue
        getattr(module, loaded_name)[:] = loaded
        table = getattr(module, available_name)
        table.clear()
        table.update(available)
        table = getattr(module, alias_name)
        table.clear()
        table.update(aliases)


def install(host: Any) -> list[str]:
    """Insert the stand-ins whose names are free; returns the names installed."""
    mods: dict[str, types.ModuleType] = {}

    for name in NAMES:
        existing = sys.modules.get(name)
        if existing is not None and not getattr(existing, MARK, False):
            continue  # the built-in (or someone else) owns the name
        module = types.ModuleType(
            name, f"lora_ext read-only stand-in for the built-in Lora extension's {name!r}."
        )
        setattr(module, MARK, True)
        if name == "networks":
            module.loaded_networks = []
            module.available_networks = {}
            module.available_network_aliases = {}
            module.forbidden_network_aliases = {}
            module.list_available_networks = host.refresh
            module.load_networks = host.load_networks
            module.originals = None
        else:
            module.loaded_loras = []
            module.available_loras = {}
            module.available_lora_aliases = {}
            module.list_available_loras = host.refresh
        sys.modules[name] = module
        mods[name] = module
    if mods:
        hook = lambda h: _sync(h, mods)  # noqa: E731
        hook.compat_modules = mods  # type: ignore[attr-defined]
        host.hooks.append(hook)
        _sync(host, mods)
    return list(mods)


def uninstall(host: Any) -> None:
    """Remove our stand-ins (script unload / UI reload) and their sync hook."""
    for hook in [h for h in host.hooks if hasattr(h, "compat_modules")]:
        for name, module in hook.compat_modules.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
        host.hooks.remove(hook)
