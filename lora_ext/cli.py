"""Command line: ``python -m lora_ext demo | app | generate | inspect``.

- ``demo``: the main job on the embedded tiny default: a LoRA applied from a prompt tag through syntax, library,
  engine and patcher, its coverage report, the restore checked bit for bit, and a comparison grid image.
- ``app``: the standalone Gradio app on 127.0.0.1 (embedded default, or ``--model`` and ``--lora-dir``).
- ``generate``: batch generation from a prompt with tags; ``--grid NAME`` renders weights -1, 0, 0.5, 1.
- ``inspect``: what a LoRA file holds and how it maps onto the model.

User mistakes print a message and exit with status 2; nothing here prints a traceback for them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lora_ext.errors import Problem

DEFAULT_OUT = "demo_output"


def _fail(problem: Problem | str) -> int:
    print(f"error: {problem}", file=sys.stderr)
    return 2


def _setup_torch() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(min(4, torch.get_num_threads()))


def _snapshot(parts) -> dict[str, object]:
    return {
        f"{comp}.{name}": t.detach().clone()
        for comp, module in parts.modules().items()
        for name, t in module.state_dict().items()
    }


def _compare(parts, snapshot: dict[str, object]) -> tuple[int, int]:
    """(tensors differing from the snapshot, tensors compared); equality is bitwise (dtype and every element)."""
    import torch

    current = _snapshot(parts)
    differing = sum(
        1 for k, t in snapshot.items() if not (current[k].dtype == t.dtype and torch.equal(current[k], t))
    )
    return differing, len(snapshot)


def _shown(path: str | Path) -> str:
    """A path as a user types it: relative to the working folder when it lies below it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _ok(good: bool) -> str:
    return "OK" if good else "FAILED"


