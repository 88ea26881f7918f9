"""Settings (A1111_CONTRACT §7, §7.1).

With the built-in disabled we register the SAME keys it used, with the same meanings and defaults, so a user's
config carries over, plus ours (``lora_ext_*``) in the same section. With the built-in active it registers its keys
itself; we add only ours. Registration happens at import time through ``options_templates`` like the built-in.
"""

from __future__ import annotations

from typing import Any

from lora_ext.patcher import STRATEGIES

SECTION = ("extra_networks", "Extra Networks")


def _builtin_options(host: Any) -> dict:
    import gradio as gr
    from modules import shared

    def lora_names() -> list[str]:
        try:
            return ["None", *sorted({e.name for e in host.library.entries()})]
        except Exception:
            return ["None"]

    return {
        "sd_lora": shared.OptionInfo(
            "None",
            "Add network to prompt",
            gr.Dropdown,
            lambda: {"choices": lora_names()},
            refresh=host.refresh,
        ),
        "lora_preferred_name": shared.OptionInfo(
            "Alias from file",
            "When adding to prompt, refer to Lora by",
            gr.Radio,
            {"choices": ["Alias from file", "Filename"]},
        ),
        "lora_add_hashes_to_infotext": shared.OptionInfo(True, "Add Lora hashes to infotext"),
        "lora_bundled_ti_to_infotext": shared.OptionInfo(
            True, "Add Lora name as TI hashes for bundled Textual Inversion"
        ).info('"Add Textual Inversion hashes to infotext" needs to be enabled'),
        "lora_show_all": shared.OptionInfo(False, "Always show all networks on the Lora page").info(
            "otherwise, those detected as for incompatible version of Stable Diffusion will be hidden"
        ),
        "lora_hide_unknown_for_versions": shared.OptionInfo(
            [],
            "Hide networks of unknown versions for model versions",
            gr.CheckboxGroup,
            {"choices": ["SD1", "SD2", "SDXL"]},
        ),
        "lora_in_memory_limit": shared.OptionInfo(
            0, "Number of Lora networks to keep cached in memory", gr.Number, {"precision": 0}
        ),
        "lora_not_found_warning_console": shared.OptionInfo(False, "Lora not found warning in console"),
        "lora_not_found_gradio_warning": shared.OptionInfo(False, "Lora not found warning popup in webui"),
    }


def _our_options() -> dict:
    import gradio as gr
    from modules import shared

    return {
        "lora_ext_hide_incompatible": shared.OptionInfo(
            False, "lora_ext: hide LoRAs made for another model version (otherwise shown with a badge)"
        ),
        "lora_ext_coverage_in_infotext": shared.OptionInfo(
            True, "lora_ext: write coverage problems (unmatched keys, wrong model version) under the image"
        ),
        "lora_ext_patch_strategy": shared.OptionInfo(
            "auto",
            "lora_ext: how the original weights are kept while a LoRA is applied",
            gr.Radio,
            {"choices": list(STRATEGIES)},
        ).info(
            "auto = swap for weights in RAM, copy for weights in VRAM; swap = restore is instant, both versions stay "
            "on the weight's device while patched; copy = patch in place, pristine copy in CPU RAM (saves VRAM)"
        ),
    }


def register(host: Any, builtin_active: bool) -> None:
    """Add the options to the webui's templates (works at import time: ``opts.data_labels`` is that dict)."""
    from modules import shared

    options = {} if builtin_active else _builtin_options(host)
    options.update(_our_options())
    shared.options_templates.update(shared.options_section(SECTION, options))
    if not builtin_active:
        shared.options_templates.update(
            shared.options_section(
                ("compatibility", "Compatibility"),
                {
                    "lora_functional": shared.OptionInfo(
                        False,
                        "Lora/Networks: use old method that takes longer when you have multiple Loras active and "
                        "produces same results as kohya-ss/sd-webui-additional-networks extension",
                    ).info("lora_ext always computes every LoRA exactly; kept so existing configs load"),
                },
            )
        )


#: Parsed LoRAs kept even when ``lora_in_memory_limit`` is 0: the built-in keeps its active networks loaded apart
#: from that cache, so 0 never means "re-read the files of the current prompt for every batch".
WORKING_SET = 4


def cache_size(host: Any) -> None:
    """``lora_in_memory_limit`` -> the loader's LRU size (at least ``WORKING_SET``)."""
    from modules import shared

    try:
        value = int(getattr(shared.opts, "lora_in_memory_limit", 0) or 0)
    except (TypeError, ValueError):
        value = 0
    host.loader.max_cached = max(WORKING_SET, value)


def patch_strategy(host: Any) -> None:
    """``lora_ext_patch_strategy`` -> the strategy of every patcher (new backups use it; taken ones keep theirs)."""
    from modules import shared

    value = getattr(shared.opts, "lora_ext_patch_strategy", "auto")
    host.set_patch_strategy(value if value in STRATEGIES else "auto")
