"""``python -m lora_ext demo | app | generate | inspect`` (see ``lora_ext.cli``)."""

import sys

from lora_ext.cli import main

sys.exit(main())
