"""Read a LoRA file from disk into a ``LoraFile`` (tensors + metadata), or a ``Problem`` naming the file.

``.safetensors`` is validated with our own header reader, then its data is read with one ``readinto`` into one
private buffer that the tensors view (CPU, stored dtype; ``safetensors_data`` says why not memory-mapped). ``.pt``/``.ckpt``/``.bin`` are read only with ``torch.load(weights_only=True)``: a pickle
that needs arbitrary code is refused, and its payload never runs.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile

import torch

from lora_ext.adapters import LoraFile
from lora_ext.errors import Problem
from lora_ext.formats.safetensors_data import read_safetensors_tensors
from lora_ext.formats.safetensors_header import read_safetensors_header

PICKLE_SUFFIXES = (".pt", ".ckpt", ".bin", ".pth")
ADAPTER_CONFIG = "adapter_config.json"


def read_lora_file(path: str | os.PathLike[str]) -> LoraFile | Problem:
    """Load every tensor and the metadata of ``path``.

    Returns a ``LoraFile`` whose tensors are CPU tensors in the stored dtype (a cloneofsimo list is stored under keys
    ``"0"``, ``"1"``, ...). A PEFT ``adapter_config.json`` beside an ``adapter_model.*`` file (or beside a file with
    ``base_model.model.`` keys) is added to the metadata under the key ``"adapter_config.json"``.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        return Problem(path, "the LoRA file does not exist; check the path or refresh the LoRA list.")
    if os.path.isdir(path):
        return Problem(path, "this is a directory, not a LoRA file; remove or rename it.")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        result = _read_safetensors(path)
    elif lower.endswith(PICKLE_SUFFIXES):
        result = _read_pickle(path)
    else:
        return Problem(path, "unsupported file type; LoRA files end in .safetensors, .pt, .ckpt or .bin.")
    if isinstance(result, Problem):
        return result
    _attach_adapter_config(result)
    return result


def _read_safetensors(path: str) -> LoraFile | Problem:
    header = read_safetensors_header(path)
    if isinstance(header, Problem):
        return header
    other_kind = _not_a_lora(path, header.entries)
    if other_kind is not None:
        return other_kind
    tensors = read_safetensors_tensors(header)
    if isinstance(tensors, Problem):
        return tensors
    return LoraFile(path=path, tensors=tensors, metadata=dict(header.metadata))


#: Key prefixes of whole-model checkpoints (LDM/SGM layout); a LoRA never stores these weights.
_CHECKPOINT_PREFIXES = (
    "first_stage_model.",
    "model.diffusion_model.",
    "conditioner.embedders.",
    "cond_stage_model.",
)
#: Substrings of adapter keys that no model weight name contains (not "alpha": checkpoints hold ``alphas_cumprod``).
_ADAPTER_MARKERS = ("lora", "hada_", "lokr_", "oft_", "w_norm", "dora")
_ADAPTER_ENDINGS = (".alpha", ".diff", ".diff_b", ".on_input", ".oft_diag")

#: Keys of a textual-inversion embedding (A1111 ``.pt``: ``string_to_param.*``; safetensors: ``emb_params`` for
#: SD1/SD2, ``clip_l``/``clip_g`` for SDXL). A LoRA's bundled embeddings use ``bundle_emb.`` instead.
_EMBEDDING_KEYS = ("emb_params", "clip_l", "clip_g")
_EMBEDDING_EXTRAS = ("string_to_token.", "step", "name", "sd_checkpoint", "sd_checkpoint_name")


def looks_like_checkpoint(keys) -> bool:
    """True when ``keys`` are those of a full model checkpoint: model weights and no adapter part anywhere."""
    keys = list(keys)
    if not any(k.startswith(_CHECKPOINT_PREFIXES) for k in keys):
        return False
    return not any(k.endswith(_ADAPTER_ENDINGS) or any(m in k for m in _ADAPTER_MARKERS) for k in keys)


def looks_like_embedding(keys) -> bool:
    """True when ``keys`` are those of a textual-inversion embedding file (and nothing else)."""
    keys = list(keys)
    vectors = [k for k in keys if k in _EMBEDDING_KEYS or k.startswith("string_to_param.")]
    others = [k for k in keys if k not in vectors and not k.startswith(_EMBEDDING_EXTRAS)]
    return bool(vectors) and not others


