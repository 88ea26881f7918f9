"""Real LoRA files for the tiny models, written at test time (shared/docs/STACK.md, FORMATS.md §3–6).

Every writer takes the model parts it writes for (a tiny diffusers pipeline, or ``{"unet": …, "te1": …, "te2": …}``),
writes one file and returns a ``Written``: the path and the set of expected targets as ``(component, canonical
path)`` pairs, canonical = diffusers UNet path / HF CLIP path (``Target.canonical``). Unpack it as
``path, expected = write_…(…)``. Writers never modify the models they are given (real tools work on deep copies).

Tools used where one exists offline: diffusers + peft (``write_peft_lora``, ``write_raw_peft``), lycoris-lora
(``write_lycoris``, ``write_lycoris_prefixed``). Formats no offline tool writes (kohya ``networks.lora`` itself,
ComfyUI native, cloneofsimo, old diffusers layouts, bundled embeddings) are built here from FORMATS.md's key tables,
independently of ``lora_ext.keys``.

Random factors come from ``torch.Generator`` seeded with ``seed``; ``strength`` is the std of those factors.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save, save_file
from tiny_models import diffusers_to_compvis_path
from torch import nn

Expected = frozenset  # of (component, canonical module path)


@dataclass
class Written:
    """A file a writer produced.

    path: the file (for ``write_raw_peft``: the ``adapter_model.safetensors`` inside its folder).
    expected: ``(component, canonical path)`` of every layer the file targets.
    embeddings: token names of bundled embeddings.
    reference: tool objects for reference outputs (LyCORIS: ``{"network", "unet", "text_encoders"}`` = the network
        applied, by its own ``apply_to``, to deep copies of the models; PEFT: the adapted copies).
    """

    path: Path
    expected: frozenset[tuple[str, str]]
    embeddings: tuple[str, ...] = ()
    reference: dict = field(default_factory=dict, repr=False)

    def __iter__(self) -> Iterator:
        return iter((self.path, self.expected))


# ----------------------------------------------------------------------------------------------------------------
# model parts and targets (FORMATS.md §6)

UNET_ATTENTION_CLASSES = ("Transformer2DModel",)
UNET_CONV_CLASSES = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TE_CLASSES = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")


def components_of(parts) -> dict[str, nn.Module]:
    """``{"unet", "te1"[, "te2"]}`` from a pipeline, a dict of those keys, or a bare UNet."""
    if isinstance(parts, dict):
        return {k: v for k, v in parts.items() if v is not None}
    if hasattr(parts, "unet"):
        out = {"unet": parts.unet, "te1": parts.text_encoder}
        if getattr(parts, "text_encoder_2", None) is not None:
            out["te2"] = parts.text_encoder_2
        return {k: v for k, v in out.items() if v is not None}
    return {"unet": parts}


def family_of(comps: dict[str, nn.Module]) -> str:
    """ "sd1" | "sd2" | "sdxl" from the model itself (SDXL: text_time embedding or te2; SD2: Linear proj)."""
    unet = comps.get("unet")
    cfg = getattr(unet, "config", None)
    if "te2" in comps or (cfg is not None and cfg.get("addition_embed_type") == "text_time"):
        return "sdxl"
    if cfg is not None and cfg.get("use_linear_projection"):
        return "sd2"
    if unet is None and comps["te1"].config.hidden_act == "gelu":
        return "sd2"
    return "sd1"


def kohya_targets(module: nn.Module, classes: Iterable[str]) -> dict[str, nn.Module]:
    """Linear/Conv2d descendants of every module whose class name is in ``classes``: path -> module, model order."""
    classes = tuple(classes)
    out: dict[str, nn.Module] = {}
    for name, parent in module.named_modules():
        if type(parent).__name__ in classes:
            for child_name, child in parent.named_modules():
                if isinstance(child, (nn.Linear, nn.Conv2d)) and child_name:
                    out.setdefault(f"{name}.{child_name}", child)
    return out


def targets_for(
    comps: dict[str, nn.Module], conv: bool, components: Iterable[str]
) -> dict[tuple[str, str], nn.Module]:
    """(component, canonical path) -> module for a kohya-style LoRA (LoCon when ``conv``)."""
    out: dict[tuple[str, str], nn.Module] = {}
    for component in components:
        if component not in comps:
            continue
        if component == "unet":
            classes = UNET_ATTENTION_CLASSES + (UNET_CONV_CLASSES if conv else ())
        else:
            classes = TE_CLASSES
        for path, module in kohya_targets(comps[component], classes).items():
            out[(component, path)] = module
    return out


def flat_name(path: str) -> str:
    return path.replace(".", "_")


def unet_key_name(path: str, family: str, naming: str) -> str:
    """kohya module key of a UNet target under ``naming`` (diffusers | compvis | diffusion_model)."""
    if naming == "diffusers":
        return "lora_unet_" + flat_name(path)
    compvis = diffusers_to_compvis_path(path, family)
    if naming == "compvis":
        return "lora_unet_" + flat_name(compvis)
    if naming == "diffusion_model":
        return "diffusion_model_" + flat_name(compvis)
    raise ValueError(naming)


def te_prefix(family: str, component: str) -> str:
    """``lora_te`` (SD1/SD2) or ``lora_te1`` / ``lora_te2`` (SDXL)."""
    return ("lora_te1" if component == "te1" else "lora_te2") if family == "sdxl" else "lora_te"


# ----------------------------------------------------------------------------------------------------------------
# metadata and hashes (FORMATS.md §4–5)

BASE_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
ARCHITECTURE = {
    "sd1": "stable-diffusion-v1/lora",
    "sd2": "stable-diffusion-v2-512/lora",
    "sdxl": "stable-diffusion-xl-v1-base/lora",
}


def kohya_metadata(
    family: str,
    name: str,
    module: str = "networks.lora",
    dim: int = 4,
    alpha: float = 1.0,
    args: dict | None = None,
    tags: dict[str, int] | None = None,
) -> dict[str, str]:
    """Realistic ``ss_*`` + ``modelspec.*`` metadata as kohya's ``train_network.py`` writes it (all strings)."""
    tags = tags or {"tiny": 12, "lora": 7, name: 5}
    return {
        "ss_network_module": module,
        "ss_network_dim": str(dim),
        "ss_network_alpha": str(float(alpha)),
        "ss_network_args": json.dumps({k: str(v) for k, v in (args or {}).items()}) if args else "null",
        "ss_base_model_version": BASE_VERSION[family],
        "ss_v2": str(family == "sd2"),
        "ss_output_name": name,
        "ss_sd_model_name": f"tiny-{family}.safetensors",
        "ss_sd_model_hash": "1a2b3c4d",
        "ss_tag_frequency": json.dumps({f"5_{name}": tags}),
        "ss_dataset_dirs": json.dumps({f"5_{name}": {"n_repeats": 5, "img_count": 12}}),
        "ss_resolution": "(64, 64)",
        "ss_num_train_images": "60",
        "ss_epoch": "2",
        "ss_steps": "120",
        "ss_learning_rate": "0.0001",
        "ss_clip_skip": "None" if family == "sdxl" else "1",
        "ss_training_started_at": "1700000000.0",
        "ss_training_comment": "made by tests/lora_writers.py",
        "ss_sd_scripts_commit_hash": "0123456789abcdef0123456789abcdef01234567",
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": ARCHITECTURE[family],
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models"
        if family == "sdxl"
        else "diffusers",
        "modelspec.title": name,
        "modelspec.resolution": "64x64",
    }


