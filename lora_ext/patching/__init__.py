"""Building blocks of ``lora_ext.patcher.Patcher``: the plan (which tensors, which contributions), the float32 math
per tensor (fused plain-LoRA products plus ``lora_ext.algorithms.layer_delta``), and the backup strategies.

Only the patcher uses these; nothing here holds state between calls.
"""