def _not_a_lora(path: str, keys) -> Problem | None:
    """A Problem for files that are another kind of model (checkpoint, embedding), else None."""
    if looks_like_checkpoint(keys):
        return Problem(
            path,
            "this is a full Stable Diffusion checkpoint (it contains the UNet/VAE weights themselves), not a LoRA; "
            "move it to the checkpoint folder (models/Stable-diffusion).",
        )
    if looks_like_embedding(keys):
        return Problem(
            path,
            "this is a textual-inversion embedding, not a LoRA; move it to the embeddings folder and use its "
            "name in the prompt.",
        )
    return None


def _read_pickle(path: str) -> LoraFile | Problem:
    if os.path.getsize(path) == 0:
        return Problem(path, "the file is empty; download it again or remove it.")
    # A zip-format pickle (torch >= 1.6) is opened memory-mapped: no tensor data is read until used, so a multi-GB
    # checkpoint in the LoRA folder is named as such at once. Tensors we keep are copied out (``_private``).
    try:
        mapped = zipfile.is_zipfile(path)
    except (OSError, zipfile.BadZipFile):  # a damaged zip directory; torch.load below names the problem
        mapped = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol notices of the weights-only unpickler
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except PermissionError as err:
        return Problem(
            path, f"cannot open this file ({err.strerror or err}); check its permissions, then retry."
        )
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err) or "GLOBAL" in str(err):
            return Problem(
                path,
                "refused to load this pickle: it needs code beyond plain tensors, which could be malicious "
                "(only weights-only pickles are read). Use a .safetensors version of this LoRA.",
                details=(reason,),
            )
        return Problem(path, f"cannot read this file as a weights-only pickle ({reason}); download it again.")
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    tensors: dict[str, torch.Tensor] = {}
    if isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            _flatten(str(i), value, tensors)
    elif isinstance(data, dict):
        for key, value in data.items():
            _flatten(str(key), value, tensors)
    else:
        return Problem(
            path,
            f"the file holds a {type(data).__name__}, not a LoRA state dict; remove it from the LoRA folder.",
        )
    if not tensors:
        return Problem(
            path, "the file holds no tensors, so it is not a LoRA; remove it from the LoRA folder."
        )
    other_kind = _not_a_lora(path, tensors)
    if other_kind is not None:
        return other_kind
    if mapped:
        tensors = {key: _private(tensor) for key, tensor in tensors.items()}
    return LoraFile(path=path, tensors=tensors, metadata={})


def _private(tensor: torch.Tensor) -> torch.Tensor:
    """A copy in process memory of a tensor backed by the file mapping (which a file rewritten or truncated on
    disk would change or turn into SIGBUS; see ``safetensors_data``)."""
    return tensor.clone()


def _flatten(prefix: str, value: object, out: dict[str, torch.Tensor]) -> None:
    """Flatten nested dicts/lists into dotted keys; numbers become 0-d float32 tensors; other leaves are dropped."""
    if isinstance(value, torch.Tensor):
        out[prefix] = value
    elif isinstance(value, dict):
        for key, child in value.items():
            _flatten(f"{prefix}.{key}", child, out)
    elif isinstance(value, bool):
        out[prefix] = torch.tensor(value)
    elif isinstance(value, (int, float)):
        out[prefix] = torch.tensor(float(value))
    elif isinstance(value, torch.nn.Parameter):
        out[prefix] = value.data


def _attach_adapter_config(file: LoraFile) -> None:
    folder, name = os.path.split(file.path)
    config = os.path.join(folder, ADAPTER_CONFIG)
    if not os.path.isfile(config):
        return
    peft_like = name.startswith("adapter_model") or any(
        k.startswith("base_model.model.") for k in file.tensors
    )
    if not peft_like:
        return
    try:
        with open(config, encoding="utf-8") as handle:
            text = handle.read()
        json.loads(text)
    except (OSError, ValueError, UnicodeDecodeError):
        return
    file.metadata[ADAPTER_CONFIG] = text
