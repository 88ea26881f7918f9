"""Key conventions -> target layers of a loaded model (FORMATS.md §3, §6–§8).

Public API: ``ModelParts`` (and ``ModelParts.from_diffusers``), ``TargetIndex.build(parts)``,
``resolve(file, index, name) -> ResolvedLora``. Conventions are data in ``keys.tables``; ``keys.resolver`` is the
one resolver.
"""

from lora_ext.keys.model_parts import ModelParts
from lora_ext.keys.resolver import resolve
from lora_ext.keys.target_index import TargetIndex

__all__ = ["ModelParts", "TargetIndex", "resolve"]
