"""File readers: safetensors headers and LoRA files (safetensors, weights-only pickles).

Public API: ``read_lora_file(path) -> LoraFile | Problem`` and
``read_safetensors_header(path, validate=True) -> SafetensorsHeader | Problem``.
``read_lora_file`` is imported on first use, so header-only users (the library scan) do not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lora_ext.formats.safetensors_header import SafetensorsHeader, read_safetensors_header

if TYPE_CHECKING:
    from lora_ext.formats.lora_file import read_lora_file

__all__ = ["SafetensorsHeader", "read_lora_file", "read_safetensors_header"]


def __getattr__(name: str):
    if name == "read_lora_file":
        from lora_ext.formats.lora_file import read_lora_file

        return read_lora_file
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
