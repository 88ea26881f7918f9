"""Connect lora_ext to the webui: called once per script load by ``scripts/lora_ext_script.py``.

``setup()`` runs at import time of the script file (A1111_CONTRACT §1.2): it creates the ``A1111Host``, registers
the settings (§7) and the callbacks, and returns the ``Script`` class for the script module to keep. Extra network
and page are registered in ``on_before_ui`` because the webui wipes both registries after scripts load (§2).
Module-level state here (the current host) is allowed: this is the host adapter.
"""

from __future__ import annotations

import os

from lora_ext.hosts.a1111 import api, builtin, compat, messages, network, page, paste, settings, tab
from lora_ext.hosts.a1111.host import A1111Host

#: The host of the current script load (a UI reload creates a new one after restoring the old one's model).
current_host: A1111Host | None = None


def lora_roots() -> list[str]:
    """``--lora-dir`` and ``--lyco-dir-backcompat`` from the built-in's preload (never redefined here, §1.4)."""
    from modules import paths, shared

    opts = shared.cmd_opts
    lora_dir = getattr(opts, "lora_dir", None) or os.path.join(
        getattr(paths, "models_path", "models"), "Lora"
    )
    roots = [lora_dir]
    lyco = getattr(opts, "lyco_dir_backcompat", None)
    if lyco and os.path.abspath(lyco) != os.path.abspath(lora_dir):
        roots.append(lyco)
    os.makedirs(lora_dir, exist_ok=True)
    return roots


def library_cache_path() -> str | None:
    """The library cache file in the webui's cache folder (``modules.cache.cache_dir``: ``SD_WEBUI_CACHE_DIR`` or
    ``<data_path>/cache`` in v1.10.1), or None for the library default (beside the first LoRA folder)."""
    from modules import paths

    cache_dir = None
    try:
        from modules import cache

        cache_dir = getattr(cache, "cache_dir", None)
    except ImportError:  # older webuis have no modules.cache
        pass
    if not cache_dir and getattr(paths, "data_path", None):
        cache_dir = os.path.join(paths.data_path, "cache")
    if not cache_dir:
        return None
    return os.path.join(cache_dir, "lora_ext", "library.json")


def make_library():
    from modules import shared

    from lora_ext.hosts.a1111.library import WebuiLibrary

    return WebuiLibrary(
        lora_roots(),
        cache_path=library_cache_path(),
        hidden=str(getattr(shared.opts, "extra_networks_hidden_models", "When searched")),
        list_hidden=bool(getattr(shared.opts, "list_hidden_files", True)),
        preview_extension=getattr(shared.opts, "samples_format", None),
    )


def follow_option(opts, key: str, func) -> None:
    """Call ``func()`` when option ``key`` changes, keeping any handler already registered (``opts.onchange``
    replaces it) and calling nothing now.

    The option belongs to the webui and outlives a UI reload, so the handler an earlier script load of ours put
    there is replaced, not chained: chaining kept every earlier host (and its parsed LoRAs) alive.
    """
    info = getattr(opts, "data_labels", {}).get(key)
    if info is None:
        return
    previous = getattr(info, "onchange", None)
    previous = getattr(previous, "lora_ext_previous", previous)

    def changed() -> None:
        func()
        if previous is not None:
            previous()

    changed.lora_ext_previous = previous  # type: ignore[attr-defined]
    opts.onchange(key, changed, call=False)


def setup() -> type:
    """Create the host, register settings and callbacks; return the always-visible ``Script`` class."""
    global current_host
    from modules import script_callbacks, shared

    if current_host is not None:
        current_host.restore_all(release_memory=True)
    host = A1111Host(make_library)
    current_host = host
    builtin_is_active = builtin.builtin_active()
    settings.register(host, builtin_is_active)
    if builtin_is_active:
        messages.console(builtin.DISABLE_HINT)
    else:
        shared.opts.onchange("lora_in_memory_limit", lambda: settings.cache_size(host))
        shared.opts.onchange("lora_ext_patch_strategy", lambda: settings.patch_strategy(host))
        follow_option(shared.opts, "list_hidden_files", host.reset_library)
        # step schedules (USERS G4, G6): a public per-step callback, so nothing depends on sampler internals (G9)
        script_callbacks.on_cfg_denoiser(host.on_step, name="lora_ext")

    def before_ui() -> None:
        if builtin_is_active:
            return
        from modules import extra_networks, ui_extra_networks

        lora_network = network.make_extra_network(host)
        extra_networks.register_extra_network(lora_network)
        extra_networks.register_extra_network_alias(lora_network, "lyco")
        ui_extra_networks.register_page(page.make_page(host))
        compat.install(host)

    def script_unloaded() -> None:
        host.restore_all(release_memory=True)
        host.loader.invalidate()  # this host is done: its parsed LoRAs are not needed by the next one
        compat.uninstall(host)

    script_callbacks.on_before_ui(before_ui, name="lora_ext")
    script_callbacks.on_model_loaded(host.model_loaded, name="lora_ext")
    script_callbacks.on_before_reload(lambda: host.restore_all(release_memory=True), name="lora_ext")
    script_callbacks.on_script_unloaded(script_unloaded, name="lora_ext")
    if not builtin_is_active:  # the built-in remaps pasted hashes itself; twice would be wrong
        script_callbacks.on_infotext_pasted(
            lambda infotext, params: paste.infotext_pasted(host, infotext, params), name="lora_ext"
        )
    script_callbacks.on_app_started(
        lambda demo, app: api.register_routes(host, app, builtin_is_active), name="lora_ext"
    )
    script_callbacks.on_ui_tabs(lambda: tab.ui_tabs(host, builtin_is_active), name="lora_ext")
    return network.make_script_class(host)
