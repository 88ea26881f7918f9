"""Fake ``modules.script_callbacks`` (A1111_CONTRACT.md §6, §2).

Faithful where tests depend on it: ``clear_callbacks()``; ``before_ui`` and ``script_unloaded`` run in REVERSE
registration order (§2); exceptions in callbacks are reported through ``modules.errors.report``, never raised.
"""

from __future__ import annotations

import sys
from collections import namedtuple

from modules import errors

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback", "name"])


class CFGDenoiserParams:
    """§6 ``on_cfg_denoiser``: what the webui's ``CFGDenoiser.forward`` passes before each denoising step (v1.10.1
    field names and order: ``x``, ``image_cond``, ``sigma``, ``sampling_step`` = ``state.sampling_step``,
    ``total_sampling_steps`` = ``state.sampling_steps`` (the steps of the pass being sampled, hires counted on its
    own), ``text_cond``, ``text_uncond``, ``denoiser``)."""

    def __init__(
        self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None
    ):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


_CATEGORIES = (
    "callbacks_app_started",
    "callbacks_app_reload",
    "callbacks_model_loaded",
    "callbacks_ui_tabs",
    "callbacks_ui_train_tabs",
    "callbacks_ui_settings",
    "callbacks_before_image_saved",
    "callbacks_image_saved",
    "callbacks_infotext_pasted",
    "callbacks_script_unloaded",
    "callbacks_before_ui",
    "callbacks_on_reload",
    "callbacks_list_optimizers",
    "callbacks_list_unets",
    "callbacks_before_token_counter",
    "callbacks_cfg_denoiser",
    "callbacks_cfg_denoised",
    "callbacks_cfg_after_cfg",
)

callback_map: dict[str, list[ScriptCallback]] = {c: [] for c in _CATEGORIES}


def clear_callbacks():
    """§1.2: called at the start of every ``scripts.load_scripts``."""
    for callback_list in callback_map.values():
        callback_list.clear()


def _add_callback(category, fun, *, name=None):
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    filename = frame.f_code.co_filename if frame is not None else "unknown file"
    callback_map[category].append(ScriptCallback(filename, fun, name or f"{filename}/{category}"))


def _run(category, *args, reverse=False):
    items = list(callback_map[category])
    if reverse:
        items = list(reversed(items))
    results = []
    for c in items:
        try:
            results.append(c.callback(*args))
        except Exception as e:  # §6: reported, not raised
            errors.report(f"Error executing callback {c.name}: {e}", exc_info=True)
    return results


# --- invokers (called by the webui) ------------------------------------------------------------------------------
def app_started_callback(demo, app):
    _run("callbacks_app_started", demo, app)


def app_reload_callback():
    """§2 UI reload (``webui.py`` calls it first): runs what ``on_before_reload`` registered (the real map key is
    ``callbacks_on_reload``; there is no separate ``before_reload_callback``)."""
    _run("callbacks_on_reload")


def model_loaded_callback(sd_model):
    _run("callbacks_model_loaded", sd_model)


def ui_tabs_callback():
    res = []
    for r in _run("callbacks_ui_tabs"):
        res += r or []
    return res


def ui_settings_callback():
    _run("callbacks_ui_settings")


def infotext_pasted_callback(infotext, params):
    _run("callbacks_infotext_pasted", infotext, params)


def script_unloaded_callback():
    _run("callbacks_script_unloaded", reverse=True)


def before_ui_callback():
    _run("callbacks_before_ui", reverse=True)


def cfg_denoiser_callback(params):
    """§6: called by the sampler once per denoising step, before the UNet forward (``CFGDenoiserParams``)."""
    _run("callbacks_cfg_denoiser", params)


# --- registration (called by extensions), all ``(callback, *, name=None)`` ----------------------------------------
def on_app_started(callback, *, name=None):
    _add_callback("callbacks_app_started", callback, name=name)


def on_before_reload(callback, *, name=None):
    _add_callback("callbacks_on_reload", callback, name=name)


def on_model_loaded(callback, *, name=None):
    _add_callback("callbacks_model_loaded", callback, name=name)


def on_ui_tabs(callback, *, name=None):
    _add_callback("callbacks_ui_tabs", callback, name=name)


def on_ui_train_tabs(callback, *, name=None):
    _add_callback("callbacks_ui_train_tabs", callback, name=name)


def on_ui_settings(callback, *, name=None):
    _add_callback("callbacks_ui_settings", callback, name=name)


def on_before_image_saved(callback, *, name=None):
    _add_callback("callbacks_before_image_saved", callback, name=name)


def on_image_saved(callback, *, name=None):
    _add_callback("callbacks_image_saved", callback, name=name)


def on_infotext_pasted(callback, *, name=None):
    _add_callback("callbacks_infotext_pasted", callback, name=name)


def on_script_unloaded(callback, *, name=None):
    _add_callback("callbacks_script_unloaded", callback, name=name)


def on_before_ui(callback, *, name=None):
    _add_callback("callbacks_before_ui", callback, name=name)


def on_list_optimizers(callback, *, name=None):
    _add_callback("callbacks_list_optimizers", callback, name=name)


def on_list_unets(callback, *, name=None):
    _add_callback("callbacks_list_unets", callback, name=name)


def on_before_token_counter(callback, *, name=None):
    _add_callback("callbacks_before_token_counter", callback, name=name)


def on_cfg_denoiser(callback, *, name=None):
    _add_callback("callbacks_cfg_denoiser", callback, name=name)


def on_cfg_denoised(callback, *, name=None):
    _add_callback("callbacks_cfg_denoised", callback, name=name)


def on_cfg_after_cfg(callback, *, name=None):
    _add_callback("callbacks_cfg_after_cfg", callback, name=name)
