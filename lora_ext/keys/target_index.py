"""``TargetIndex``: every patchable layer of a model, findable under every name a LoRA file may use.

Each Linear, Conv2d, GroupNorm, LayerNorm and MultiheadAttention (as q/k/v row slices of ``in_proj_weight``; its
``out_proj`` is a Linear) becomes a ``Target`` with a canonical name (diffusers UNet path / HF CLIP path). Aliases
(canonical, native, compvis<->diffusers counterpart, with and without ``text_model.``) are stored flattened with
``_`` so kohya keys and dotted keys look up the same table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from lora_ext.adapters import Target
from lora_ext.keys.model_parts import ModelParts
from lora_ext.keys.tables import (
    MHA_SLICES,
    OPENCLIP_CHILDREN,
    OPENCLIP_FLAT_TO_HF,
    OPENCLIP_TOP_LEVEL,
    UNET_FLAT_STRIP,
    unet_block,
)
from lora_ext.keys.unet_map import block_pairs, translate, unet_layout

_PATCHABLE = (nn.Linear, nn.Conv2d, nn.GroupNorm, nn.LayerNorm, nn.MultiheadAttention)
_HF_TAIL = re.compile(r"(?:^|\.)(?:text_model\.)?((?:encoder|embeddings|final_layer_norm)(?:\..*)?)$")
_OPENCLIP_LAYER = re.compile(r"(?:^|\.)transformer\.resblocks\.(\d+)\.(.+)$")
_OPENCLIP_NATIVE = tuple((re.compile(p), r) for p, r in OPENCLIP_FLAT_TO_HF)


def flat(name: str) -> str:
    """A module path in the kohya spelling: every ``.`` replaced by ``_``."""
    return name.replace(".", "_")


def text_encoder_layout(root: nn.Module) -> str:
    """ "openclip" (``transformer.resblocks.N`` with fused attention) or "hf_clip"."""
    for path, _ in root.named_modules():
        if ".resblocks." in f".{path}." or path.startswith("resblocks."):
            return "openclip"
    return "hf_clip"


@dataclass
class TargetIndex:
    """All targets of one ``ModelParts`` plus alias tables.

    targets: every target, in ``named_modules()`` order per component.
    aliases: component -> flattened alias -> target.
    layouts: component -> "diffusers" | "compvis" | "hf_clip" | "openclip" | "unknown".
    """

    parts: ModelParts
    targets: list[Target] = field(default_factory=list)
    aliases: dict[str, dict[str, Target]] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, parts: ModelParts) -> TargetIndex:
        """Walk every part of ``parts`` and register each patchable module under all its names."""
        index = cls(parts=parts)
        for component, root in parts.modules().items():
            index.aliases[component] = {}
            if component == "unet":
                index._add_unet(root)
            else:
                index._add_text_encoder(component, root)
        return index

    def components(self) -> list[str]:
        """Components present in the model."""
        return list(self.aliases)

    def by_component(self, component: str) -> list[Target]:
        """Targets of one component in module order."""
        return [t for t in self.targets if t.component == component]

    def lookup(self, component: str, module: str) -> Target | None:
        """The target named ``module`` (dotted or flattened, any supported convention) in ``component``."""
        table = self.aliases.get(component)
        if table is None:
            return None
        name = flat(module)
        hit = table.get(name)
        if hit is None and component == "unet":
            for prefix in UNET_FLAT_STRIP:
                if name.startswith(prefix):
                    hit = table.get(name[len(prefix) :])
                    break
        elif hit is None:  # OpenCLIP-native names, on HF and OpenCLIP trees alike
            for pattern, replacement in _OPENCLIP_NATIVE:
                hf_name, count = pattern.subn(replacement, name)
                if count:
                    return table.get(hf_name)
        return hit

    def _register(self, component: str, target: Target, names: list[str]) -> None:
        self.targets.append(target)
        table = self.aliases[component]
        for name in names:
            if name is None:
                continue
            for variant in (name, *(_alias_variants(name))):
                table.setdefault(flat(variant), target)

    def _add_unet(self, root: nn.Module) -> None:
        layout = unet_layout(root)
        self.layouts["unet"] = layout
        pairs = block_pairs(root)
        for path, module in root.named_modules():
            if not isinstance(module, _PATCHABLE) or isinstance(module, nn.MultiheadAttention):
                continue
            if layout == "diffusers":
                canonical, other = path, translate(path, pairs, to_compvis=True)
            elif layout == "compvis":
                other = translate(path, pairs, to_compvis=False)
                canonical = other or path
            else:
                canonical, other = path, None
            compvis = path if layout == "compvis" else other
            target = Target(
                component="unet",
                path=path,
                canonical=canonical,
                module=module,
                block=unet_block(compvis or ""),
            )
            self._register("unet", target, [canonical, path, other])

    def _add_text_encoder(self, component: str, root: nn.Module) -> None:
        layout = text_encoder_layout(root)
        self.layouts[component] = layout
        for path, module in root.named_modules():
            if not isinstance(module, _PATCHABLE):
                continue
            if layout == "hf_clip":
                match = _HF_TAIL.search(path)
                canonical = f"text_model.{match.group(1)}" if match else path
                target = Target(
                    component=component, path=path, canonical=canonical, module=module, block="BASE"
                )
                self._register(component, target, [canonical, path])
                continue
            if isinstance(module, nn.MultiheadAttention):
                self._add_mha(component, path, module)
                continue
            canonical = _openclip_canonical(path)
            target = Target(
                component=component, path=path, canonical=canonical or path, module=module, block="BASE"
            )
            self._register(component, target, [canonical, path])

    def _add_mha(self, component: str, path: str, module: nn.MultiheadAttention) -> None:
        match = _OPENCLIP_LAYER.search(path)
        d = module.embed_dim
        for i, proj in enumerate(MHA_SLICES):
            if match and match.group(2) == "attn":
                canonical = f"text_model.encoder.layers.{match.group(1)}.self_attn.{proj}"
            else:
                canonical = f"{path}.{proj}"
            target = Target(
                component=component,
                path=path,
                canonical=canonical,
                weight="in_proj_weight",
                bias="in_proj_bias",
                rows=(i * d, (i + 1) * d),
                module=module,
                block="BASE",
            )
            self._register(component, target, [canonical])


def _openclip_canonical(path: str) -> str | None:
    """HF CLIP name of an OpenCLIP text-tower module path, or None."""
    match = _OPENCLIP_LAYER.search(path)
    if match:
        layer, rest = match.groups()
        for src, dst in OPENCLIP_CHILDREN.items():
            if rest == src:
                return f"text_model.encoder.layers.{layer}.{dst}"
        return None
    tail = path.rsplit(".", 1)[-1] if "." in path else path
    for src, dst in OPENCLIP_TOP_LEVEL.items():
        if path == src or path.endswith("." + src) or tail == src:
            return f"text_model.{dst}"
    return None


def _alias_variants(name: str) -> list[str]:
    """Spelling variants of one name: without ``text_model.``; ``to_out`` for ``to_out.0``."""
    out = []
    if name.startswith("text_model."):
        out.append(name[len("text_model.") :])
    if name.endswith(".to_out.0"):
        out.append(name[: -len(".0")])
    return out
