"""Shared pytest fixtures: one CPU thread, a fixed seed, tiny models and demo LoRA folders.

Model fixtures are function-scoped and build fresh objects (a tiny pipeline takes a few tens of milliseconds once
diffusers is imported), so a test may patch what it gets. Only read-only things (files on disk) are session-scoped.
Heavy imports (diffusers, transformers, ldm) happen inside the fixtures, so tests that need no model pay nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)

TESTS_DIR = Path(__file__).resolve().parent
# helpers (tiny_models, lora_writers, ...) import as top-level modules whatever pytest's import mode
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
if str(TESTS_DIR.parent) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR.parent))

SEED = 0


@pytest.fixture
def seed() -> int:
    """The test seed; torch's global RNG is reset to it."""
    torch.manual_seed(SEED)
    return SEED


@pytest.fixture
def make_pipeline():
    """Factory: ``make_pipeline(family="sd1", seed=0)`` -> a fresh tiny diffusers pipeline."""
    from lora_ext.demo import build_tiny_pipeline

    return build_tiny_pipeline


@pytest.fixture
def sd1_pipe():
    """A fresh tiny SD1 ``StableDiffusionPipeline`` (seed 0)."""
    from lora_ext.demo import build_tiny_pipeline

    return build_tiny_pipeline("sd1", SEED)


@pytest.fixture
def sd2_pipe():
    """A fresh tiny SD2 ``StableDiffusionPipeline`` (seed 0)."""
    from lora_ext.demo import build_tiny_pipeline

    return build_tiny_pipeline("sd2", SEED)


@pytest.fixture
def sdxl_pipe():
    """A fresh tiny ``StableDiffusionXLPipeline`` (seed 0)."""
    from lora_ext.demo import build_tiny_pipeline

    return build_tiny_pipeline("sdxl", SEED)


@pytest.fixture
def make_a1111_model():
    """Factory: ``make_a1111_model(family="sd1", seed=0, unet=None, text_encoders=None)`` -> fresh A1111-shaped model."""
    from tiny_models import a1111_model

    return a1111_model


@pytest.fixture
def a1111_sd1():
    """A fresh A1111-shaped tiny SD1 model with the weights of ``sd1_pipe`` (seed 0)."""
    from tiny_models import a1111_model

    return a1111_model("sd1", SEED)


@pytest.fixture
def a1111_sd2():
    """A fresh A1111-shaped tiny SD2 model (OpenCLIP-shaped TE) with the weights of ``sd2_pipe``."""
    from tiny_models import a1111_model

    return a1111_model("sd2", SEED)


@pytest.fixture
def a1111_sdxl():
    """A fresh A1111-shaped tiny SDXL model (conditioner with two text embedders) with the weights of ``sdxl_pipe``."""
    from tiny_models import a1111_model

    return a1111_model("sdxl", SEED)


@pytest.fixture(scope="session")
def demo_lora_dir(tmp_path_factory) -> Path:
    """A session-wide folder with the SD1 demo LoRAs, sidecars and previews (read-only: copy before editing)."""
    from lora_ext.demo import write_demo_loras

    folder = tmp_path_factory.mktemp("demo_loras")
    write_demo_loras(folder, "sd1", SEED)
    return folder
