"""The one resolver: ``resolve(file, index, name) -> ResolvedLora``.

Every key is parsed with ``key_parser`` (tables in ``tables``), grouped per target, given an algorithm from its part
set and an alpha (``.alpha`` tensor, else adapter metadata, else None). Keys that reach no target are listed in
``unmatched``. A file for another architecture, a file with NaN/Inf tensors and a file whose keys match nothing are
refused: empty ``layers`` plus an error Problem naming the file.
"""

from __future__ import annotations

import os

import torch

from lora_ext.adapters import LayerAdapter, LoraFile, ResolvedLora, Target
from lora_ext.coverage import CoverageReport, detect_architecture
from lora_ext.errors import Problem
from lora_ext.keys.cloneofsimo import is_positional, resolve_positional
from lora_ext.keys.key_parser import KeyParts, parse_key
from lora_ext.keys.metadata_alpha import configs_from_metadata
from lora_ext.keys.shape_check import mismatch
from lora_ext.keys.tables import ALGO_BY_PART, BUNDLE_PREFIX, REQUIRED_PARTS, UNNUMBERED_TE_PREFIXES
from lora_ext.keys.target_index import TargetIndex

_EXAMPLES = 5


def resolve(file: LoraFile, index: TargetIndex, name: str) -> ResolvedLora:
    """Map ``file`` onto the model of ``index``; never raises for bad user files."""
    result = ResolvedLora(name=name, path=file.path, layers={})
    shapes = {k: tuple(v.shape) for k, v in file.tensors.items()}
    file_arch, evidence = detect_architecture(file.metadata, shapes)
    model_arch = index.parts.architecture
    report = CoverageReport(
        file=file.path,
        name=name,
        model_architecture=model_arch,
        file_architecture=file_arch,
        architecture_evidence=evidence,
        keys_total=len(file.tensors),
    )
    result.report = report
    label = os.path.basename(file.path)

    if file_arch != "Unknown" and model_arch != "Unknown" and file_arch != model_arch:
        _refuse(
            result,
            f"{label} is {_article(file_arch)} {file_arch} LoRA ({'; '.join(evidence)}) but the loaded model is "
            f"{model_arch}; "
            f"it was not applied. Use it with {_article(file_arch)} {file_arch} checkpoint.",
        )
        return result

    bad = _non_finite(file)
    if bad:
        _refuse(
            result,
            f"{label} contains NaN or infinite values in {len(bad)} tensor(s) (first: {bad[0]}); it would break "
            "images and was not applied. Download the file again or use another version.",
            details=tuple(bad[:_EXAMPLES]),
        )
        return result

    for key in file.tensors:
        if key.startswith(BUNDLE_PREFIX):
            _add_embedding(result, key, file.tensors[key])

    if is_positional(file):
        resolve_positional(file, index, result)
    else:
        _resolve_named(file, index, result)

    if _drop_misfits(result, label, model_arch, file_arch):
        return result
    _finish(result, report, label)
    return result


def _drop_misfits(result: ResolvedLora, label: str, model_arch: str, file_arch: str) -> bool:
    """Remove layers whose shapes do not fit; refuse (True) when most do: the file is for another base model."""
    misfits = []
    for target, adapter in list(result.layers.items()):
        reason = mismatch(adapter, target)
        if reason is not None:
            misfits.append(f"{target.canonical}: {reason}")
            del result.layers[target]
            result.unmatched.extend(adapter.keys)
    if not misfits:
        return False
    total = len(misfits) + len(result.layers)
    if len(misfits) * 2 > total:
        made_for = (
            f"{_article(file_arch)} {file_arch} model" if file_arch != "Unknown" else "another base model"
        )
        _refuse(
            result,
            f"{label} does not fit the loaded {model_arch} model: {len(misfits)} of {total} layers have other "
            f"shapes (e.g. {misfits[0]}); it was made for {made_for}. Nothing was applied; use it with the "
            "checkpoint it was trained for.",
            details=tuple(misfits[:_EXAMPLES]),
        )
        result.report.unmatched = list(result.unmatched)
        return True
    _warn(
        result,
        misfits,
        f"{label}: {len(misfits)} of {total} layers have shapes that do not fit the loaded model and were "
        "skipped; the rest was applied. Check that the LoRA was made for this base model.",
    )
    return False


