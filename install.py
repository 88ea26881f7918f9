"""Run by AUTOMATIC1111 in a subprocess at startup (A1111_CONTRACT §1.5). lora_ext needs nothing the webui does
not already ship (torch, safetensors, numpy, pillow, gradio), so this only checks and reports."""

import importlib.util
import sys

REQUIRED = ("torch", "safetensors", "numpy", "PIL", "gradio")

missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
if missing:
    print(
        f"[lora_ext] missing packages the webui normally provides: {', '.join(missing)}; reinstall the webui's venv."
    )
    sys.exit(1)
print("[lora_ext] nothing to install; everything lora_ext needs comes with the webui.")
