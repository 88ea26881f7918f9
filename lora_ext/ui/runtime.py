"""What the standalone app and the CLI share: loading a pipeline (embedded tiny default or a user's model), the
demo LoRA folder, the library, one generation, and the comparison grid. No Gradio here.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_ext.errors import Problem

#: Where the embedded default writes its demo LoRAs on first run (git-ignored in the repository).
DEFAULT_HOME = ".lora_ext_demo"
#: Weights of the comparison grid.
GRID_WEIGHTS = (-1.0, 0.0, 0.5, 1.0)
#: How much the difference row of a comparison grid amplifies pixel differences.
DIFF_GAIN = 8


@dataclass
class Runtime:
    """A loaded pipeline with its LoRA library and diffusers host.

    pipe: the diffusers pipeline. host: ``DiffusersHost``. library: ``LoraLibrary`` over ``lora_dirs``.
    tiny: True for the embedded default (64x64 images, 2 steps are enough).
    """

    pipe: Any
    host: Any
    library: Any
    lora_dirs: list[str]
    tiny: bool

    @property
    def defaults(self) -> dict[str, int]:
        """Default image size and steps for this model."""
        if self.tiny:
            return {"width": 64, "height": 64, "steps": 4}
        return {"width": 512, "height": 512, "steps": 20}


def load_pipeline(model: str | None, family: str = "sd1") -> Any | Problem:
    """The embedded tiny pipeline (``model`` None) or a diffusers folder / single-file checkpoint on CPU, float32."""
    if model is None:
        from lora_ext.demo import build_tiny_pipeline

        return build_tiny_pipeline(family, seed=0)
    path = Path(model)
    if not path.exists():
        return Problem(
            model, "Model not found. Give a diffusers pipeline folder or a .safetensors/.ckpt checkpoint."
        )
    try:
        if path.is_dir():
            from diffusers import DiffusionPipeline

            pipe = DiffusionPipeline.from_pretrained(
                str(path), safety_checker=None, requires_safety_checker=False
            )
        else:
            from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

            cls = StableDiffusionXLPipeline if "xl" in path.name.lower() else StableDiffusionPipeline
            pipe = cls.from_single_file(str(path), local_files_only=True)
    except Exception as exc:  # a user file: report, do not crash with a traceback
        hint = (
            ""
            if path.is_dir()
            else " Single-file checkpoints need their model config in the Hugging Face cache; offline, convert"
            " the checkpoint to a diffusers folder once and pass that folder."
        )
        return Problem(model, f"Could not load the model ({type(exc).__name__}: {exc}).{hint}")
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def ensure_demo_loras(folder: str | os.PathLike, pipe: Any) -> list[str]:
    """Write the demo LoRA files (with sidecars and previews) into ``folder`` unless they are already there."""
    import lora_ext.demo

    folder = Path(folder)
    existing = sorted(str(p) for p in folder.rglob("*.safetensors")) if folder.is_dir() else []
    if existing:
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    writer = getattr(lora_ext.demo, "write_demo_loras", None)
    if writer is None:
        return []
    written = writer(folder, pipe)
    return [str(p) for p in written] if written else sorted(str(p) for p in folder.rglob("*.safetensors"))


def open_runtime(
    model: str | None = None, lora_dirs: Sequence[str] = (), home: str | os.PathLike = DEFAULT_HOME
) -> Runtime | Problem:
    """Load the pipeline, the library (demo LoRAs under ``home`` when no folder is given) and the host."""
    from lora_ext.hosts.diffusers_host import DiffusersHost
    from lora_ext.library import LoraLibrary

    pipe = load_pipeline(model)
    if isinstance(pipe, Problem):
        return pipe
    dirs = [str(Path(d).resolve()) for d in lora_dirs]
    missing = [d for d in dirs if not Path(d).is_dir()]
    if missing:
        return Problem(missing[0], "LoRA folder not found. Check the --lora-dir path.")
    if not dirs:
        demo_dir = Path(home) / "loras"
        if not ensure_demo_loras(demo_dir, pipe):
            return Problem(
                str(demo_dir), "No demo LoRA could be written here; give --lora-dir with your LoRAs."
            )
        dirs = [str(demo_dir.resolve())]
    library = LoraLibrary(dirs)
    library.refresh()
    return Runtime(
        pipe=pipe, host=DiffusersHost(pipe, library), library=library, lora_dirs=dirs, tiny=model is None
    )


def generate(
    runtime: Runtime,
    prompt: str,
    negative: str = "",
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
    **overrides: Any,
):
    """One image with the LoRAs tagged in ``prompt``; returns ``lora_ext.hosts.diffusers_host.Generation``.

    on_step(done, total) is called after every denoising step when the pipeline supports
    ``callback_on_step_end``. overrides: width, height, steps.
    """
    import torch

    d = runtime.defaults
    steps = int(overrides.get("steps", d["steps"]))
    kwargs: dict[str, Any] = {}
    if on_step is not None and "callback_on_step_end" in inspect.signature(runtime.pipe.__call__).parameters:

        def callback(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            on_step(step + 1, steps)
            return tensors

        kwargs["callback_on_step_end"] = callback
    return runtime.host.generate(
        prompt,
        negative_prompt=negative or None,
        width=int(overrides.get("width", d["width"])),
        height=int(overrides.get("height", d["height"])),
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(int(seed)),
        **kwargs,
    )


def with_weight(prompt: str, name: str, weight: float) -> str:
    """``prompt`` with every tag of ``name`` removed and ``<lora:name:weight>`` appended."""
    from lora_ext.syntax import format_tag

    kept = re.sub(
        r"<(?:lora|lyco):([^:>]*)(?::[^>]*)?>", lambda m: "" if m.group(1) == name else m.group(0), prompt
    )
    kept = re.sub(r"\s+", " ", kept).strip()
    return (kept + " " + format_tag(name, weight)).strip()


def comparison_grid(
    runtime: Runtime,
    prompt: str,
    name: str,
    weights: Sequence[float] = GRID_WEIGHTS,
    negative: str = "",
    seed: int = 0,
    differences: bool = False,
    **overrides: Any,
) -> tuple[Any, list[Any]]:
    """One image per weight of LoRA ``name`` (same seed), side by side with weight labels.

    differences: add a second row with each image's difference to the weight-0 image (absolute per-channel
    difference, amplified ``DIFF_GAIN`` times), so a LoRA's effect shows even on the tiny model's noise-like images.
    Returns (grid PIL image, list of ``Generation``).
    """
    from PIL import Image, ImageChops, ImageDraw

    results = [
        runtime_generate(runtime, with_weight(prompt, name, w), negative, seed, **overrides) for w in weights
    ]
    images = [r.images[0].convert("RGB") for r in results]
    rows = [images]
    labels = [f"{name}: {w:g}" if images[0].width >= 160 else f"{w:g}" for w in weights]
    if differences and 0.0 in weights:
        base = images[list(weights).index(0.0)]
        rows.append(
            [ImageChops.difference(img, base).point(lambda v: min(255, v * DIFF_GAIN)) for img in images]
        )
    w, h = images[0].size
    label = 14
    grid = Image.new("RGB", (w * len(images), (h + label) * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        top = r * (h + label)
        for i, img in enumerate(row):
            grid.paste(img, (i * w, top + label))
            text = labels[i] if r == 0 else (f"diff x{DIFF_GAIN}" if weights[i] else "reference")
            draw.text((i * w + 2, top + 1), text, fill="black")
    return grid, results


def mean_change(image: Any, base: Any) -> float:
    """Mean absolute per-channel pixel difference of two same-size images, 0-255."""
    from PIL import ImageChops, ImageStat

    diff = ImageChops.difference(image.convert("RGB"), base.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


runtime_generate = generate