def _resolve_named(file: LoraFile, index: TargetIndex, result: ResolvedLora) -> None:
    groups: dict[tuple[str, str], dict[str, tuple[str, KeyParts]]] = {}
    components = index.components()
    only_te2 = "te2" in components and "te1" not in components
    for key in file.tensors:
        if key.startswith(BUNDLE_PREFIX):
            continue
        parsed = parse_key(key)
        if parsed is None:
            result.unmatched.append(key)
            continue
        component = parsed.component
        if only_te2 and component == "te1" and key.startswith(UNNUMBERED_TE_PREFIXES):
            component = "te2"
        groups.setdefault((component, parsed.module), {})[parsed.part] = (key, parsed)

    configs = configs_from_metadata(file.metadata)
    zero_alpha: list[str] = []
    incomplete: list[str] = []
    for (component, module), parts in groups.items():
        keys = tuple(k for k, _ in parts.values())
        target = index.lookup(component, module)
        if target is None and component == "unet" and module.replace(".", "_").startswith("text_model_"):
            target = index.lookup("te1", module)
        if target is None or target in result.layers:
            result.unmatched.extend(keys)
            continue
        try:
            adapter = _build_adapter(file, parts, keys, module, configs.get(component))
        except (IndexError, KeyError, RuntimeError, ValueError):  # odd tensor shapes in a user file
            adapter = None
        if adapter is None:
            incomplete.append(module)
            result.unmatched.extend(keys)
            continue
        if adapter.alpha == 0:
            zero_alpha.append(module)
        result.layers[target] = adapter

    label = os.path.basename(file.path)
    if incomplete:
        _warn(
            result,
            incomplete,
            f"{label}: {len(incomplete)} module(s) lack the tensors their algorithm needs and were skipped; the "
            "rest was applied. The file may be damaged or written by an unsupported tool.",
        )
    if zero_alpha:
        _warn(
            result,
            zero_alpha,
            f"{label}: {len(zero_alpha)} module(s) store alpha = 0; applied with scale 1 as the trainers do "
            "(A1111 would apply nothing).",
        )


def _build_adapter(
    file: LoraFile,
    parts: dict[str, tuple[str, KeyParts]],
    keys: tuple[str, ...],
    module: str,
    config: object,
) -> LayerAdapter | None:
    names = set(parts)
    algo = next((a for part, a in ALGO_BY_PART if part in names), None)
    if algo is None:
        return None
    tensors = {part: file.tensors[key] for part, (key, _) in parts.items() if part != "alpha"}
    if algo == "oft" and tensors["oft_blocks"].dim() == 4:
        algo = "boft"
    if any(part not in tensors for part in REQUIRED_PARTS[algo]):
        return None
    if algo == "lokr" and not (
        ("lokr_w1" in tensors or {"lokr_w1_a", "lokr_w1_b"} <= tensors.keys())
        and ("lokr_w2" in tensors or {"lokr_w2_a", "lokr_w2_b"} <= tensors.keys())
    ):
        return None
    if algo == "norm" and "w_norm" not in tensors and "b_norm" not in tensors:
        return None
    alpha: float | None = None
    if "alpha" in parts:
        alpha = float(file.tensors[parts["alpha"][0]].float().reshape(-1)[0].item())
    elif config is not None and algo == "lora" and parts["down"][1].dotted:
        alpha = config.alpha_for(module, int(tensors["down"].shape[0]))
    dora_axis = None
    if "dora_scale" in parts and parts["dora_scale"][1].raw_part.startswith("lora_magnitude_vector"):
        dora_axis = "out"
    return LayerAdapter(algo=algo, tensors=tensors, alpha=alpha, dora_axis=dora_axis, keys=keys)


