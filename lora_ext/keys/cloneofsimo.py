"""cloneofsimo ``lora`` positional files (FORMATS.md §3 row 26, §10.12): no module names, only an order.

``.pt``: a list ``[up0, down0, up1, down1, …]`` (read as keys "0", "1", …) for one model part. safeloras
``.safetensors``: keys ``unet:<i>:up|down`` / ``text_encoder:<i>:up|down``. The order is cloneofsimo's traversal:
``model.modules()``, and inside each target-class module (diffusers ``Attention``/``GEGLU``, HF ``CLIPAttention``)
its Linear children in registration order: ``to_q, to_k, to_v, to_out.0`` / GEGLU ``proj``; CLIP ``k, v, q, out``.
We rebuild that order from canonical names, so compvis/OpenCLIP trees get the same order. Scale is baked in (s = 1).
"""

from __future__ import annotations

import re

from lora_ext.adapters import LayerAdapter, LoraFile, ResolvedLora, Target
from lora_ext.keys.tables import CLONEOFSIMO_TE_ORDER, CLONEOFSIMO_UNET_ORDER
from lora_ext.keys.target_index import TargetIndex

_SAFELORA_KEY = re.compile(r"^(unet|text_encoder|text_encoder_2):(\d+):(up|down)$")
_SAFELORA_COMPONENT = {"unet": "unet", "text_encoder": "te1", "text_encoder_2": "te2"}
_UNET_TARGET = re.compile(
    r"^(down_blocks|up_blocks|mid_block)(?:\.(\d+))?\.attentions\.(\d+)\.transformer_blocks\.(\d+)\."
    r"(attn1|attn2|ff)\.(to_q|to_k|to_v|to_out\.0|net\.0\.proj)$"
)
_TE_TARGET = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.self_attn\.(k_proj|v_proj|q_proj|out_proj)$")
_GROUP_ORDER = {"down_blocks": 0, "up_blocks": 1, "mid_block": 2}
_SUB_ORDER = {"attn1": 0, "attn2": 1, "ff": 2}
_PROJ_ORDER = {**{p: i for i, p in enumerate(CLONEOFSIMO_UNET_ORDER)}, "net.0.proj": 0}


def is_positional(file: LoraFile) -> bool:
    """True for a cloneofsimo list (all keys are integers) or a safeloras file."""
    keys = list(file.tensors)
    if not keys:
        return False
    return all(k.isdigit() for k in keys) or all(_SAFELORA_KEY.match(k) for k in keys)


def positional_order(index: TargetIndex, component: str) -> list[Target]:
    """The targets of ``component`` in cloneofsimo's order."""
    ranked = []
    for target in index.by_component(component):
        if component == "unet":
            m = _UNET_TARGET.match(target.canonical)
            if m:
                group, block, attn, tblock, sub, proj = m.groups()
                key = (
                    _GROUP_ORDER[group],
                    int(block or 0),
                    int(attn),
                    int(tblock),
                    _SUB_ORDER[sub],
                    _PROJ_ORDER[proj],
                )
                ranked.append((key, target))
        else:
            m = _TE_TARGET.match(target.canonical)
            if m:
                ranked.append(((int(m.group(1)), CLONEOFSIMO_TE_ORDER.index(m.group(2))), target))
    ranked.sort(key=lambda item: item[0])
    return [t for _, t in ranked]


def resolve_positional(file: LoraFile, index: TargetIndex, result: ResolvedLora) -> None:
    """Fill ``result.layers`` from a positional file; keys that do not fit go to ``result.unmatched``."""
    if all(k.isdigit() for k in file.tensors):
        n = len(file.tensors)
        pairs = [(str(2 * i), str(2 * i + 1)) for i in range(n // 2)]
        if n % 2:
            result.unmatched.append(str(n - 1))
        for component in ("unet", "te1", "te2"):
            order = positional_order(index, component)
            if len(order) == len(pairs) and _shapes_fit(file, pairs, order):
                _assign(file, pairs, order, result)
                return
        result.unmatched.extend(k for pair in pairs for k in pair)
        return
    by_component: dict[str, dict[int, dict[str, str]]] = {}
    for key in file.tensors:
        name, i, part = _SAFELORA_KEY.match(key).groups()
        by_component.setdefault(name, {}).setdefault(int(i), {})[part] = key
    for name, entries in by_component.items():
        order = positional_order(index, _SAFELORA_COMPONENT[name])
        pairs = []
        for i in sorted(entries):
            entry = entries[i]
            if "up" in entry and "down" in entry and i < len(order):
                pairs.append((entry["up"], entry["down"]))
            else:
                result.unmatched.extend(entry.values())
        targets = [
            order[i]
            for i in sorted(entries)
            if "up" in entries[i] and "down" in entries[i] and i < len(order)
        ]
        if len(order) == len(entries) and _shapes_fit(file, pairs, targets):
            _assign(file, pairs, targets, result)
        else:
            result.unmatched.extend(k for pair in pairs for k in pair)


def _shapes_fit(file: LoraFile, pairs: list[tuple[str, str]], order: list[Target]) -> bool:
    for (up, down), target in zip(pairs, order, strict=True):
        u, d = file.tensors[up], file.tensors[down]
        weight = getattr(target.module, target.weight, None)
        if weight is None or u.dim() < 2 or d.dim() < 2:
            return False
        rows = weight.shape[0] if target.rows is None else target.rows[1] - target.rows[0]
        if u.shape[0] != rows or d.shape[1] != weight.shape[1]:
            return False
    return True


def _assign(file: LoraFile, pairs: list[tuple[str, str]], order: list[Target], result: ResolvedLora) -> None:
    for (up, down), target in zip(pairs, order, strict=True):
        tensors = {"up": file.tensors[up], "down": file.tensors[down]}
        result.layers[target] = LayerAdapter(algo="lora", tensors=tensors, alpha=None, keys=(up, down))
