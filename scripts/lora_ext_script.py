"""lora_ext inside AUTOMATIC1111: wiring only; all logic lives in the ``lora_ext`` package.

The webui imports this file by path with the extension root on ``sys.path`` (A1111_CONTRACT §1.2). ``setup()``
registers settings and callbacks and returns the always-visible Script class, kept here under its own name (the
base class is never imported into this namespace: the webui would register it too).
"""

from lora_ext.hosts.a1111 import wiring

LoraExtScript = wiring.setup()
