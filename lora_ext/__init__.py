"""lora_ext: a LoRA loader for AUTOMATIC1111, diffusers pipelines and a standalone app.

Layers point down only: syntax and library -> engine (formats, keys, algorithms, patcher) -> hosts -> UI.
The core (everything outside ``lora_ext.hosts`` and ``lora_ext.ui``) imports only torch, safetensors, numpy
and pillow. Nothing here imports ``modules.*`` at import time.
"""

__version__ = "0.1.0"
