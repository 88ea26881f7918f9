"""Helpers of the GPU suite: the tiny model on a device, resolving the suite's LoRA files, CPU snapshots, the float64
oracle of a whole active set (from ``tests/oracles.py``) and the comparisons against it.

Units: weights are compared element by element; "ulp" is one unit in the last place of the storage dtype (fp16/bf16),
counted on the ordered integer line of the 16-bit encodings, so +0 and -0 are 0 ulp apart.
"""

# ruff: noqa: E402  (sys.path is set up before the imports that need it)
from __future__ import annotations

import gc
import importlib.util
import sys
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS_DIR = REPO / "tests"
# As tests/conftest.py does for the CPU suite: tests/ for the helpers' bare names (``oracles``, ``lora_writers``,
# ``tiny_models``, ``browser_helpers``), the repository root for ``lora_ext`` whatever the working directory.
for _path in (TESTS_DIR, REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def _load_tests_conftest():
    """tests/conftest.py under a name of its own (``conftest`` is the GPU suite's): importing it sets the offline
    environment and one intra-op CPU thread, as for the CPU suite."""
    spec = importlib.util.spec_from_file_location("lora_ext_tests_conftest", TESTS_DIR / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The seed of the tiny models (tests/conftest.py's).
SEED = _load_tests_conftest().SEED

import oracles
import torch
from torch import nn

from lora_ext.adapters import ActiveLora, LayerAdapter, ResolvedLora
from lora_ext.engine import LoraLoader
from lora_ext.keys.model_parts import ModelParts
from lora_ext.patcher import Patcher

#: The suite's four LoRA files of mixed algorithms (see ``conftest.lora_files``).
ALL = ("plain", "loha", "lokr", "dora")
#: (te, unet) multipliers of each file in the mixed set: different per component, negative ones included.
MULTIPLIERS = {"plain": (1.0, 0.8), "loha": (-0.5, 1.2), "lokr": (0.7, -0.9), "dora": (0.6, 1.0)}


def mixed_set(loras: dict[str, ResolvedLora], names=ALL) -> list[ActiveLora]:
    """The active set of ``names`` (in that order) at their ``MULTIPLIERS``."""
    return [ActiveLora(loras[n], te=MULTIPLIERS[n][0], unet=MULTIPLIERS[n][1]) for n in names]


def build_model(device: torch.device, dtype: torch.dtype) -> dict[str, nn.Module]:
    """The tiny SD1 UNet and CLIP text encoder (the weights the suite's LoRA files were written for), moved to
    ``device`` and converted to ``dtype`` (floating parameters and buffers only), as a ``ModelParts.from_diffusers``
    dict ``{"unet", "text_encoder"}``."""
    from lora_ext.demo import tiny_text_encoders, tiny_unet

    unet = tiny_unet("sd1", SEED).to(device=device, dtype=dtype)
    te = tiny_text_encoders("sd1", SEED)["te1"].to(device=device, dtype=dtype)
    return {"unet": unet, "text_encoder": te}


def roots(model: dict[str, nn.Module]) -> dict[str, nn.Module]:
    return {"unet": model["unet"], "te1": model["text_encoder"]}


def resolve(
    model: dict[str, nn.Module], files: dict[str, Path], names: Iterable[str]
) -> dict[str, ResolvedLora]:
    """Load and resolve the named files onto ``model`` with a fresh ``LoraLoader``; every file must map completely
    (no problem, no unmatched key)."""
    parts = ModelParts.from_diffusers(model)
    loader = LoraLoader(max_cached=0)
    out = {}
    for name in names:
        resolved = loader.resolve(str(files[name]), parts, name)
        assert isinstance(resolved, ResolvedLora), f"{name}: {resolved}"
        assert not resolved.problems and not resolved.unmatched, (
            name,
            resolved.problems,
            resolved.unmatched[:5],
        )
        assert resolved.layers, name
        out[name] = resolved
    return out


def only(lora: ResolvedLora, prefixes: tuple[str, ...]) -> ResolvedLora:
    """``lora`` restricted to targets whose canonical path starts with one of ``prefixes`` (same adapter objects)."""
    layers = {t: a for t, a in lora.layers.items() if t.canonical.startswith(prefixes)}
    assert layers, (lora.name, prefixes)
    return ResolvedLora(f"{lora.name}[{','.join(prefixes)}]", lora.path, layers)


def named_tensors(model: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of the model as ``"<component>.<name>"`` -> the live tensor."""
    out = {}
    for comp, root in roots(model).items():
        for name, t in list(root.named_parameters()) + list(root.named_buffers()):
            out[f"{comp}.{name}"] = t
    return out


def parameter_objects(model: dict[str, nn.Module]) -> dict[str, nn.Parameter]:
    return {f"{comp}.{n}": p for comp, root in roots(model).items() for n, p in root.named_parameters()}


def snapshot(model: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """A CPU copy (same dtype, same bits) of every parameter and buffer."""
    return {n: t.detach().to("cpu", copy=True) for n, t in named_tensors(model).items()}


def touch_state(model: dict[str, nn.Module]) -> dict[str, tuple[int, int]]:
    """``(data_ptr, version counter)`` of every parameter and buffer: changes when a tensor is replaced or written."""
    return {n: (t.data_ptr(), t._version) for n, t in named_tensors(model).items()}


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def bit_identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (NaN-safe; +0 and -0 differ)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(as_bytes(a), as_bytes(b))


def assert_bit_identical(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))[:5]
    bad = [n for n in want if not bit_identical(want[n], got[n])]
    assert not bad, f"{len(bad)} tensor(s) differ bitwise, e.g. {bad[:5]}"


def module_names(model: dict[str, nn.Module]) -> dict[int, str]:
    """id(module) -> ``"<component>.<module path>"``."""
    return {
        id(m): f"{comp}.{n}" if n else comp
        for comp, root in roots(model).items()
        for n, m in root.named_modules()
    }


def weight_ids(model: dict[str, nn.Module], loras: Iterable[ResolvedLora]) -> set[str]:
    """Qualified names of the weights targeted by ``loras``."""
    names = module_names(model)
    return {f"{names[id(t.module)]}.{t.weight}" for lora in loras for t in lora.layers}


# --- the oracle ------------------------------------------------------------------------------------------------------


def oracle_delta(adapter: LayerAdapter, w0: torch.Tensor, m: float) -> torch.Tensor:
    """ΔW of one adapter at multiplier ``m`` in float64 on CPU, from ``tests/oracles.py`` (FORMATS.md §9.1, §9.3,
    §9.4, §9.12). ``w0`` is the pristine weight in float64. Raises for parts the suite's files do not contain."""
    t = {k: v.detach().cpu() for k, v in adapter.tensors.items()}
    shape = w0.shape
    if adapter.algo == "lora":
        assert set(t) <= {"up", "down", "mid", "dora_scale"}, sorted(t)
        if "dora_scale" not in t:
            return oracles.lora(t["up"], t["down"], adapter.alpha, m, shape, mid=t.get("mid"))
        g = t["dora_scale"]
        # The suite writes output-axis magnitudes only ([out, 1, ...]); an input-axis one would need "in" here.
        assert adapter.dora_axis in (None, "out") and g.shape[0] == shape[0] and g.numel() == shape[0], (
            g.shape
        )
        scaled = oracles.lora(t["up"], t["down"], adapter.alpha, 1.0, shape, mid=t.get("mid"))
        return oracles.dora(w0, scaled, g, "out", m)
    if adapter.algo == "loha":
        assert set(t) <= {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"}, sorted(t)
        return oracles.loha(
            t["hada_w1_a"], t["hada_w1_b"], t["hada_w2_a"], t["hada_w2_b"], adapter.alpha, m, shape,
            t1=t.get("hada_t1"), t2=t.get("hada_t2"),
        )  # fmt: skip
    if adapter.algo == "lokr":
        parts = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
        assert set(t) <= set(parts), sorted(t)
        return oracles.lokr(
            adapter.alpha, m, shape,
            w1=t.get("lokr_w1"), w1a=t.get("lokr_w1_a"), w1b=t.get("lokr_w1_b"),
            w2=t.get("lokr_w2"), w2a=t.get("lokr_w2_a"), w2b=t.get("lokr_w2_b"), t2=t.get("lokr_t2"),
        )  # fmt: skip
    raise AssertionError(f"the oracle dispatch has no case for algorithm {adapter.algo!r}")


@dataclass
class Expected:
    """The oracle for one weight: ``exact`` = W₀ + Σ ΔWᵢ and ``magnitude`` = |W₀| + Σ |ΔWᵢ| (float64, CPU);
    ``deltas`` in the order of the active list."""

    w0: torch.Tensor
    exact: torch.Tensor
    magnitude: torch.Tensor
    deltas: list[torch.Tensor] = field(default_factory=list)


def oracle(
    model: dict[str, nn.Module], active: list[ActiveLora], pristine: dict[str, torch.Tensor]
) -> dict[str, Expected]:
    """``{qualified weight name: Expected}`` for every weight that ``active`` changes (non-zero multiplier), each
    ΔWᵢ computed against the pristine weight (``pristine``: a CPU snapshot in the storage dtype).

    Independent of ``lora_ext.algorithms`` and of the patcher; the adapters (parts, α) are the key resolver's reading
    of the files, which ``tests/`` checks against the writing tools.
    """
    names = module_names(model)
    out: dict[str, Expected] = {}
    for entry in active:
        assert entry.blocks is None and entry.dyn is None  # not modelled here
        for target, adapter in entry.lora.layers.items():
            # written out here rather than taken from ActiveLora.multiplier, which the patcher uses too
            m = float(entry.unet if target.component == "unet" else entry.te)
            if m == 0.0:
                continue
            assert target.rows is None  # diffusers models have no fused q/k/v
            name = f"{names[id(target.module)]}.{target.weight}"
            w0 = pristine[name].double()
            delta = oracle_delta(adapter, w0, m)
            rec = out.get(name)
            if rec is None:
                rec = out[name] = Expected(w0, w0.clone(), w0.abs())
            rec.exact += delta
            rec.magnitude += delta.abs()
            rec.deltas.append(delta)
    return out


def ordered16(t: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 values as integers on one ordered line (adjacent representable values differ by 1)."""
    i = t.contiguous().view(torch.int16).to(torch.int32)
    return torch.where(i < 0, -(i & 0x7FFF), i)


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise distance in ulps between two fp16 (or two bf16) tensors of the same shape."""
    assert a.dtype == b.dtype and a.dtype in (torch.float16, torch.bfloat16)
    return (ordered16(a) - ordered16(b)).abs()


#: Relative tolerance (of the tensor's largest |exact value|) for float32 storage.
FP32_REL = 1e-5


def check_against_oracle(name: str, got: torch.Tensor, want: Expected, dtype: torch.dtype) -> None:
    """``got`` (the patched weight, any device) must be the oracle's float64 sum rounded once to ``dtype``:

    - float32: max |got − exact| ≤ 1e-5 · max |exact| over the tensor;
    - fp16/bf16: at most 1 ulp from ``exact`` rounded once to ``dtype``. Where the exact sum nearly cancels, float32
      arithmetic (the patcher's, on the device) cannot be correctly rounded to 1 ulp of a tiny result; there the
      element may instead be within 2⁻²⁰·(|W₀| + Σ|ΔWᵢ|) + 2⁻²⁴·max(|W₀| + Σ|ΔWᵢ|) of the exact value (16 float32
      ulps of its own terms plus one of the tensor's largest), and at most 0.1 % of the elements (or 8) may need this.
    """
    got = got.detach().cpu()
    assert got.dtype == dtype and got.shape == want.exact.shape, (name, got.dtype, got.shape)
    assert torch.isfinite(got).all(), name
    if dtype == torch.float32:
        err = (got.double() - want.exact).abs().max().item()
        bound = FP32_REL * want.exact.abs().max().item()
        assert err <= bound, f"{name}: max |error| {err:.3g} > {bound:.3g} (rel 1e-5 of the tensor's max)"
        return
    rounded = want.exact.to(dtype)
    ulps = ulp_distance(got, rounded)
    slack = 2.0**-20 * want.magnitude + 2.0**-24 * want.magnitude.max()
    cancels = (got.double() - want.exact).abs() <= slack
    bad = (ulps > 1) & ~cancels
    assert not bad.any(), (
        f"{name}: {int(bad.sum())} of {got.numel()} elements are more than 1 ulp ({dtype}) from the oracle, "
        f"worst {int(ulps.max())} ulp"
    )
    lenient = int(((ulps > 1) & cancels).sum())
    assert lenient <= max(8, got.numel() // 1000), (
        f"{name}: {lenient} elements needed the cancellation allowance"
    )


def check_model_against_oracle(
    model: dict[str, nn.Module],
    expected: dict[str, Expected],
    pristine: dict[str, torch.Tensor],
    dtype: torch.dtype,
) -> int:
    """Every weight in ``expected`` matches its oracle, every other parameter and buffer is bit-identical to
    ``pristine``. Returns how many patched weights differ from their pristine bits (the check's premise)."""
    live = named_tensors(model)
    assert set(expected) <= set(live), sorted(set(expected) - set(live))[:5]
    changed = 0
    for name, t in live.items():
        if name in expected:
            check_against_oracle(name, t, expected[name], dtype)
            changed += not bit_identical(t, pristine[name])
        else:
            assert bit_identical(t, pristine[name]), f"{name} is not targeted but changed"
    return changed


# --- patcher internals the checks need ---------------------------------------------------------------------------


def backup_tensors(patcher: Patcher) -> list[tuple[str, torch.Tensor]]:
    """``(strategy, pristine tensor)`` of every backup the patcher holds. There is no public accessor (only
    ``held_bytes()``), so this reads ``Patcher._applied`` → ``_Applied.backups`` → ``TensorBackup.original``, as
    ``tests/test_restore.py`` does."""
    out = []
    for rec in patcher._applied.values():
        for backup in rec.backups:
            if backup.original is not None:
                out.append((backup.strategy, backup.original))
    return out


def backup_refs(patcher: Patcher) -> list[weakref.ref]:
    """Weak references to every backup tensor (all must be dead once restored)."""
    return [weakref.ref(t) for _, t in backup_tensors(patcher)]


def device_allocated(device: torch.device) -> int | None:
    """Bytes the CUDA caching allocator has handed out on ``device`` (all work finished first); None off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.memory_allocated(device)


def warm_up(device: torch.device, dtype: torch.dtype, strategy: str, files: dict[str, Path], names) -> None:
    """One apply/restore on a throwaway model, so that memory the CUDA libraries keep for good after their first use
    (cuBLAS/cuBLASLt workspaces, allocated through torch's caching allocator) is allocated before a test measures.
    Nothing of it stays referenced: the LoRAs are resolved again for the model under test."""
    if device.type != "cuda":
        return
    model = build_model(device, dtype)
    loras = resolve(model, files, names)
    patcher = Patcher(strategy)
    assert patcher.apply([ActiveLora(lora, 0.5, 0.5) for lora in loras.values()]).ok
    patcher.restore(release_memory=True)
    del model, loras, patcher
    gc.collect()
    torch.cuda.synchronize(device)
