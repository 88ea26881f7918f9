"""compvis (LDM/SGM) <-> diffusers UNet module names, derived from the model's actual block structure.

FORMATS.md §7: the block-index rules depend on layers per block, which levels have attention and which have
down/upsamplers, so they are read from the loaded UNet instead of being hard-coded (tiny test UNets with one layer
per block and real SD1/SDXL both map right). Child renames come from ``tables``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lora_ext.keys.tables import RESNET_CHILDREN, UNET_TOP_LEVEL


@dataclass(frozen=True)
class BlockPair:
    """One block known under both names. kind: "resnet", "attn", "down", "up" or "exact" (a leaf module)."""

    diffusers: str
    compvis: str
    kind: str


def unet_layout(unet: nn.Module) -> str:
    """ "diffusers" (``down_blocks``), "compvis" (``input_blocks``) or "unknown"."""
    if hasattr(unet, "down_blocks") and hasattr(unet, "up_blocks"):
        return "diffusers"
    if hasattr(unet, "input_blocks") and hasattr(unet, "output_blocks"):
        return "compvis"
    return "unknown"


def block_pairs(unet: nn.Module) -> list[BlockPair]:
    """All block pairs of ``unet`` (either layout); empty for an unknown layout."""
    layout = unet_layout(unet)
    if layout == "diffusers":
        pairs = _pairs_from_diffusers(unet)
    elif layout == "compvis":
        pairs = _pairs_from_compvis(unet)
    else:
        return []
    pairs.extend(BlockPair(d, c, "exact") for d, c in UNET_TOP_LEVEL.items())
    return pairs


def _pairs_from_diffusers(unet: nn.Module) -> list[BlockPair]:
    pairs: list[BlockPair] = []
    k = 1
    for i, block in enumerate(unet.down_blocks):
        attentions = getattr(block, "attentions", None) or []
        for j in range(len(block.resnets)):
            pairs.append(BlockPair(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{k}.0", "resnet"))
            if j < len(attentions):
                pairs.append(BlockPair(f"down_blocks.{i}.attentions.{j}", f"input_blocks.{k}.1", "attn"))
            k += 1
        if getattr(block, "downsamplers", None):
            pairs.append(BlockPair(f"down_blocks.{i}.downsamplers.0", f"input_blocks.{k}.0", "down"))
            k += 1
    mid = getattr(unet, "mid_block", None)
    if mid is not None:
        mid_attn = getattr(mid, "attentions", None) or []
        index = 0
        for j in range(len(mid.resnets)):
            pairs.append(BlockPair(f"mid_block.resnets.{j}", f"middle_block.{index}", "resnet"))
            index += 1
            if j < len(mid_attn):
                pairs.append(BlockPair(f"mid_block.attentions.{j}", f"middle_block.{index}", "attn"))
                index += 1
    k = 0
    for i, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None) or []
        n = len(block.resnets)
        for j in range(n):
            pairs.append(BlockPair(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{k}.0", "resnet"))
            if j < len(attentions):
                pairs.append(BlockPair(f"up_blocks.{i}.attentions.{j}", f"output_blocks.{k}.1", "attn"))
            if j == n - 1 and getattr(block, "upsamplers", None):
                child = 2 if j < len(attentions) else 1  # SD1 up_blocks.0 (no attention): ".1.conv"
                pairs.append(BlockPair(f"up_blocks.{i}.upsamplers.0", f"output_blocks.{k}.{child}", "up"))
            k += 1
    return pairs


def _kind(module: nn.Module) -> str:
    name = type(module).__name__
    if name == "Downsample" or hasattr(module, "op"):
        return "down"
    if name == "Upsample":
        return "up"
    if hasattr(module, "transformer_blocks"):
        return "attn"
    if hasattr(module, "in_layers"):
        return "resnet"
    return "other"


def _pairs_from_compvis(unet: nn.Module) -> list[BlockPair]:
    pairs: list[BlockPair] = []
    level, j = 0, 0
    for k in range(1, len(unet.input_blocks)):
        block = unet.input_blocks[k]
        children = list(block.children()) if isinstance(block, nn.Sequential) else [block]
        if children and _kind(children[0]) == "down":
            pairs.append(BlockPair(f"down_blocks.{level}.downsamplers.0", f"input_blocks.{k}.0", "down"))
            level, j = level + 1, 0
            continue
        for c, child in enumerate(children):
            kind = _kind(child)
            if kind == "resnet":
                pairs.append(BlockPair(f"down_blocks.{level}.resnets.{j}", f"input_blocks.{k}.{c}", "resnet"))
            elif kind == "attn":
                pairs.append(
                    BlockPair(f"down_blocks.{level}.attentions.{j}", f"input_blocks.{k}.{c}", "attn")
                )
        j += 1
    counters = {"resnet": 0, "attn": 0}
    for c, child in enumerate(unet.middle_block.children()):
        kind = _kind(child)
        if kind in counters:
            sub = "resnets" if kind == "resnet" else "attentions"
            pairs.append(BlockPair(f"mid_block.{sub}.{counters[kind]}", f"middle_block.{c}", kind))
            counters[kind] += 1
    level, j = 0, 0
    for k, block in enumerate(unet.output_blocks):
        children = list(block.children()) if isinstance(block, nn.Sequential) else [block]
        upsampled = False
        for c, child in enumerate(children):
            kind = _kind(child)
            if kind == "resnet":
                pairs.append(BlockPair(f"up_blocks.{level}.resnets.{j}", f"output_blocks.{k}.{c}", "resnet"))
            elif kind == "attn":
                pairs.append(BlockPair(f"up_blocks.{level}.attentions.{j}", f"output_blocks.{k}.{c}", "attn"))
            elif kind == "up":
                pairs.append(BlockPair(f"up_blocks.{level}.upsamplers.0", f"output_blocks.{k}.{c}", "up"))
                upsampled = True
        if upsampled:
            level, j = level + 1, 0
        else:
            j += 1
    return pairs


_SAMPLER_CHILD = {"down": ("conv", "op"), "up": ("conv", "conv")}


def _translate_child(rest: str, kind: str, to_compvis: bool) -> str | None:
    if kind == "attn":
        return rest
    if kind == "resnet":
        table = RESNET_CHILDREN if to_compvis else {v: k for k, v in RESNET_CHILDREN.items()}
        for src, dst in table.items():
            if rest == src or rest.startswith(src + "."):
                return dst + rest[len(src) :]
        return None
    if kind in _SAMPLER_CHILD:
        d_name, c_name = _SAMPLER_CHILD[kind]
        src, dst = (d_name, c_name) if to_compvis else (c_name, d_name)
        if rest == src or rest.startswith(src + "."):
            return dst + rest[len(src) :]
        return None
    return None


def translate(path: str, pairs: list[BlockPair], to_compvis: bool) -> str | None:
    """Translate a module path to the other layout, or None when it has no counterpart."""
    for pair in pairs:
        src, dst = (pair.diffusers, pair.compvis) if to_compvis else (pair.compvis, pair.diffusers)
        if pair.kind == "exact":
            if path == src:
                return dst
            continue
        if path.startswith(src + "."):
            rest = _translate_child(path[len(src) + 1 :], pair.kind, to_compvis)
            return None if rest is None else f"{dst}.{rest}"
    return None
