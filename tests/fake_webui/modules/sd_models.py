"""Fake ``modules.sd_models`` (A1111_CONTRACT.md §9.1, §9.2, §6 ``on_model_loaded``, §8.4).

``model_data.sd_model`` mirrors ``shared.sd_model``. Two test helpers reproduce the checkpoint-switch traps:
``load_weights_in_place`` (same-architecture switch: new weights copied into the SAME module objects, then
``model_loaded`` fires) and ``switch_to_cached`` (a model kept in memory comes back WITHOUT ``model_loaded``).
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, safe_open

from modules import script_callbacks, shared


class ModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []

    def set_sd_model(self, v):
        self.sd_model = v
        shared.sd_model = v


model_data = ModelData()


class CheckpointInfo:
    def __init__(self, filename, title=None):
        self.filename = filename
        self.title = title or filename
        self.name = filename
        self.name_for_extra = filename
        self.hash = None
        self.shorthash = None
        self.sha256 = None


def set_model(sd_model, *, fire_loaded=True):
    """Install ``sd_model`` as the loaded model (startup load), firing ``model_loaded`` like ``load_model``."""
    if not hasattr(sd_model, "sd_checkpoint_info"):
        sd_model.sd_checkpoint_info = CheckpointInfo(f"{type(sd_model).__name__}-{id(sd_model)}.safetensors")
    model_data.set_sd_model(sd_model)
    if sd_model not in model_data.loaded_sd_models:
        model_data.loaded_sd_models.insert(0, sd_model)
    if fire_loaded:
        script_callbacks.model_loaded_callback(sd_model)


def load_weights_in_place(sd_model, state_dict, checkpoint_name=None):
    """§8.4: same-architecture switch reuses the model object, loads weights in place, then fires model_loaded."""
    with torch.no_grad():
        sd_model.load_state_dict(state_dict, strict=True)
    sd_model.sd_checkpoint_info = CheckpointInfo(checkpoint_name or f"switched-{id(state_dict)}.safetensors")
    script_callbacks.model_loaded_callback(sd_model)


def switch_to_cached(sd_model):
    """§6: switching to a model kept in memory (``sd_checkpoints_limit`` > 1) does NOT fire model_loaded."""
    model_data.set_sd_model(sd_model)


def unload_model_weights(sd_model=None, info=None):
    model_data.set_sd_model(None)


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    """§8.2 step 4.1: called per batch; the fake keeps the current model."""
    return model_data.sd_model


def read_state_dict(checkpoint_file, print_global_state=False, map_location=None):
    if str(checkpoint_file).endswith(".safetensors"):
        return load_file(checkpoint_file, device=map_location or "cpu")
    return torch.load(checkpoint_file, map_location=map_location or "cpu", weights_only=True)


def read_metadata_from_safetensors(filename):
    """§9.2: string values starting with ``{`` are JSON-decoded."""
    with safe_open(filename, framework="pt") as f:
        metadata = f.metadata() or {}
    res = {}
    for k, v in metadata.items():
        v_str = str(v)
        if v_str[0:1] == "{":
            try:
                res[k] = json.loads(v_str)
            except Exception:
                res[k] = v
        else:
            res[k] = v
    return res
