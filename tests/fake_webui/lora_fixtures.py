"""LoRA files and reference weights for the A1111 host tests.

Files are written once per session by ``tests/lora_writers.py`` (kohya format, real metadata and hashes) into a
session folder and copied into each test's ``models/Lora``. Reference weights come from the engine used directly
(``LoraLoader`` + ``Patcher``) on a fresh tiny model, outside any autocast: that is what the model must hold during
sampling when the host works.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def write_lora(folder: Path, name: str, family: str, seed: int = 0, **kwargs: Any) -> Path:
    """A kohya LoRA for the tiny ``family`` model (UNet + every TE), written by the project's real-file writer."""
    from lora_writers import write_kohya

    from lora_ext.demo import tiny_text_encoders, tiny_unet

    comps = {"unet": tiny_unet(family, 0), **tiny_text_encoders(family, 0)}
    written = write_kohya(
        comps, folder / f"{name}.safetensors", family=family, seed=seed, strength=0.3, **kwargs
    )
    return Path(written.path)


def install(src: Path, lora_dir: Path, name: str | None = None) -> Path:
    """Copy a written LoRA into a webui's LoRA folder (optionally renamed)."""
    dst = lora_dir / f"{name or src.stem}{src.suffix}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


@contextlib.contextmanager
def sd1_webui(root: Path, loras: dict[str, Path]) -> Iterator[Any]:
    """A started fake webui with a tiny SD1 model loaded (``.model``, its pristine ``.original`` state) and
    ``loras`` (tag name -> written file) installed in ``models/Lora``; stopped afterwards."""
    from fake_webui.harness import Webui, fake_modules

    with fake_modules():
        w = Webui(root).start()
        w.model = w.load_model("sd1")
        w.original = state(w.model)
        for name, path in loras.items():
            install(path, w.lora_dir, name)
        try:
            yield w
        finally:
            w.stop()


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def move_everything(model: torch.nn.Module) -> None:
    """What low-VRAM ``module.to(device)`` does to a parameter (A1111_CONTRACT §8.3): ``.data`` becomes a copy (new
    storage, same values, the version counter untouched)."""
    for param in model.parameters():
        param.data = param.data.clone()


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names whose tensors differ in any bit (empty when bit-identical)."""
    assert a.keys() == b.keys()
    return [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]


def expected_state(family: str, loras: list[tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights of a fresh tiny A1111 model with ``(file, te, unet)`` or ``(file, te, unet, lbw value)`` applied by
    the engine directly (each LoRA named after its file stem, as a tag names it)."""
    from fake_webui.harness import tiny_model

    from lora_ext.adapters import ActiveLora
    from lora_ext.blocks import parse_block_weights
    from lora_ext.engine import LoraLoader
    from lora_ext.keys.model_parts import ModelParts
    from lora_ext.patcher import Patcher

    model = tiny_model(family, seed)
    parts = ModelParts.from_a1111(model)
    loader = LoraLoader()
    active = []
    for path, te, unet, *lbw in loras:
        resolved = loader.resolve(str(path), parts, Path(path).stem)
        blocks = parse_block_weights(lbw[0], family) if lbw else None
        active.append(ActiveLora(resolved, te=te, unet=unet, blocks=blocks))
    result = Patcher().apply(active)
    assert result.ok, result.problems
    return state(model)
