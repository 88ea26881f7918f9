"""File readers: safetensors headers and LoRA files (safetensors, weights-only pickles).

Public API: ``read_lora_file(path) -> LoraFile | Problem`` and
``read_safetensors_header(path) -> SafetensorsHeader | Problem``.
"""

from lora_ext.formats.lora_file import read_lora_file
from lora_ext.formats.safetensors_header import SafetensorsHeader, read_safetensors_header

__all__ = ["SafetensorsHeader", "read_lora_file", "read_safetensors_header"]
