"""The AUTOMATIC1111 v1.10 host (shared/docs/A1111_CONTRACT.md): the only code that imports ``modules.*``.

Every ``modules`` import happens inside a function, at call time. ``scripts/lora_ext_script.py`` calls
``lora_ext.hosts.a1111.wiring.setup()`` and keeps the ``Script`` class it returns; everything else hangs off one
``A1111Host`` object (``host.py``) that wiring creates and keeps for the life of the process.
"""