def safetensors_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """(addnet hash, legacy hash) as kohya computes them: from the file serialized with only ``ss_*`` metadata."""
    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    blob = save({k: v.contiguous() for k, v in tensors.items()}, ss_only or None)
    header = int.from_bytes(blob[:8], "little")
    addnet = hashlib.sha256(blob[8 + header :]).hexdigest()
    legacy = hashlib.sha256(blob[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    return addnet, legacy


def save_with_hashes(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None) -> Path:
    """Write a safetensors file; with metadata, add ``sshs_model_hash`` / ``sshs_legacy_hash`` like kohya."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    if metadata:
        metadata = dict(metadata)
        metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = safetensors_hashes(tensors, metadata)
    save_file(tensors, str(path), metadata or None)
    return path


# ----------------------------------------------------------------------------------------------------------------
# kohya (hand-built: networks.lora / LoCon / Tucker / DyLoRA / OFT, FORMATS.md §3 rows 1–6, 16, 17, 25, 27, 28)


def _randn(gen: torch.Generator, *shape: int, std: float) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * std


def _lora_factors(module: nn.Module, rank: int, tucker: bool, gen, std: float) -> dict[str, torch.Tensor]:
    """down/up(/mid) tensors for one target (shapes of FORMATS.md §9.1)."""
    w = module.weight
    if w.ndim == 2:
        out_f, in_f = w.shape
        return {"down": _randn(gen, rank, in_f, std=std), "up": _randn(gen, out_f, rank, std=std)}
    out_f, in_f, kh, kw = w.shape
    if kh == 1 and kw == 1:
        return {"down": _randn(gen, rank, in_f, 1, 1, std=std), "up": _randn(gen, out_f, rank, 1, 1, std=std)}
    if tucker:
        return {
            "down": _randn(gen, rank, in_f, 1, 1, std=std),
            "mid": _randn(gen, rank, rank, kh, kw, std=std),
            "up": _randn(gen, out_f, rank, 1, 1, std=std),
        }
    return {"down": _randn(gen, rank, in_f, kh, kw, std=std), "up": _randn(gen, out_f, rank, 1, 1, std=std)}


def _dora_scale(module: nn.Module, axis: str, gen) -> torch.Tensor:
    """A DoRA magnitude near ‖W‖ on ``axis``: ``[out, 1, …]`` ("out") or ``[1, in, …]`` ("in")."""
    w = module.weight.detach().float()
    if axis == "out":
        norm = w.flatten(1).norm(dim=1).reshape(-1, *([1] * (w.ndim - 1)))
    else:
        norm = w.transpose(0, 1).flatten(1).norm(dim=1).reshape(1, -1, *([1] * (w.ndim - 2)))
    return norm * (1 + 0.2 * torch.randn(norm.shape, generator=gen))


def write_kohya(
    parts,
    path,
    family: str | None = None,
    algo: str = "lora",
    rank: int = 4,
    alpha: float | None = 2.0,
    conv_dim: int | None = None,
    conv_alpha: float | None = None,
    naming: str | None = None,
    suffix: str = "kohya",
    components: Iterable[str] = ("unet", "te1", "te2"),
    dora: str | None = None,
    dyn: bool = False,
    embeddings: dict[str, int] | None = None,
    metadata: dict[str, str] | None | bool = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    strength: float = 0.1,
) -> Written:
    """A kohya-style file (``lora_unet_…`` / ``lora_te_…`` keys with ``alpha`` tensors).

    algo: "lora" (LoCon when ``conv_dim``), "tucker" (LoCon with ``lora_mid`` on k×k convs; needs ``conv_dim``),
        "oft" (kohya ``networks.oft``: ``oft_unet_…oft_blocks`` ``[rank, out/rank, out/rank]``, UNet only, alpha
        = constraint 1e-3 unless given).
    naming: UNet key naming — "diffusers" (default for sd1/sd2), "compvis" (SGM/LDM names; default for sdxl) or
        "diffusion_model" (A1111 layer names ``diffusion_model_input_blocks_…``, no ``lora_unet`` prefix).
    suffix: "kohya" (``lora_down.weight`` / ``lora_up.weight``) or "peft" (``lora_A.weight`` / ``lora_B.weight``).
    alpha: per-module alpha; None writes no ``alpha`` tensors (s = 1).
    dora: None, "out" (``dora_scale`` ``[out, 1]``, LyCORIS ≥ 3.2) or "in" (``[1, in]``, older LyCORIS).
    dyn: mark as DyLoRA (``ss_network_module = networks.dylora``); keys are the same.
    embeddings: token -> vector count; adds ``bundle_emb.<tok>.string_to_param.*`` (sd1/sd2) or ``.clip_l`` +
        ``.clip_g`` (sdxl).
    metadata: extra/overriding metadata; False writes none at all.
    """
    comps = components_of(parts)
    family = family or family_of(comps)
    naming = naming or ("compvis" if family == "sdxl" else "diffusers")
    gen = torch.Generator().manual_seed(seed)
    if algo == "oft":
        components = ("unet",)
    targets = targets_for(comps, conv=bool(conv_dim), components=components)
    down_key, up_key = (
        ("lora_A.weight", "lora_B.weight") if suffix == "peft" else ("lora_down.weight", "lora_up.weight")
    )
    tensors: dict[str, torch.Tensor] = {}
    for (component, tpath), module in targets.items():
        if component == "unet":
            key = unet_key_name(tpath, family, naming)
        else:
            key = te_prefix(family, component) + "_" + flat_name(tpath)
        conv_kxk = module.weight.ndim == 4 and module.weight.shape[-1] > 1
        r = conv_dim if conv_kxk else rank
        a = (conv_alpha if conv_alpha is not None else alpha) if conv_kxk else alpha
        if algo == "oft":
            key = "oft_" + key.removeprefix("lora_")
            out_f = module.weight.shape[0]
            block = out_f // rank
            tensors[key + ".oft_blocks"] = _randn(gen, rank, block, block, std=strength)
            tensors[key + ".alpha"] = torch.tensor(1e-3 if alpha is None else float(alpha))
            continue
        f = _lora_factors(module, r, tucker=algo == "tucker", gen=gen, std=strength)
        tensors[f"{key}.{down_key}"] = f["down"]
        tensors[f"{key}.{up_key}"] = f["up"]
        if "mid" in f:
            tensors[f"{key}.lora_mid.weight"] = f["mid"]
        if a is not None:
            tensors[f"{key}.alpha"] = torch.tensor(float(a))
        if dora:
            tensors[f"{key}.dora_scale"] = _dora_scale(module, dora, gen)
    names: tuple[str, ...] = ()
    if embeddings:
        names = tuple(embeddings)
        tensors.update(bundle_embeddings(comps, family, embeddings, gen))
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    meta = None
    if metadata is not False:
        module_name = {"oft": "networks.oft"}.get(algo, "networks.dylora" if dyn else "networks.lora")
        args = {}
        if conv_dim:
            args.update(conv_dim=conv_dim, conv_alpha=conv_alpha if conv_alpha is not None else alpha)
        if dyn:
            args["unit"] = 1
        meta = kohya_metadata(
            family, Path(path).stem, module_name, rank, alpha if alpha is not None else rank, args
        )
        meta.update(metadata or {})
    save_with_hashes(tensors, path, meta)
    return Written(Path(path), frozenset(targets), embeddings=names)


def bundle_embeddings(comps, family: str, embeddings: dict[str, int], gen) -> dict[str, torch.Tensor]:
    """``bundle_emb.*`` tensors (FORMATS.md §3 row 27): token -> ``[n, hidden]`` vectors per text encoder."""
    out = {}
    for token, n in embeddings.items():
        if family == "sdxl":
            out[f"bundle_emb.{token}.clip_l"] = _randn(gen, n, comps["te1"].config.hidden_size, std=0.02)
            out[f"bundle_emb.{token}.clip_g"] = _randn(gen, n, comps["te2"].config.hidden_size, std=0.02)
        else:
            out[f"bundle_emb.{token}.string_to_param.*"] = _randn(
                gen, n, comps["te1"].config.hidden_size, std=0.02
            )
    return out


def convert_keys(src: Path, dst: Path, rename) -> Path:
    """Copy a safetensors file with every key passed through ``rename(key) -> key | None`` (None drops it)."""
    tensors = load_file(str(src))
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    out = {}
    for k, v in tensors.items():
        new = rename(k)
        if new is not None:
            out[new] = v
    save_file(out, str(dst), meta)
    return Path(dst)


# ----------------------------------------------------------------------------------------------------------------
# ComfyUI native keys (row 24)

COMFY_TE = {"sd1": {"te1": "clip_l"}, "sd2": {"te1": "clip_h"}, "sdxl": {"te1": "clip_l", "te2": "clip_g"}}


def write_comfyui(
    parts,
    path,
    family: str | None = None,
    rank: int = 4,
    alpha: float = 2.0,
    components: Iterable[str] = ("unet", "te1", "te2"),
    seed: int = 0,
    strength: float = 0.1,
) -> Written:
    """ComfyUI's own save layout: ``diffusion_model.<compvis path>.lora_up.weight`` and
    ``text_encoders.clip_l.transformer.<HF path>.lora_up.weight`` (sd2 ``clip_h``, sdxl te2 ``clip_g``), dotted alpha."""
    comps = components_of(parts)
    family = family or family_of(comps)
    gen = torch.Generator().manual_seed(seed)
    targets = targets_for(comps, conv=False, components=components)
    tensors = {}
    for (component, tpath), module in targets.items():
        if component == "unet":
            key = "diffusion_model." + diffusers_to_compvis_path(tpath, family)
        else:
            key = f"text_encoders.{COMFY_TE[family][component]}.transformer.{tpath}"
        f = _lora_factors(module, rank, tucker=False, gen=gen, std=strength)
        tensors[key + ".lora_down.weight"] = f["down"]
        tensors[key + ".lora_up.weight"] = f["up"]
        tensors[key + ".alpha"] = torch.tensor(float(alpha))
    save_with_hashes(tensors, path, None)
    return Written(Path(path), frozenset(targets))


# ----------------------------------------------------------------------------------------------------------------
# cloneofsimo (row 26): positional .pt list and safeloras

CLONEOFSIMO_UNET = ("CrossAttention", "Attention", "GEGLU")
CLONEOFSIMO_TE = ("CLIPAttention", "CLIPSdpaAttention")


def cloneofsimo_targets(module: nn.Module, classes: Iterable[str]) -> list[tuple[str, nn.Linear]]:
    """cloneofsimo's ``_find_modules`` order: for each ancestor of a target class in ``modules()`` order, its Linear
    descendants in registration order (HF CLIPAttention: k, v, q, out)."""
    classes = tuple(classes)
    out = []
    for name, parent in module.named_modules():
        if type(parent).__name__ in classes:
            for child_name, child in parent.named_modules():
                if isinstance(child, nn.Linear) and child_name:
                    out.append((f"{name}.{child_name}", child))
    return out


def _cloneofsimo_pairs(model: nn.Module, classes, rank: int, gen, std: float, scale: float):
    pairs = []
    for tpath, module in cloneofsimo_targets(model, classes):
        out_f, in_f = module.weight.shape
        # the scale is baked into up (``realize_as_lora`` returns up * scale)
        pairs.append((tpath, _randn(gen, out_f, rank, std=std) * scale, _randn(gen, rank, in_f, std=std)))
    return pairs


def write_cloneofsimo_pt(
    parts,
    path,
    component: str = "unet",
    rank: int = 4,
    seed: int = 0,
    strength: float = 0.1,
    scale: float = 1.0,
) -> Written:
    """A cloneofsimo ``.pt``: a pickled list ``[up0, down0, up1, down1, …]`` in fp16 for one component."""
    comps = components_of(parts)
    gen = torch.Generator().manual_seed(seed)
    classes = CLONEOFSIMO_UNET if component == "unet" else CLONEOFSIMO_TE
    pairs = _cloneofsimo_pairs(comps[component], classes, rank, gen, strength, scale)
    weights = []
    for _, up, down in pairs:
        weights += [up.half(), down.half()]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, str(path))
    return Written(Path(path), frozenset((component, p) for p, _, _ in pairs))


def write_safeloras(
    parts,
    path,
    rank: int = 4,
    components: Iterable[str] = ("unet", "te1"),
    seed: int = 0,
    strength: float = 0.1,
) -> Written:
    """cloneofsimo ``safeloras``: keys ``unet:0:up``, ``text_encoder:3:down``; metadata ``unet`` (target classes JSON),
    ``unet:0:rank``; fp16, scale baked in."""
    comps = components_of(parts)
    gen = torch.Generator().manual_seed(seed)
    tensors, meta, expected = {}, {}, set()
    for component in components:
        if component not in comps:
            continue
        name = "unet" if component == "unet" else "text_encoder"
        classes = CLONEOFSIMO_UNET if component == "unet" else CLONEOFSIMO_TE
        meta[name] = json.dumps(
            sorted({"CrossAttention", "Attention", "GEGLU"} if name == "unet" else {"CLIPAttention"})
        )
        for i, (tpath, up, down) in enumerate(
            _cloneofsimo_pairs(comps[component], classes, rank, gen, strength, 1.0)
        ):
            tensors[f"{name}:{i}:up"] = up.half()
            tensors[f"{name}:{i}:down"] = down.half()
            meta[f"{name}:{i}:rank"] = str(rank)
            expected.add((component, tpath))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # safeloras carry their own metadata (not kohya's)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), meta)
    return Written(Path(path), frozenset(expected))


# ----------------------------------------------------------------------------------------------------------------
# LyCORIS (real tool)

_PRESET = """enable_conv = {conv}
unet_target_module = {unet}
unet_target_name = []
text_encoder_target_module = {te}
text_encoder_target_name = []
use_fnmatch = false
exclude_name = []
"""


def _preset_file(folder: Path, conv: bool) -> Path:
    unet = list(UNET_ATTENTION_CLASSES) + (list(UNET_CONV_CLASSES) if conv else [])
    text = _PRESET.format(
        conv=str(conv).lower(), unet=json.dumps(unet), te=json.dumps(["CLIPAttention", "CLIPMLP"])
    )
    preset = folder / "preset.toml"
    preset.write_text(text)
    return preset


def _randomize_zero_factors(network: nn.Module, gen, std: float) -> None:
    """Give every all-zero float factor (LoRA up, LoHa w2_a, LoKr w2, OFT blocks, IA3 weight, norms) random values so
    the delta is non-zero; ``alpha`` stays as written (0 = OFT's "no constraint"). A ``FullModule`` holds W₀ + diff
    after ``apply_to``, so its weight and bias get noise added instead."""
    with torch.no_grad():
        for module in network.modules():
            if type(module).__name__ == "FullModule":
                for p in (module.weight, module.bias):
                    if p is not None:
                        p.add_(torch.randn(p.shape, generator=gen) * std)
        for name, t in list(network.named_parameters()) + list(network.named_buffers()):
            if name.endswith("alpha") or not t.dtype.is_floating_point or t.any():
                continue
            t.copy_(torch.randn(t.shape, generator=gen) * std)


_PRESET_ATTRS = (
    "ENABLE_CONV",
    "UNET_TARGET_REPLACE_MODULE",
    "UNET_TARGET_REPLACE_NAME",
    "TEXT_ENCODER_TARGET_REPLACE_MODULE",
    "TEXT_ENCODER_TARGET_REPLACE_NAME",
    "TARGET_REPLACE_MODULE",
    "TARGET_REPLACE_NAME",
    "MODULE_ALGO_MAP",
    "NAME_ALGO_MAP",
    "USE_FNMATCH",
    "TARGET_EXCLUDE_NAME",
)


@contextlib.contextmanager
def _restored_presets(*classes):
    """LyCORIS's ``apply_preset`` rewrites class attributes; put them back so other users see the defaults."""
    saved = [(cls, {a: getattr(cls, a) for a in _PRESET_ATTRS if a in vars(cls)}) for cls in classes]
    try:
        yield
    finally:
        for cls, attrs in saved:
            for name, value in attrs.items():
                setattr(cls, name, value)


def _path_index(model: nn.Module, prefix: str) -> dict[str, str]:
    return {flat_name(f"{prefix}.{name}"): name for name, _ in model.named_modules() if name}


def write_lycoris(
    parts,
    path,
    algo: str = "lokr",
    rank: int = 4,
    alpha: float = 2.0,
    conv: bool = False,
    conv_dim: int | None = None,
    conv_alpha: float | None = None,
    components: Iterable[str] = ("unet", "te1", "te2"),
    seed: int = 0,
    strength: float = 0.1,
    dtype: torch.dtype = torch.float32,
    metadata: dict[str, str] | None = None,
    **kwargs,
) -> Written:
    """A LyCORIS file with kohya/A1111 keys, from ``lycoris.kohya.create_network`` with the STACK.md custom preset.

    algo: lora | locon | loha | lokr | full | ia3 | glora | diag-oft | boft | dylora, or "norm" (= lora plus
        ``train_norm``: ``w_norm``/``b_norm`` on GroupNorm/LayerNorm), "dora" (= lora with ``dora_wd``).
    conv: also target ResnetBlock2D/Downsample2D/Upsample2D (LoCon / conv LoHa / LoKr …).
    kwargs: passed to ``create_network``: ``use_tucker``, ``full_matrix``, ``decompose_both``, ``factor``,
        ``dora_wd``, ``wd_on_output`` (True: ``dora_scale`` ``[out,1]``; False: ``[1,in]``), ``constraint``,
        ``rescaled``, ``block_size``, ``train_norm``, ``rs_lora``, …
    The network is applied (its own ``apply_to``) to deep copies, returned in ``reference`` for forward references.
    """
    from lycoris.kohya import LycorisNetworkKohya, create_network

    comps = {k: copy.deepcopy(v) for k, v in components_of(parts).items() if k in tuple(components)}
    family = family_of(components_of(parts))
    if algo == "norm":
        algo, kwargs = "lora", {**kwargs, "train_norm": True}
    if algo == "dora":
        algo, kwargs = "lora", {**kwargs, "dora_wd": True}
    tes = [comps[c] for c in ("te1", "te2") if c in comps]
    te_arg = tes if len(tes) > 1 else (tes[0] if tes else None)
    unet = comps.get("unet")
    with tempfile.TemporaryDirectory(prefix="lycoris_preset_") as tmp, _restored_presets(LycorisNetworkKohya):
        network = create_network(
            1.0,
            rank,
            alpha,
            None,
            te_arg,
            unet if unet is not None else nn.Module(),
            preset=str(_preset_file(Path(tmp), conv)),
            algo=algo,
            conv_dim=conv_dim or rank,
            conv_alpha=conv_alpha if conv_alpha is not None else alpha,
            **kwargs,
        )
    network.apply_to(te_arg, unet, apply_text_encoder=bool(tes), apply_unet=unet is not None)
    _randomize_zero_factors(network, torch.Generator().manual_seed(seed), strength)
    index: dict[str, tuple[str, str]] = {}
    if unet is not None:
        index.update({k: ("unet", v) for k, v in _path_index(unet, "lora_unet").items()})
    te_names = [c for c in ("te1", "te2") if c in comps]
    for component in te_names:
        prefix = ("lora_te1" if component == "te1" else "lora_te2") if len(te_names) > 1 else "lora_te"
        index.update({k: (component, v) for k, v in _path_index(comps[component], prefix).items()})
    expected = frozenset(index[lora.lora_name] for lora in network.loras)
    args = {"algo": algo, **{k: str(v) for k, v in kwargs.items()}}
    if conv:
        args.update(
            conv_dim=str(conv_dim or rank), conv_alpha=str(conv_alpha if conv_alpha is not None else alpha)
        )
    meta = kohya_metadata(family, Path(path).stem, "lycoris.kohya", rank, alpha, args)
    meta.update(metadata or {})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    network.save_weights(str(path), dtype, meta)
    reference = {"network": network, "unet": unet, "text_encoders": {c: comps[c] for c in te_names}}
    return Written(Path(path), expected, reference=reference)


def write_lycoris_prefixed(
    parts,
    path,
    algo: str = "lokr",
    rank: int = 4,
    alpha: float = 2.0,
    seed: int = 0,
    strength: float = 0.1,
    **kwargs,
) -> Written:
    """A SimpleTuner-style file from ``lycoris.create_lycoris`` on the UNet: keys ``lycoris_<diffusers path>.<part>``."""
    from lycoris import LycorisNetwork, create_lycoris

    unet = copy.deepcopy(components_of(parts)["unet"])
    with _restored_presets(LycorisNetwork):
        LycorisNetwork.apply_preset(
            {"target_module": ["Transformer2DModel"], "target_name": [], "module_algo_map": {}}
        )
        network = create_lycoris(unet, 1.0, linear_dim=rank, linear_alpha=alpha, algo=algo, **kwargs)
    network.apply_to()
    _randomize_zero_factors(network, torch.Generator().manual_seed(seed), strength)
    index = _path_index(unet, "lycoris")
    expected = frozenset(("unet", index[lora.lora_name]) for lora in network.loras)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    network.save_weights(str(path), torch.float32, None)
    return Written(Path(path), expected, reference={"network": network, "unet": unet})


# ----------------------------------------------------------------------------------------------------------------
# diffusers / PEFT (real tools) and the older diffusers layouts derived from a PEFT file (rows 18–22)

UNET_ATTN_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TE_ATTN_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _add_peft_adapter(model: nn.Module, rank, alpha, targets, use_dora, gen, strength):
    """``model.add_adapter(LoraConfig)`` (diffusers and transformers models both have it), then random ``lora_B``."""
    from peft import LoraConfig

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), use_dora=use_dora)
    model.add_adapter(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * strength)
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=gen))
    expected = {n.removesuffix(".lora_A") for n, _ in model.named_modules() if n.endswith(".lora_A")}
    expected = {n.replace(".base_layer", "") for n in expected}
    return model, config, expected


