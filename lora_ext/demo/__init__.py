"""Embedded default: tiny SD1/SD2/SDXL diffusers models and demo LoRA files for them.

Runtime code for hosts, the UI and the CLI; diffusers and transformers are imported lazily inside the builders.
"""

from lora_ext.demo.loras import DEMOS, write_demo_loras
from lora_ext.demo.tiny import (
    FAMILIES,
    build_tiny_pipeline,
    tiny_scheduler,
    tiny_text_encoders,
    tiny_tokenizer,
    tiny_unet,
    tiny_vae,
)

__all__ = [
    "DEMOS",
    "write_demo_loras",
    "FAMILIES",
    "build_tiny_pipeline",
    "tiny_scheduler",
    "tiny_text_encoders",
    "tiny_tokenizer",
    "tiny_unet",
    "tiny_vae",
]