def _non_finite(file: LoraFile) -> list[str]:
    """Keys of floating tensors holding NaN or ±Inf.

    A float32 (float64 for float64 data) sum is finite exactly when every element is, unless finite float32 values
    overflow it; only then the elementwise check runs. The sum is several times faster than ``isfinite().all()``.
    """
    bad = []
    for key, tensor in file.tensors.items():
        if not tensor.is_floating_point() or not tensor.numel():
            continue
        acc = torch.float64 if tensor.dtype == torch.float64 else torch.float32
        if bool(torch.isfinite(tensor.sum(dtype=acc))):
            continue
        if not bool(
            torch.isfinite(tensor.float() if tensor.dtype.itemsize == 1 else tensor).all()
        ):  # fp8: no isfinite
            bad.append(key)
    return bad


def _add_embedding(result: ResolvedLora, key: str, tensor: torch.Tensor) -> None:
    """``bundle_emb.<token>.string_to_param.*`` / ``bundle_emb.<token>.clip_l`` -> embeddings[token][kind]."""
    rest = key[len(BUNDLE_PREFIX) :]
    token, _, kind = rest.partition(".")
    if not token or not kind:
        result.unmatched.append(key)
        return
    kind = "string_to_param" if kind.startswith("string_to_param") else kind
    # a copy: the host may keep embeddings registered long after the file is dropped, and a view would pin the
    # whole file's buffer in RAM
    result.embeddings.setdefault(token, {})[kind] = tensor.clone()


def _article(arch: str) -> str:
    """ "an" before names read with a vowel sound (SD1 = "ess-dee"), else "a"."""
    return "an" if arch[:1] in "SAEFIOU" else "a"


def _refuse(result: ResolvedLora, message: str, details: tuple[str, ...] = ()) -> None:
    """Nothing of this file is applied: no layers, no embeddings, an error Problem, verdict "refused"."""
    result.layers = {}
    result.embeddings = {}
    result.problems.append(Problem(result.path, message, severity="error", details=details))
    report = result.report
    report.verdict = "refused"
    report.keys_matched = 0
    report.problems = list(result.problems)


def _finish(result: ResolvedLora, report: CoverageReport, label: str) -> None:
    matched_keys = sum(len(a.keys) for a in result.layers.values())
    embedding_keys = sum(1 for k in result.embeddings.values() for _ in k)
    report.keys_matched = matched_keys + embedding_keys
    report.unmatched = list(result.unmatched)
    report.layers = _count_layers(result.layers)
    report.algorithms = sorted({a.algo for a in result.layers.values()})
    report.embeddings = sorted(result.embeddings)
    if not file_has_keys(report):
        _refuse(result, f"{label} holds no tensors; it is not a LoRA. Remove it or download it again.")
        return
    if not result.layers and not result.embeddings:
        examples = ", ".join(result.unmatched[:3])
        _refuse(
            result,
            f"{label}: none of its {report.keys_total} keys match a layer of the loaded "
            f"{report.model_architecture} model (unknown key set or another model type; e.g. {examples}). "
            "Nothing was applied; check that this is a LoRA for this model.",
            details=tuple(result.unmatched[:_EXAMPLES]),
        )
        return
    if result.unmatched:
        report.verdict = "partial"
        _warn(
            result,
            result.unmatched,
            f"{label}: {len(result.unmatched)} of {report.keys_total} keys match no layer of the loaded model "
            "and were ignored; the LoRA may be for another model variant.",
        )
    else:
        report.verdict = "ok"
    report.problems = list(result.problems)


def file_has_keys(report: CoverageReport) -> bool:
    """False for a file without a single tensor."""
    return report.keys_total > 0


def _count_layers(layers: dict[Target, LayerAdapter]) -> dict[str, int]:
    counts = {c: sum(1 for t in layers if t.component == c) for c in ("unet", "te1", "te2")}
    return {c: n for c, n in counts.items() if n}


def _warn(result: ResolvedLora, examples: list[str], message: str) -> None:
    """Add a warning Problem on the file of ``result``; its details are the first ``examples``."""
    result.problems.append(
        Problem(result.path, message, severity="warning", details=tuple(examples[:_EXAMPLES]))
    )