def cmd_demo(args: argparse.Namespace) -> int:
    from lora_ext.ui.cards import format_size
    from lora_ext.ui.runtime import (
        DIFF_GAIN,
        GRID_WEIGHTS,
        comparison_grid,
        generate,
        mean_change,
        open_runtime,
    )

    print(
        "lora_ext demo: a LoRA applied to a Stable Diffusion pipeline from a prompt tag, then removed again."
    )
    print("Runs offline on the CPU with an embedded tiny model (random weights: its images look like noise).")
    print()
    rt = open_runtime(None, (), home=args.home)
    if isinstance(rt, Problem):
        return _fail(rt)
    entries = sorted(rt.library.entries(), key=lambda e: e.relpath)
    if not entries:
        return _fail(f"no demo LoRA found in {rt.lora_dirs}")
    chosen = next((e for e in entries if args.lora in (e.relpath, e.name)), None) if args.lora else None
    if args.lora and chosen is None:
        return _fail(
            f"{args.lora}: no such demo LoRA. Choose one of: {', '.join(e.relpath for e in entries)}."
        )
    chosen = chosen or next((e for e in entries if e.name == "demo_style"), None)
    chosen = chosen or next((e for e in entries if e.arch == rt.host.architecture), entries[0])

    before = _snapshot(rt.host.parts)
    params = sum(t.numel() for t in before.values())
    print(
        f"Model   tiny {rt.host.architecture} pipeline built in-process: UNet + CLIP text encoder, "
        f"{len(before)} weight tensors, {params / 1e6:.1f} M parameters"
    )
    folder = _shown(rt.lora_dirs[0])
    print(
        f"LoRAs   {len(entries)} demo files in {folder} (written on first run; delete the folder to recreate)"
    )
    for e in entries:
        algo = "+".join(e.summary.algorithms) or "?"
        rank = f" r{e.summary.rank}" if e.summary.rank else ""
        print(f"          {e.relpath:<20} {e.arch:<5} {algo}{rank:<4} {format_size(e.size):>9}")
    print(f"Using   {chosen.name} ({_shown(chosen.path)}) at weight {args.weight:g}")
    print()

    prompt = f"a photo of a cat <lora:{chosen.name}:{args.weight:g}> {chosen.activation_text}".strip()
    print(f'1. Apply. Prompt: "{prompt}"')
    print("   (a card click in the app inserts the same: the tag plus the LoRA's activation text)")
    with rt.host.applied(prompt) as applied:
        print(f'   The pipeline gets the prompt without the tag: "{" ".join(applied.prompt.split())}"')
        print("   Coverage report (how the file's keys map onto this model):")
        shown = set()
        for _, report in applied.reports:
            for line in report.lines() if hasattr(report, "lines") else [str(report)]:
                print(f"     {line}")
            shown.update(getattr(report, "problems", ()))
        for p in applied.problems:
            if p not in shown:
                print(f"     {p.severity}: {p}")
        changed, total = _compare(rt.host.parts, before)
        print(f"   {changed} of {total} weight tensors are patched while the LoRA is applied.")
    differing, total = _compare(rt.host.parts, before)
    restored = not differing
    print(
        f"2. Restore. Weights restored bit-identically: {total - differing} of {total} tensors equal the "
        f"original bit for bit.  {_ok(restored)}"
    )
    if not restored:
        print(f"RESTORE FAILED: {differing} of {total} tensors differ from the original", file=sys.stderr)
        return 1
    if not applied.active or not changed:
        print("the LoRA did not change any weight", file=sys.stderr)
        return 1

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid, results = comparison_grid(rt, "a photo of a cat", chosen.name, seed=args.seed, differences=True)
    grid_path = out / "grid.png"
    grid.save(grid_path)
    plain = generate(rt, "a photo of a cat", seed=args.seed).images[0]
    tagged = results[-1].images[0]
    same = plain.tobytes() == tagged.tobytes()
    differing, total = _compare(rt.host.parts, before)
    print(f"3. Grid. Seed {args.seed}, {chosen.name} at weights -1, 0, 0.5 and 1, side by side:")
    print(f"     {grid_path.resolve()}")
    base = results[GRID_WEIGHTS.index(0.0)].images[0]
    changes = ", ".join(
        f"{w:g}: {mean_change(r.images[0], base):.1f}"
        for w, r in zip(GRID_WEIGHTS, results, strict=True)
        if w
    )
    print(
        f"   Mean pixel change against weight 0 (0-255): {changes}; the second row shows it, amplified {DIFF_GAIN}x."
    )
    print(
        f"   With the tag the image differs from the image without it: {'yes' if not same else 'no'}.  {_ok(not same)}"
    )
    print(
        f"   After {len(results) + 1} generations the weights are still bit-identical to the original: "
        f"{'yes' if not differing else 'no'}.  {_ok(not differing)}"
    )
    print()
    print("Next")
    print(
        "  bash run.sh app     the app on http://127.0.0.1:7861/ : click a LoRA card to put its tag into the"
    )
    print("                      prompt (click again to take it out), then Generate")
    print("  .venv/bin/python -m lora_ext generate --model DIFFUSERS_FOLDER --lora-dir YOUR_LORAS \\")
    print('      --prompt "a cat <lora:NAME:0.8>" [--grid NAME]      your own model and LoRAs')
    print("  .venv/bin/python -m lora_ext inspect FILE.safetensors   how one LoRA file maps onto the model")
    return 0 if not differing and not same else 1


def cmd_generate(args: argparse.Namespace) -> int:
    from lora_ext.syntax import tag_name_problem
    from lora_ext.ui.runtime import comparison_grid, generate, open_runtime

    for flag, value, step in (
        ("--width", args.width, 8),
        ("--height", args.height, 8),
        ("--steps", args.steps, 1),
    ):
        if value is not None and (value < step or value % step):
            what = "a positive multiple of 8 (pixels)" if step == 8 else "at least 1"
            return _fail(f"{flag} {value}: must be {what}.")
    if args.grid:
        problem = tag_name_problem(args.grid)
        if problem is not None:
            reason = problem.message.split(";")[0]
            return _fail(
                f'--grid "{args.grid}": {reason}; give the LoRA name only, the grid sets the weights.'
            )
    rt = open_runtime(args.model, args.lora_dir or (), home=args.home)
    if isinstance(rt, Problem):
        return _fail(rt)
    if args.grid:
        entry, problems = rt.host.lookup(args.grid)
        if entry is None:
            return _fail(problems[0] if problems else Problem(args.grid, "Lora not found."))
    sizes = {k: v for k, v in (("width", args.width), ("height", args.height), ("steps", args.steps)) if v}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.grid:
        grid, results = comparison_grid(
            rt, args.prompt, args.grid, negative=args.negative, seed=args.seed, **sizes
        )
        path = out / f"grid-{Path(args.grid).name}.png"
        grid.save(path)
        print(f"wrote {path}")
        for line in results[-1].applied.info_lines():
            print(f"  {line}")
        return 0
    code = 0
    for i in range(args.count):
        gen = generate(rt, args.prompt, args.negative, seed=args.seed + i, **sizes)
        path = out / f"image-{args.seed + i}.png"
        gen.images[0].save(path)
        print(f"wrote {path}")
        for line in gen.applied.info_lines():
            print(f"  {line}")
        if any(p.severity == "error" for p in gen.applied.problems):
            code = 3
    return code


