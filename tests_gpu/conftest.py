"""Fixtures of the GPU suite: the device under test and the LoRA files every test applies.

The device comes from ``LORA_EXT_TEST_DEVICE`` (default ``cuda``). When it names a CUDA device that torch cannot use,
every test FAILS (never skips) with a message saying so: this suite exists to be run on a GPU, and a run that silently
checked nothing must not look green. ``LORA_EXT_TEST_DEVICE=cpu`` runs the same tests on CPU to check their logic on a
machine without a GPU (GPU-only assertions become their CPU counterparts, see each test's docstring).

Fixtures never touch the device, so a missing GPU is reported by the check in ``pytest_pyfunc_call`` as a test failure
rather than as a setup error. The helpers of ``tests/`` (tiny models, LoRA writers, oracles, ``tests/conftest.py``) are
imported from there, not copied.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from gpu_helpers import SEED  # also puts tests/ and the repository root on sys.path

ENV = "LORA_EXT_TEST_DEVICE"


def selected_device() -> str:
    """The device string the suite runs on (``LORA_EXT_TEST_DEVICE``, default ``cuda``)."""
    return os.environ.get(ENV, "").strip() or "cuda"


def device_problem(name: str) -> str | None:
    """Why ``name`` cannot be used by this torch, or None when it can. Does not initialise CUDA when it cannot."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        return f"{ENV}={name!r} is not a torch device ({exc}); use e.g. 'cuda', 'cuda:0' or 'cpu'."
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return f"{ENV}={name!r}: this suite supports only 'cuda' (the default) and 'cpu'."
    if not torch.cuda.is_available():
        chosen = (
            f"{ENV}={name!r}"
            if os.environ.get(ENV, "").strip()
            else f"{ENV} is not set, so the device is 'cuda',"
        )
        return (
            f"{chosen} but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}). This suite checks the patcher on a "
            f"GPU: run it on a machine with a CUDA GPU, or set {ENV}=cpu to check only the tests' logic on CPU."
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        return f"{ENV}={name!r} but torch sees only {torch.cuda.device_count()} CUDA device(s)."
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Fail (not skip, not error) every test when the selected device is unusable."""
    problem = device_problem(selected_device())
    if problem is not None:
        pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device under test (``LORA_EXT_TEST_DEVICE``, default ``cuda``); not touched here. An unusable one is
    replaced by ``meta`` here, which no test body sees: ``pytest_pyfunc_call`` fails the test first."""
    name = selected_device()
    return torch.device("meta") if device_problem(name) is not None else torch.device(name)


@pytest.fixture(scope="session")
def lora_files(tmp_path_factory) -> dict[str, Path]:
    """LoRA files for the tiny SD1 UNet + CLIP text encoder (seed ``SEED``), written once on CPU in float32 by the
    helpers of ``tests/lora_writers.py`` (kohya key tables, lycoris-lora) and ``tests/browser_helpers.py``
    (diffusers + PEFT). Read-only. Every file targets both the text encoder and the UNet:

    - ``plain``: kohya LoRA / LoCon (rank 4, α 2, 3×3 convs too), algorithm ``lora``;
    - ``loha``: LyCORIS LoHa (rank 4, α 2, convs too);
    - ``lokr``: LyCORIS LoKr (convs too; full and factored W2);
    - ``dora``: kohya LoRA with an output-axis DoRA magnitude (``dora_scale`` ``[out, 1]``), attention only;
    - ``style``: diffusers/PEFT LoRA (attention q/k/v/out of the UNet, q/v of the text encoder), for the host tests.
    """
    from browser_helpers import write_peft_lora
    from lora_writers import write_kohya, write_lycoris

    from lora_ext.demo import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("gpu_loras")
    pipe = build_tiny_pipeline("sd1", SEED)
    files = {
        "plain": write_kohya(pipe, folder / "plain.safetensors", conv_dim=4, seed=1).path,
        "loha": write_lycoris(pipe, folder / "loha.safetensors", algo="loha", conv=True, seed=2).path,
        "lokr": write_lycoris(pipe, folder / "lokr.safetensors", algo="lokr", conv=True, seed=3).path,
        "dora": write_kohya(pipe, folder / "dora.safetensors", dora="out", seed=4).path,
    }
    host_dir = folder / "host"
    host_dir.mkdir()
    files["style"] = Path(write_peft_lora(host_dir, "style", seed=1))
    return files
