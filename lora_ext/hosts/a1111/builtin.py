"""The webui's built-in Lora extension (``extensions-builtin/Lora``): is it active, and how to turn it off.

lora_ext replaces it. While it is active, it wins the ``lora`` tag (its ``on_before_ui`` runs after ours,
A1111_CONTRACT §2), so we do not register the tag, the page or its setting keys, and tell the user how to disable it
(§1.1: by directory name in ``opts.disabled_extensions``, effective after a restart).
"""

from __future__ import annotations

BUILTIN_DIR = "Lora"

DISABLE_HINT = (
    "The webui's built-in Lora extension is still enabled, so it handles <lora:…> tags and lora_ext stays "
    "passive. Disable it in Extensions > Installed (untick 'Lora'), or use the button in the LoRA tab, then restart."
)


def builtin_active() -> bool:
    """True when ``extensions-builtin/Lora`` is present and enabled (not disabled by name or by the global switch)."""
    from modules import extensions

    return any(
        getattr(ext, "is_builtin", False) and getattr(ext, "canonical_name", ext.name.lower()) == "lora"
        for ext in extensions.active()
    )


def disable_builtin() -> str:
    """Add the built-in to ``opts.disabled_extensions`` and save the settings; takes effect after a restart."""
    from modules import shared

    disabled = list(shared.opts.disabled_extensions or [])
    if BUILTIN_DIR not in disabled:
        disabled.append(BUILTIN_DIR)
    shared.opts.disabled_extensions = disabled
    save = getattr(shared.opts, "save", None)
    config = getattr(shared, "config_filename", None)
    if callable(save) and config:
        save(config)
    return "The built-in Lora extension is disabled from the next start. Restart the webui to use lora_ext."
