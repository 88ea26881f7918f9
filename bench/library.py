"""Library benchmark: 5 000 generated LoRA files in 200 folders (run as ``python -m bench library``).

Measures, on this machine:
- cold scan: a fresh ``LoraLibrary`` without a cache file reads every header and sidecar;
- warm refresh: the same library refreshed again with nothing changed (stat only);
- warm start: a new ``LoraLibrary`` (a new process) over the same folders with the cache file from the cold scan;
- one change: one sidecar edited and one file touched, then refresh;
- page items: ``lora_ext.library.page_items`` (plain dicts: name, alias, relpath, arch, preview, sort keys, search);
- tab data: ``lora_ext.ui.cards.card_data`` for all entries when the UI package is present (issue 6).

Targets (2-core machine): cold < 5 s, warm refresh < 0.5 s, tab data < 1 s. Files are tiny (rank-1 tensors) but
their headers are realistic: full kohya key names for 48 modules x 3 keys, and the usual ``ss_*`` metadata with a
tag-frequency table. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

FILES = 5000
FOLDERS = 200
TARGETS = {"cold scan": 5.0, "warm refresh": 0.5, "tab data": 1.0}

_BLOCKS = [
    f"lora_unet_{half}_blocks_{b}_attentions_{a}_transformer_blocks_0_{part}"
    for half, blocks in (("down", range(3)), ("up", range(1, 4)))
    for b in blocks
    for a in range(2)
    for part in ("attn1_to_q", "attn1_to_k", "attn2_to_k", "attn2_to_v")
]
_TE = [
    f"lora_te_text_model_encoder_layers_{i}_self_attn_{p}_proj"
    for i in range(6)
    for p in ("q", "k", "v", "out")
]
MODULES = (_BLOCKS + _TE)[:48]


def _metadata(i: int, rng: random.Random) -> dict[str, str]:
    tags = {f"tag{rng.randrange(400)}": rng.randrange(1, 50) for _ in range(30)}
    return {
        "ss_output_name": f"alias_{i}" if i % 7 else f"shared_alias_{i % 3}",
        "ss_base_model_version": "sdxl_base_v1-0" if i % 4 == 0 else "sd_v1",
        "ss_network_module": "networks.lora",
        "ss_network_dim": "1",
        "ss_network_alpha": "1.0",
        "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
        "ss_resolution": "(512, 512)",
        "ss_clip_skip": "2",
        "ss_num_train_images": "1200",
        "ss_training_started_at": "1700000000.0",
        "ss_learning_rate": "0.0001",
        "ss_optimizer": "bitsandbytes.optim.adamw.AdamW8bit",
        "ss_tag_frequency": json.dumps({"10_subject": tags}),
        "ss_dataset_dirs": json.dumps({"10_subject": {"n_repeats": 10, "img_count": 120}}),
        "sshs_model_hash": f"{i:064x}",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.title": f"LoRA number {i}",
    }


def generate(base: Path, files: int = FILES, folders: int = FOLDERS, seed: int = 0) -> Path:
    """Write ``files`` tiny LoRAs into ``folders`` nested folders under ``base/Lora`` with sidecars and previews."""
    rng = random.Random(seed)
    root = base / "Lora"
    tensors = {}
    for module in MODULES:
        tensors[f"{module}.lora_down.weight"] = np.zeros((1, 4), dtype=np.float16)
        tensors[f"{module}.lora_up.weight"] = np.zeros((4, 1), dtype=np.float16)
        tensors[f"{module}.alpha"] = np.array(1.0, dtype=np.float16)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    for i in range(files):
        folder = root / f"group{i % 10}" / f"set{i % folders}"
        folder.mkdir(parents=True, exist_ok=True)
        name = "duplicate" if i % 50 == 0 and i < folders else f"lora_{i}"  # one bare name in several folders
        save_file(tensors, str(folder / f"{name}.safetensors"), metadata=_metadata(i, rng))
        if i % 3 == 0:
            (folder / f"{name}.preview.png").write_bytes(png)
        if i % 5 == 0:
            user = {"description": f"desc {i}", "activation text": f"trigger{i}", "preferred weight": 0.7}
            (folder / f"{name}.json").write_text(json.dumps(user), encoding="utf-8")
        if i % 10 == 0:
            info = {"baseModel": "Pony" if i % 20 == 0 else "SD 1.5", "trainedWords": [f"word{i}"], "id": i}
            (folder / f"{name}.civitai.info").write_text(json.dumps(info), encoding="utf-8")
    return root


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run(files: int = FILES, folders: int = FOLDERS, keep: str | None = None) -> dict[str, float]:
    """Generate the tree, run the measurements, print one line each; returns seconds per measurement."""
    from lora_ext.library import LoraLibrary, page_items

    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="lora_ext_bench_"))
    try:
        gen_s, root = _timed(lambda: generate(base, files, folders))
        os.sync()  # let the writeback of the generated files finish outside the measurements
        cache = base / "cache.json"
        library = LoraLibrary([root], cache_path=cache)
        results: dict[str, float] = {}
        results["cold scan"], cold = _timed(library.refresh)
        results["warm refresh"], warm = _timed(library.refresh)
        results["warm start"], start = _timed(lambda: LoraLibrary([root], cache_path=cache).refresh())
        entries = library.entries()
        sidecar = Path(entries[5].path).with_suffix(".json")
        sidecar.write_text(json.dumps({"activation text": "changed"}), encoding="utf-8")
        touched = entries[17].path
        os.utime(touched, (time.time() + 5, time.time() + 5))
        results["one change"], changed = _timed(library.refresh)
        results["page items"], items = _timed(lambda: page_items(library))
        tab = _tab_data(entries)
        if tab is not None:
            results["tab data"] = tab
        print(f"library bench: {len(entries)} LoRAs in {folders} folders (generated in {gen_s:.1f} s)")
        print(
            f"  cold scan      {results['cold scan']:.3f} s  ({cold.reads} reads, {len(cold.errors)} errors)"
        )
        print(f"  warm refresh   {results['warm refresh']:.3f} s  ({warm.reads} reads)")
        print(f"  warm start     {results['warm start']:.3f} s  ({start.reads} reads, from the cache file)")
        print(
            f"  one change     {results['one change']:.3f} s  ({changed.reads} reads: {len(changed.changed)} changed)"
        )
        print(f"  page items     {results['page items']:.3f} s  ({len(items)} dicts)")
        if tab is not None:
            print(f"  tab data       {tab:.3f} s  (lora_ext.ui.cards.card_data)")
        for name, target in TARGETS.items():
            if name in results:
                verdict = "ok" if results[name] < target else "MISSED"
                print(f"  target {name} < {target} s: {verdict} (ratio {results[name] / target:.2f})")
        return results
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def _tab_data(entries) -> float | None:
    try:
        from lora_ext.ui.cards import card_data
    except ImportError:
        return None
    seconds, _ = _timed(lambda: card_data(entries))
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m bench library [--files N] [--folders N] [--keep DIR]``."""
    parser = argparse.ArgumentParser(prog="bench library", description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=FILES)
    parser.add_argument("--folders", type=int, default=FOLDERS)
    parser.add_argument("--keep", help="generate into this folder and keep it")
    args = parser.parse_args(argv)
    results = run(args.files, args.folders, args.keep)
    return 0 if all(results.get(k, 0) < v for k, v in TARGETS.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
