"""Fake ``modules.shared`` (A1111_CONTRACT.md §7, §1.4, §9.1, §15).

State is module-level like the webui's; the test fixture drops ``modules*`` from ``sys.modules`` after each test.
"""

from __future__ import annotations

import argparse
import os

from modules import util
from modules.options import OptionInfo, Options, options_section  # noqa: F401  (re-exported, §7)

# §1.4: the built-in preload always adds these two, even when the built-in is disabled.
cmd_opts = argparse.Namespace(
    lora_dir=os.path.join("models", "Lora"),
    lyco_dir_backcompat=os.path.join("models", "LyCORIS"),
    no_hashing=False,
    lowram=False,
    no_half=True,
    api=False,
    disable_extra_extensions=False,
    disable_all_extensions=False,
)

# §7: core options the feature reads, with the webui's defaults.
options_templates: dict = {}
options_templates.update(
    options_section(
        ("extra_networks", "Extra Networks", "sd"),
        {
            "extra_networks_default_multiplier": OptionInfo(1.0, "Default multiplier for extra networks"),
            "extra_networks_add_text_separator": OptionInfo(" ", "Extra networks separator"),
            "extra_networks_card_width": OptionInfo(0, "Card width"),
            "extra_networks_card_height": OptionInfo(0, "Card height"),
            "extra_networks_card_text_scale": OptionInfo(1.0, "Card text scale"),
            "extra_networks_card_show_desc": OptionInfo(True, "Show description on card"),
            "extra_networks_card_description_is_html": OptionInfo(False, "Treat card description as HTML"),
            "extra_networks_card_order_field": OptionInfo("Path", "Default order field"),
            "extra_networks_card_order": OptionInfo("Ascending", "Default order"),
            "extra_networks_tree_view_style": OptionInfo("Dirs", "Tree view style"),
            "extra_networks_tree_view_default_enabled": OptionInfo(True, "Show tree view"),
            "extra_networks_tree_view_default_width": OptionInfo(180, "Tree view width"),
            "extra_networks_hidden_models": OptionInfo(
                "When searched", "Show cards for models in hidden directories"
            ),
            "extra_networks_show_hidden_directories": OptionInfo(True, "Show hidden directories"),
            "ui_extra_networks_tab_reorder": OptionInfo("", "Extra networks tab order"),
            "textual_inversion_add_hashes_to_infotext": OptionInfo(True, "Add TI hashes to infotext"),
        },
    )
)
options_templates.update(
    options_section(
        ("sd", "Stable Diffusion", "sd"),
        {
            "fp8_storage": OptionInfo("Disable", "FP8 weight"),
            "cache_fp16_weight": OptionInfo(False, "Cache FP16 weight for LoRA"),
            "persistent_cond_cache": OptionInfo(True, "Persistent cond cache"),
            "hires_fix_use_firstpass_conds": OptionInfo(
                False, "For hires fix, calculate conds of second pass using extra networks of first pass"
            ),
            "sd_checkpoints_limit": OptionInfo(1, "Maximum number of checkpoints loaded at the same time"),
        },
    )
)
options_templates.update(
    options_section(
        ("saving-images", "Saving images/grids", "saving"),
        {
            "samples_format": OptionInfo("png", "File format for images"),
            "list_hidden_files": OptionInfo(True, "Load models/files in hidden directories"),
        },
    )
)
options_templates.update(
    options_section(
        ("system", "System", "system"),
        {
            "disabled_extensions": OptionInfo([], "Disable these extensions"),
            "disable_all_extensions": OptionInfo("none", "Disable all extensions"),
        },
    )
)

opts = Options(options_templates)

#: §9.1: the loaded model (``sd_models.model_data`` keeps the same object).
sd_model = None


class State:
    """The webui's ``shared.state`` (only what processing reads)."""

    interrupted = False
    skipped = False
    job = ""
    sampling_step = 0  # set by the sampler after each step (see processing.denoise)
    sampling_steps = 0

    def interrupt(self):
        self.interrupted = True


state = State()


def walk_files(path, allowed_extensions=None):
    """§9.2: re-export of ``modules.util.walk_files``."""
    return util.walk_files(path, allowed_extensions)


def html(filename):
    """§4.1: the webui reads ``html/<filename>``; the fake returns a minimal template."""
    return "<div class='{card_clicked}'>{name}</div>" if filename.startswith("extra-networks-card") else ""
