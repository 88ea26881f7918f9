"""Float32 products in full precision while a patch is computed on a GPU, whatever TF32 setting the host made.

The webui allows TF32 (CONTRACT: ``modules/devices.py`` at startup); on a GPU that rounds float32 product inputs to 10
mantissa bits. CI has no GPU, so these check the setting the patcher's math mode makes for a CUDA device; the effect on
real products is checked on a GPU by ``tests_gpu/test_gpu_tf32.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lora_ext.patcher import _math_mode

#: Runs in a fresh interpreter: torch's TF32 settings are process-wide and remember which API wrote them. argv[1]
#: names the API the host used: "legacy" (``allow_tf32 = True``, as the webui), "new" (``fp32_precision``),
#: "precision" (``set_float32_matmul_precision``) or "none". Prints what each read gives before, inside and after.
_PROBE = """
import sys, torch
from lora_ext.patcher import _math_mode
matmul = torch.backends.cuda.matmul
host = sys.argv[1]
if host == "legacy":
    matmul.allow_tf32 = True
elif host == "new":
    matmul.fp32_precision = "tf32"
elif host == "precision":
    torch.set_float32_matmul_precision("high")
def reads():
    out = []
    for read in (lambda: matmul.allow_tf32, lambda: matmul.fp32_precision, torch.get_float32_matmul_precision):
        try:
            out.append(str(read()))
        except RuntimeError:
            out.append("refused")
    return out
before = reads()
with _math_mode({torch.device("cuda", 0), torch.device("cpu")}):
    inside = matmul.fp32_precision
print(before == reads(), inside, before)
"""


@pytest.mark.parametrize("host", ["legacy", "new", "precision", "none"])
def test_cuda_math_mode_computes_in_full_float32_and_leaves_the_host_setting_as_it_was(host):
    """Inside: cuBLAS float32 products in IEEE float32; after: every read of the three TF32 APIs gives what it gave
    before (a value, or the same refusal), whichever API the host wrote."""
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, host],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    same, inside, before = run.stdout.split(" ", 2)
    assert inside == "ieee"
    assert same == "True", f"host {host}: reads before {before.strip()} changed after the patch"
    if host != "none":
        assert "tf32" in before or "True" in before, (
            f"host {host}: TF32 was not on to begin with: {before.strip()}"
        )


def test_the_host_setting_comes_back_after_an_error():
    matmul = torch.backends.cuda.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        with pytest.raises(ValueError), _math_mode({torch.device("cuda", 0)}):
            assert matmul.fp32_precision == "ieee"
            raise ValueError("boom")
        assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision = previous


def test_cpu_only_patches_leave_the_setting_alone():
    matmul = torch.backends.cuda.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        with _math_mode({torch.device("cpu")}):
            assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision = previous
