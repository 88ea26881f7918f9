"""Alpha from diffusers ``lora_adapter_metadata`` or a PEFT ``adapter_config.json`` (FORMATS.md §4, §10.3).

Used only for modules without an ``.alpha`` tensor. PEFT's own loader infers a "most common alpha" for modules
without one (FORMATS.md §11); we do not: a module gets α from its config or none at all.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

#: component -> diffusers metadata prefix.
_METADATA_PREFIX = {"unet": "unet", "te1": "text_encoder", "te2": "text_encoder_2"}


@dataclass
class AdapterConfig:
    """The alpha-relevant fields of one PEFT ``LoraConfig``."""

    lora_alpha: float | None = None
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    use_rslora: bool = False

    def alpha_for(self, module: str, rank: int) -> float | None:
        """α for a dotted module path with the given tensor rank, such that α / rank is PEFT's scaling."""
        alpha = self.lora_alpha
        for pattern, value in self.alpha_pattern.items():
            try:
                if re.fullmatch(rf"(.*\.)?(?:{pattern})", module):
                    alpha = value
                    break
            except re.error:
                if module == pattern or module.endswith("." + pattern):
                    alpha = value
                    break
        if alpha is None:
            return None
        if self.use_rslora and rank > 0:
            return float(alpha) * math.sqrt(rank)  # PEFT scaling α/√r expressed as α'/r
        return float(alpha)


def configs_from_metadata(metadata: dict[str, str]) -> dict[str, AdapterConfig]:
    """component -> AdapterConfig from ``lora_adapter_metadata`` and/or ``adapter_config.json`` (metadata keys)."""
    out: dict[str, AdapterConfig] = {}
    packed = _json_object(metadata.get("lora_adapter_metadata"))
    if packed is not None:
        for component, prefix in _METADATA_PREFIX.items():
            fields = {k[len(prefix) + 1 :]: v for k, v in packed.items() if k.startswith(prefix + ".")}
            config = _config(fields)
            if config is not None:
                out[component] = config
    fields = _json_object(metadata.get("adapter_config.json"))
    config = _config(fields) if fields is not None else None
    if config is not None:
        for component in _METADATA_PREFIX:
            out.setdefault(component, config)
    return out


def _json_object(raw: str | None) -> dict | None:
    """``raw`` parsed as a JSON object; None when it is empty, not JSON or not an object."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _config(fields: dict) -> AdapterConfig | None:
    alpha = fields.get("lora_alpha")
    pattern = fields.get("alpha_pattern") or {}
    if alpha is None and not pattern:
        return None
    try:
        return AdapterConfig(
            lora_alpha=None if alpha is None else float(alpha),
            alpha_pattern={str(k): float(v) for k, v in dict(pattern).items()},
            use_rslora=bool(fields.get("use_rslora", False)),
        )
    except (TypeError, ValueError):
        return None
