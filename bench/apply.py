"""Patcher benchmark on an SD1.5- or SDXL-shaped model: apply, restore, switch and re-apply against floors and diffusers.

Run: ``python -m bench apply [--model sd15|sdxl] [--device cpu|cuda] [--repeats N] [--diffusers-repeats N]
[--no-diffusers] [--dtypes fp32,fp16] [--strategies swap,copy]``.

Model: a real diffusers UNet and CLIP text encoder(s) with random weights (``bench.sd15_shapes``,
``bench.sdxl_shapes``); LoRAs: three rank-32 kohya files (fp16) over the standard targets (SD1.5: 264, 37.9 MB;
SDXL: 986). Every figure is the median of ``--repeats`` runs, in milliseconds (CUDA: after a synchronize). Floors, per
dtype: M = one copy (clone) of exactly the touched tensors (M fresh: the same after freed memory went back to the OS,
or to the driver on CUDA, so page faults included); G = an in-place ``addmm_`` of every layer's float32 delta factors
into a same-shaped float32 buffer (the arithmetic any patcher must do). On CPU the patcher's helper thread is on when
torch's kernels leave a core idle (``Patcher(overlap=None)``). RSS after restore is shown as the allocator leaves it
(it keeps freed memory for the next apply) and after ``restore(release_memory=True)``; on CUDA the device memory too.
Targets (issue 3, swap on CPU): apply ≤ 1.3·G, restore ≤ 10 ms, switch ≤ 1.3·2G, unchanged set ≤ 5 ms; copy:
apply ≤ 1.3·(M + G), restore ≤ 1.2·M; ≥ 30× faster than diffusers load + fuse; RAM held after restore ≤ 1 MiB.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.sd15_shapes import build_sd15, target_modules, write_kohya_lora
from bench.sdxl_shapes import build_sdxl, sdxl_targets

MiB = 1024 * 1024


def trim() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc) and cached CUDA memory to the driver, so memory
    figures show live memory only."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def rss() -> int:
    """Resident set size of this process in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples RSS every millisecond on a thread while the block runs; ``extra`` = peak − RSS at entry."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def extra(self) -> int:
        return self.peak - self.base


class Ms(float):
    """A median in milliseconds that also remembers the fastest run (``best``), to show how noisy the machine was."""

    best: float = 0.0

    def cell(self) -> str:
        return f"{float(self):.1f} ({self.best:.0f})"


def sync() -> None:
    """Wait for queued CUDA kernels (nothing to wait for on CPU), so a timing covers the work it started."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def pinned_owned() -> int:
    """Bytes of pinned host memory torch's CUDA host allocator owns (in use and cached; 0 when unknown)."""
    stats = getattr(torch.cuda.memory, "host_memory_stats", None)
    if stats is None:
        return 0
    values = dict(stats())
    # newer torch: allocated_bytes = owned, active_bytes = in use; older torch: reserved_bytes = owned
    key = "allocated_bytes.current" if "active_bytes.current" in values else "reserved_bytes.current"
    return int(values.get(key, 0))


def device_bytes() -> int:
    """Bytes torch has allocated on the current CUDA device (0 without CUDA)."""
    return torch.cuda.memory_allocated() if torch.cuda.is_available() and torch.cuda.is_initialized() else 0