def write_peft_lora(
    parts,
    path,
    rank: int = 4,
    alpha: float = 8.0,
    use_dora: bool = False,
    targets: Iterable[str] | None = None,
    te_targets: Iterable[str] | None = None,
    components: Iterable[str] = ("unet",),
    with_metadata: bool = True,
    seed: int = 0,
    strength: float = 0.1,
) -> Written:
    """A diffusers ≥ 0.24 PEFT-format file via ``add_adapter(LoraConfig)`` + ``save_lora_weights``.

    Keys ``unet.<path>.lora_A.weight`` / ``text_encoder(_2).<path>.lora_B.weight`` (+ ``lora_magnitude_vector``
    with ``use_dora``). ``with_metadata`` stores ``lora_adapter_metadata`` (r, lora_alpha); without it the file has
    no alpha at all. Works on deep copies; ``reference`` holds the adapted copies.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from peft.utils import get_peft_model_state_dict

    comps = components_of(parts)
    family = family_of(comps)
    gen = torch.Generator().manual_seed(seed)
    layers, meta, expected, reference = {}, {}, set(), {}
    for component in components:
        if component not in comps:
            continue
        model = copy.deepcopy(comps[component])
        is_unet = component == "unet"
        tg = tuple(targets or UNET_ATTN_TARGETS) if is_unet else tuple(te_targets or TE_ATTN_TARGETS)
        model, config, found = _add_peft_adapter(model, rank, alpha, tg, use_dora, gen, strength)
        reference[component] = model
        expected |= {(component, p) for p in found}
        name = {"unet": "unet", "te1": "text_encoder", "te2": "text_encoder_2"}[component]
        layers[name] = get_peft_model_state_dict(model)
        meta[name] = config.to_dict() if with_metadata else None
    pipe_cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    kwargs = {f"{n}_lora_layers": v for n, v in layers.items()}
    if with_metadata:
        kwargs.update({f"{n}_lora_adapter_metadata": v for n, v in meta.items()})
    path = Path(path)
    pipe_cls.save_lora_weights(str(path.parent), weight_name=path.name, **kwargs)
    return Written(path, frozenset(expected), reference=reference)


def _peft_scales(src: Path) -> dict[str, float]:
    """component prefix ("unet", "text_encoder", …) -> lora_alpha / r from ``lora_adapter_metadata`` (1 if absent)."""
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        meta = f.metadata() or {}
    raw = json.loads(meta.get("lora_adapter_metadata", "{}"))
    out: dict[str, float] = {}
    for key, value in raw.items():
        comp, _, field_name = key.partition(".")
        out.setdefault(comp, 1.0)
        if field_name == "lora_alpha":
            out[comp + ":alpha"] = float(value)
        if field_name == "r":
            out[comp + ":r"] = float(value)
    return {c: out.get(c + ":alpha", 1.0) / out.get(c + ":r", 1.0) for c in {k.split(":")[0] for k in out}}


def _baked(src: Path, rename) -> dict[str, torch.Tensor]:
    """PEFT tensors renamed by ``rename(component, path, part)`` with α/r baked into the up factor."""
    scales = _peft_scales(src)
    out = {}
    for key, value in load_file(str(src)).items():
        m = re.fullmatch(r"(unet|text_encoder|text_encoder_2)\.(.+)\.(lora_A|lora_B)\.weight", key)
        if not m:
            raise ValueError(f"unexpected PEFT key {key}")
        comp, tpath, part = m.groups()
        new = rename(comp, tpath, "down" if part == "lora_A" else "up")
        if new is not None:
            out[new] = value * scales.get(comp, 1.0) if part == "lora_B" else value
    return out


def peft_to_diffusers_021(src, dst) -> Path:
    """diffusers 0.21–0.23 layout from a PEFT file: UNet ``unet.<path>.lora.down.weight``, TE
    ``text_encoder.<path>.lora_linear_layer.up.weight``; α/r baked into up (no alpha keys)."""

    def rename(comp, tpath, part):
        infix = "lora" if comp == "unet" else "lora_linear_layer"
        return f"{comp}.{tpath}.{infix}.{part}.weight"

    return save_with_hashes(_baked(Path(src), rename), dst, None)


ATTN_PROCS_UNET = {"to_q": "to_q_lora", "to_k": "to_k_lora", "to_v": "to_v_lora", "to_out.0": "to_out_lora"}
ATTN_PROCS_TE = {
    "q_proj": "to_q_lora",
    "k_proj": "to_k_lora",
    "v_proj": "to_v_lora",
    "out_proj": "to_out_lora",
}


def peft_to_attn_procs(src, dst) -> Path:
    """diffusers ≤ 0.20 attention-processor layout: UNet ``<attn>.processor.to_q_lora.down.weight`` (no prefix),
    TE ``text_encoder.<…>.self_attn.to_q_lora.down.weight``. Only attention projections exist in this format."""

    def rename(comp, tpath, part):
        table = ATTN_PROCS_UNET if comp == "unet" else ATTN_PROCS_TE
        for leaf, proc in table.items():
            if tpath.endswith("." + leaf):
                parent = tpath[: -len(leaf) - 1]
                if comp == "unet":
                    return f"{parent}.processor.{proc}.{part}.weight"
                return f"{comp}.{parent}.{proc}.{part}.weight"
        return None

    return save_with_hashes(_baked(Path(src), rename), dst, None)


def write_raw_peft(
    model: nn.Module,
    folder,
    rank: int = 4,
    alpha: float = 8.0,
    targets: Iterable[str] = UNET_ATTN_TARGETS,
    component: str = "unet",
    use_dora: bool = False,
    seed: int = 0,
    strength: float = 0.1,
) -> Written:
    """Raw PEFT ``save_pretrained`` output: ``folder/adapter_model.safetensors`` with ``base_model.model.<path>.lora_A.weight``
    keys and ``folder/adapter_config.json`` beside it (r, lora_alpha, target_modules)."""
    from peft import LoraConfig, get_peft_model

    model = copy.deepcopy(model)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), use_dora=use_dora)
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * strength)
    expected = {
        n.removeprefix("base_model.model.").removesuffix(".lora_A").replace(".base_layer", "")
        for n, _ in peft_model.named_modules()
        if n.endswith(".lora_A")
    }
    folder = Path(folder)
    peft_model.save_pretrained(str(folder))
    return Written(
        folder / "adapter_model.safetensors",
        frozenset((component, p) for p in expected),
        reference={component: peft_model},
    )