def cmd_inspect(args: argparse.Namespace) -> int:
    from lora_ext.errors import is_problem
    from lora_ext.ui.runtime import load_pipeline

    path = Path(args.file)
    if not path.is_file():
        return _fail(Problem(args.file, "File not found."))
    from lora_ext.engine import LoraLoader
    from lora_ext.hosts.diffusers_host import detect_family, find_components
    from lora_ext.keys.model_parts import ModelParts

    pipe = load_pipeline(args.model)
    if is_problem(pipe):
        return _fail(pipe)
    components = find_components(pipe)
    parts = ModelParts.from_diffusers(components, detect_family(components))
    resolved = LoraLoader(max_cached=1).resolve(str(path.resolve()), parts, path.stem)
    if is_problem(resolved):
        return _fail(resolved)
    report = resolved.report
    print(f"{path}: against the {'embedded tiny ' if args.model is None else ''}{parts.architecture} model")
    lines = report.lines() if hasattr(report, "lines") else [str(report)]
    for line in lines:
        print(f"  {line}")
    for p in resolved.problems:
        print(f"  {p.severity}: {p}")
    return 0


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def cmd_app(args: argparse.Namespace) -> int:
    import time

    from lora_ext.ui.app import launch_app
    from lora_ext.ui.runtime import open_runtime

    if not _port_free(args.host, args.port):
        return _fail(
            f"{args.host}:{args.port} is in use (another app running?). Pass --port with a free port."
        )
    what = args.model or "the embedded tiny SD1 model"
    print(f"lora_ext app: loading {what} and scanning the LoRA folders...")
    started = time.monotonic()
    rt = open_runtime(args.model, args.lora_dir or (), home=args.home)
    if isinstance(rt, Problem):
        return _fail(rt)
    report = rt.library.last_report
    problems = sum(1 for e in rt.library.entries() if e.problems) + len(getattr(report, "errors", []) or [])
    print(
        f"  {rt.host.architecture} model; {len(rt.library.entries())} LoRAs in {', '.join(rt.lora_dirs)}"
        + (f" ({problems} with problems: see the card's i button)" if problems else "")
        + f"; ready in {time.monotonic() - started:.1f} s"
    )
    print(f"Open http://{args.host}:{args.port}/ in a browser. Ctrl+C stops the app.")
    launch_app(rt, args.host, args.port, block=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lora_ext",
        description="LoRA tags (<lora:NAME:W>) on diffusers pipelines. Start with: python -m lora_ext demo",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, model: bool = True) -> None:
        if model:
            p.add_argument(
                "--model", help="diffusers pipeline folder or single-file checkpoint (default: tiny)"
            )
            p.add_argument(
                "--lora-dir", action="append", help="LoRA folder (repeatable; default: demo LoRAs)"
            )
        p.add_argument(
            "--home", default=".lora_ext_demo", help="where the demo LoRAs are written on first run"
        )

    p = sub.add_parser(
        "demo",
        help="apply a demo LoRA from a prompt tag on the embedded tiny model, show coverage, restore, grid",
    )
    common(p, model=False)
    p.add_argument("--lora", help="demo LoRA to apply (default: demo_style)")
    p.add_argument("--weight", type=float, default=1.0, help="weight in the tag (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the grid images (default 0)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder for grid.png (default {DEFAULT_OUT})")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("app", help="standalone Gradio app on 127.0.0.1")
    common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7861)
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("generate", help="generate images from a prompt with <lora:…> tags")
    common(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--steps", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--grid", metavar="NAME", help="comparison grid of LoRA NAME at weights -1, 0, 0.5, 1")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("inspect", help="coverage of one LoRA file against the model")
    p.add_argument("file")
    p.add_argument("--model")
    p.set_defaults(func=cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    _setup_torch()
    return int(args.func(args) or 0)