def median_ms(fn: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None) -> Ms:
    """Median wall time of ``fn`` in ms over ``repeats`` runs, ``setup`` (untimed) before each."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    result = Ms(statistics.median(times))
    result.best = min(times)
    return result


#: Bytes of float32 buffers the G floor holds at once (SDXL's touched weights are 11.7 GB in float32).
G_GROUP_BYTES = 2 << 30


def floors(targets: dict, lora_file, repeats: int) -> tuple[Ms, Ms, Ms]:
    """(M, M fresh, G) in ms for the current dtype and device of the target weights.

    M clones into memory the allocator kept from the previous repeat; M fresh first gives freed memory back to the OS
    (``malloc_trim``; on CUDA, to the driver), so the clone also pays the page faults, as an apply after
    ``release_memory`` does. G is timed over groups of layers whose float32 buffers fit in ``G_GROUP_BYTES``: each
    repeat's figure is the sum of its groups' times.
    """
    from safetensors.torch import load_file

    weights = [m.weight.detach() for m in targets.values()]
    # Warm-up: M measures memory the allocator kept, as a repeated apply finds it.
    [w.clone() for w in weights]
    m_ms = median_ms(lambda: [w.clone() for w in weights], repeats)
    m_fresh_ms = median_ms(lambda: [w.clone() for w in weights], repeats, trim)
    sd = load_file(str(lora_file))
    factors = []
    for key, w in zip(targets, weights, strict=True):
        rank = sd[f"{key}.lora_down.weight"].shape[0]
        scale = float(sd[f"{key}.alpha"]) / rank
        up = sd[f"{key}.lora_up.weight"].float().reshape(w.shape[0], rank) * scale
        down = sd[f"{key}.lora_down.weight"].float().reshape(rank, -1)
        factors.append((up.to(w.device), down.to(w.device)))
    groups: list[list[int]] = [[]]
    size = 0
    for i, w in enumerate(weights):
        if size + 4 * w.numel() > G_GROUP_BYTES and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += 4 * w.numel()
    times = [0.0] * repeats
    for group in groups:
        buffers = [weights[i].float().reshape(weights[i].shape[0], -1).clone() for i in group]
        pairs = [factors[i] for i in group]

        def addmm_group(buffers=buffers, pairs=pairs) -> None:
            for buf, (up, down) in zip(buffers, pairs, strict=True):
                buf.addmm_(up, down)

        addmm_group()  # warm-up: kernels chosen, pages touched
        for r in range(repeats):
            times[r] += median_ms(addmm_group, 1)
        del buffers
        trim()
    g_ms = Ms(statistics.median(times))
    g_ms.best = min(times)
    return m_ms, m_fresh_ms, g_ms


def bench_patcher(parts, targets: dict, paths: list[Path], strategy: str, repeats: int) -> dict[str, float]:
    from lora_ext.adapters import ActiveLora
    from lora_ext.engine import LoraLoader
    from lora_ext.patcher import Patcher
    from lora_ext.patching.memory import release_pinned_memory

    loader = LoraLoader(max_cached=8)
    a, b, c = (loader.resolve(str(p), parts, p.stem) for p in paths)
    for lora in (a, b, c):
        assert len(lora.layers) == len(targets), (lora.name, len(lora.layers), lora.problems)
    patcher = Patcher(strategy)
    set_a = [ActiveLora(a)]
    set_bc = [ActiveLora(b, 0.7, 0.7), ActiveLora(c, -0.5, -0.5)]
    out: dict[str, float] = {}
    patcher.apply(set_a)  # warm-up (first-touch page faults, allocator)
    patcher.restore()
    out["apply"] = median_ms(lambda: patcher.apply(set_a), repeats, patcher.restore)
    patcher.restore()
    out["apply_released"] = median_ms(
        lambda: patcher.apply(set_a), repeats, lambda: patcher.restore(release_memory=True)
    )
    patcher.restore()

    def cold() -> None:
        fresh = LoraLoader(max_cached=2)
        fresh.index_for(parts)  # the target index is per model, built once when the model loads
        lora = fresh.resolve(str(paths[0]), parts, paths[0].stem)
        patcher.apply([ActiveLora(lora)])

    out["apply_cold"] = median_ms(cold, repeats, patcher.restore)
    patcher.restore()
    out["restore"] = median_ms(patcher.restore, repeats, lambda: patcher.apply(set_a))
    out["switch"] = median_ms(
        lambda: patcher.apply(set_bc), repeats, lambda: (patcher.restore(), patcher.apply(set_a))
    )
    patcher.restore()
    fused = Patcher(strategy, fuse=True)
    out["switch_fused"] = median_ms(
        lambda: fused.apply(set_bc), repeats, lambda: (fused.restore(), fused.apply(set_a))
    )
    fused.restore()
    # restore without the cost of freeing: the patched tensors are kept alive by a list until afterwards
    keep: list = []

    def patched_and_pinned() -> None:
        patcher.restore()
        keep.clear()
        patcher.apply(set_a)
        keep.extend(m.weight.data for m in targets.values())

    out["restore_no_free"] = median_ms(patcher.restore, repeats, patched_and_pinned)
    keep.clear()

    def parse_resolve() -> None:
        fresh = LoraLoader(max_cached=2)
        fresh.index_for(parts)
        fresh.resolve(str(paths[0]), parts, paths[0].stem)

    out["parse_resolve"] = median_ms(parse_resolve, repeats)
    patcher.apply(set_a)
    out["unchanged"] = median_ms(lambda: patcher.apply(set_a), repeats)
    out["held_patched_MiB"] = patcher.held_bytes() / MiB
    patcher.restore()
    trim()
    before, before_device = rss(), device_bytes()
    if before_device:
        torch.cuda.reset_peak_memory_stats()
    with PeakRss() as peak:
        patcher.apply(set_a)
        sync()
    out["peak_extra_MiB"] = peak.extra / MiB
    if before_device:
        out["peak_extra_device_MiB"] = (torch.cuda.max_memory_allocated() - before_device) / MiB
    patcher.restore()
    out["pooled_after_restore_MiB"] = max(0, rss() - before) / MiB
    if before_device:
        # page-locked host memory of the copy strategy's backups: torch's pinned blocks, from an empty cache
        sync()
        release_pinned_memory()
        owned = pinned_owned()
        patcher.apply(set_a)
        sync()
        out["pinned_patched_MiB"] = (pinned_owned() - owned) / MiB
        patcher.restore()
    patcher.apply(set_a)
    patcher.restore(release_memory=True)
    out["held_after_restore_MiB"] = max(0, rss() - before) / MiB
    if before_device:
        out["device_after_restore_MiB"] = (device_bytes() - before_device) / MiB
    out["held_by_patcher_after_restore_B"] = patcher.held_bytes()
    return out


def bench_diffusers(parts: dict, path: Path, expected: int, repeats: int) -> tuple[float, float]:
    """(load_lora_weights + fuse_lora, unfuse_lora + unload_lora_weights) in ms on the same UNet and text encoder(s)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from lora_ext.demo.tiny import tiny_scheduler, tiny_tokenizer, tiny_vae

    common = dict(
        vae=tiny_vae().to(parts["unet"].device), tokenizer=tiny_tokenizer(), scheduler=tiny_scheduler()
    )
    if "text_encoder_2" in parts:
        pipe = StableDiffusionXLPipeline(
            **parts, **common, tokenizer_2=tiny_tokenizer(), add_watermarker=False
        )
    else:
        pipe = StableDiffusionPipeline(
            **parts, **common, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    load, unload = [], []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        pipe.load_lora_weights(str(path.parent), weight_name=path.name)
        pipe.fuse_lora(lora_scale=1.0)
        sync()
        load.append((time.perf_counter() - start) * 1000)
        wrapped = sum(name.endswith("lora_A") for m in parts.values() for name, _ in m.named_modules())
        assert wrapped == expected, f"diffusers loaded {wrapped} of {expected} LoRA layers"
        start = time.perf_counter()
        pipe.unfuse_lora()
        pipe.unload_lora_weights()
        sync()
        unload.append((time.perf_counter() - start) * 1000)
    return statistics.median(load), statistics.median(unload)


def verdict(value: float, limit: float) -> str:
    return f"{'ok ' if value <= limit else 'MISS'} (≤ {limit:.1f})"


def report(
    dtype: str, m_ms: Ms, m_fresh_ms: Ms, g_ms: Ms, results: dict[str, dict], diffusers: tuple | None
) -> None:
    print(
        f"\n== {dtype}: floors M = {m_ms:.1f} ms (fastest {m_ms.best:.0f}; clone of the touched tensors), "
        f"M fresh = {m_fresh_ms:.1f} ms (fastest {m_fresh_ms.best:.0f}; the same into memory new from the OS), "
        f"G = {g_ms:.1f} ms (fastest {g_ms.best:.0f}; addmm_ of every delta into a float32 buffer)"
    )
    rows = [
        ("apply (parsed, cached)", "apply"),
        ("  same, memory given back to the OS before", "apply_released"),
        ("apply (cold, page cache)", "apply_cold"),
        ("  of which parse + resolve (fresh loader)", "parse_resolve"),
        ("restore", "restore"),
        ("  same, freeing the patched tensors excluded", "restore_no_free"),
        ("switch A → B(0.7)+C(−0.5)", "switch"),
        ("  same, B and C fused into one product", "switch_fused"),
        ("apply unchanged set", "unchanged"),
        ("peak extra RAM during apply, MiB", "peak_extra_MiB"),
        ("backups held while patched, MiB", "held_patched_MiB"),
        ("pinned host memory while patched, MiB", "pinned_patched_MiB"),
        ("RSS growth after restore (allocator keeps), MiB", "pooled_after_restore_MiB"),
        ("  same, restore(release_memory=True), MiB", "held_after_restore_MiB"),
        ("bytes the patcher holds after restore", "held_by_patcher_after_restore_B"),
        ("peak extra device memory during apply, MiB", "peak_extra_device_MiB"),
        ("device memory held after restore, MiB", "device_after_restore_MiB"),
    ]
    rows = [(label, key) for label, key in rows if all(key in r for r in results.values())]
    strategies = list(results)
    print(f"{'ms: median of the repeats (fastest)':50s}" + "".join(f"{s:>18s}" for s in strategies))
    for label, key in rows:
        cells = [v.cell() if isinstance(v, Ms) else f"{v:.1f}" for v in (results[s][key] for s in strategies)]
        print(f"{label:50s}" + "".join(f"{c:>18s}" for c in cells))
    swap, copy = results.get("swap"), results.get("copy")
    print("targets:")
    if swap:
        print(f"  swap apply {swap['apply']:.1f} ms            {verdict(swap['apply'], 1.3 * g_ms)}")
        print(f"  swap restore {swap['restore']:.2f} ms         {verdict(swap['restore'], 10)}")
        print(f"  swap switch {swap['switch']:.1f} ms           {verdict(swap['switch'], 2.6 * g_ms)}")
        print(f"  swap unchanged {swap['unchanged']:.2f} ms        {verdict(swap['unchanged'], 5)}")
    if copy:
        print(f"  copy apply {copy['apply']:.1f} ms            {verdict(copy['apply'], 1.3 * (m_ms + g_ms))}")
        print(f"  copy restore {copy['restore']:.1f} ms          {verdict(copy['restore'], 1.2 * m_ms)}")
    for s, r in results.items():
        print(
            f"  {s} RAM after restore(release_memory=True) {r['held_after_restore_MiB']:.2f} MiB   "
            f"{verdict(r['held_after_restore_MiB'], 1)}"
        )
    if diffusers:
        load, unload = diffusers
        best = min(r["apply"] for r in results.values())
        print(
            f"diffusers load_lora_weights + fuse_lora: {load:.0f} ms; unfuse_lora + unload_lora_weights: {unload:.0f} ms"
        )
        print(
            f"  speed-up of our apply (cached): {load / best:.0f}×   {'ok' if load / best >= 30 else 'MISS'} (≥ 30×)"
        )
        print(
            f"  speed-up of our apply (cold):   {load / min(r['apply_cold'] for r in results.values()):.0f}×"
        )


def build(model: str, dtype: torch.dtype) -> tuple[dict, dict, str, str]:
    """(diffusers parts, kohya key -> module, family, ``ss_base_model_version``) of the named model on CPU."""
    if model == "sdxl":
        parts = build_sdxl(dtype=dtype)
        return parts, sdxl_targets(parts), "sdxl", "sdxl_base_v1-0"
    unet, te = build_sd15()
    return {"unet": unet, "text_encoder": te}, target_modules(unet, te), "sd1", "sd_v1"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench apply", description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--diffusers-repeats", type=int, default=5)
    parser.add_argument("--no-diffusers", action="store_true")
    parser.add_argument("--dtypes", default="fp32,fp16")
    parser.add_argument("--strategies", default="swap,copy")
    args = parser.parse_args(argv)
    from lora_ext.keys import ModelParts

    device = torch.device(args.device)
    if device.type == "cuda":
        if device.index is None:  # plain "cuda": the current device, named by index for set_device
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    names = args.dtypes.split(",")
    dtypes = [{"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[d] for d in names]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {where}, {args.model}, repeats {args.repeats}",
        flush=True,
    )
    start = time.perf_counter()
    parts, targets, family, base = build(args.model, dtypes[0])
    touched = sum(m.weight.numel() for m in targets.values())
    prefixes = [
        p
        for p in ("lora_unet", "lora_te", "lora_te1", "lora_te2")
        if any(k.startswith(p + "_") for k in targets)
    ]
    counts = " + ".join(f"{sum(k.startswith(p + '_') for k in targets)} {p[5:].upper()}" for p in prefixes)
    print(f"model built in {time.perf_counter() - start:.1f} s: {len(targets)} targets ({counts}),"
          f" {touched / 1e6:.1f} M touched weights", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_apply_") as tmp:
        paths = [
            write_kohya_lora(targets, Path(tmp) / f"{n}.safetensors", seed=i, base=base)
            for i, n in enumerate("abc")
        ]
        print(f"LoRA files: 3 × {paths[0].stat().st_size / 1e6:.1f} MB (rank 32, fp16)", flush=True)
        model_parts = ModelParts.from_diffusers(parts, family=family)
        for name, dtype in zip(names, dtypes, strict=True):
            for module in parts.values():
                module.to(device=device, dtype=dtype)
            trim()
            m_ms, m_fresh_ms, g_ms = floors(targets, paths[0], args.repeats)
            results = {
                s: bench_patcher(model_parts, targets, paths, s, args.repeats)
                for s in args.strategies.split(",")
            }
            diffusers = None
            if dtype == torch.float32 and not args.no_diffusers:
                diffusers = bench_diffusers(parts, paths[0], len(targets), args.diffusers_repeats)
            report(name, m_ms, m_fresh_ms, g_ms, results, diffusers)
            sys.stdout.flush()
    return 0
