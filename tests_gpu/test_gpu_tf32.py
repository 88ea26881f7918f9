"""The patch must not depend on the host's TF32 setting.

AUTOMATIC1111 enables TF32 at startup on CUDA (``modules/devices.py``: ``torch.backends.cuda.matmul.allow_tf32 =
True`` and ``torch.backends.cudnn.allow_tf32 = True``). With TF32 allowed, cuBLAS may round the inputs of float32
products to 10 mantissa bits; the patcher turns it off for its own products (``_full_float32_matmul`` in
``lora_ext/patcher.py``). Before it did, this test failed on an H100 (deltas off by 1.5e-4 of a 0.35 weight). On CPU
the flags have no effect.
"""

from __future__ import annotations

import contextlib

import torch
from gpu_helpers import (
    ALL,
    assert_bit_identical,
    build_model,
    check_model_against_oracle,
    mixed_set,
    oracle,
    resolve,
    snapshot,
)

from lora_ext.patcher import Patcher


@contextlib.contextmanager
def tf32_as_in_a1111():
    """``allow_tf32 = True`` for cuBLAS matmuls and cuDNN, as the webui sets them; the previous values afterwards."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_patch_under_the_webuis_tf32_setting_is_the_float32_patch(device, lora_files):
    """fp32 model, the four LoRAs of the mixed set, default strategy: applied while TF32 is allowed, every patched
    weight still matches the float64 oracle to rel 1e-5 of the tensor's max |value| (``check_against_oracle``), and
    is bit-identical to the patch applied with TF32 off."""
    model = build_model(device, torch.float32)
    loras = resolve(model, lora_files, ALL)
    active = mixed_set(loras)
    pristine = snapshot(model)
    patcher = Patcher()
    assert patcher.apply(active).ok
    ieee = snapshot(model)
    assert patcher.restore() == []
    with tf32_as_in_a1111():
        assert patcher.apply(active).ok
    check_model_against_oracle(model, oracle(model, active, pristine), pristine, torch.float32)
    assert_bit_identical(ieee, snapshot(model))
    assert patcher.restore() == []
    assert_bit_identical(pristine, snapshot(model))
