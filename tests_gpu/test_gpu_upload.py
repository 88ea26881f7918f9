"""LoRA factors reach the device through ``lora_ext/patching/upload.py`` (packed pinned buffers, one host-to-device
copy per chunk of at most ``CHUNK_BYTES``). The tiny models need only one chunk, so the other tests never switch
chunks; here the chunk size is made small enough that an apply needs many.

On CPU the uploader leaves CPU weights alone (no chunk is made) and the test checks only that.
"""

from __future__ import annotations

import pytest
import torch
from gpu_helpers import (
    ALL,
    assert_bit_identical,
    build_model,
    check_model_against_oracle,
    device_allocated,
    mixed_set,
    oracle,
    resolve,
    snapshot,
    warm_up,
)

from lora_ext.patcher import Patcher

DTYPE = torch.float16
SMALL_CHUNK = 16 << 10  # bytes


@pytest.mark.parametrize("strategy", ["swap", "copy"])
def test_factors_uploaded_in_many_small_chunks_give_the_same_bits(device, lora_files, strategy, monkeypatch):
    """fp16 model, the four-file mixed set. With ``CHUNK_BYTES`` = 16 KiB the apply makes more than 5 uploads on
    CUDA (counted at ``_pack_and_copy``; none on CPU); the patched weights are bit-identical to those of an apply with
    the default chunk size and match the oracle (≤ 1 ulp); restore gives the pristine bits back, and on CUDA
    ``torch.cuda.memory_allocated()`` (bytes) is back to its value before the apply (no chunk outlives it)."""
    from lora_ext.patching import upload

    warm_up(device, DTYPE, strategy, lora_files, ALL)
    model = build_model(device, DTYPE)
    loras = resolve(model, lora_files, ALL)
    active = mixed_set(loras)
    pristine = snapshot(model)
    patcher = Patcher(strategy)
    assert patcher.apply(active).ok
    one_chunk = snapshot(model)
    assert patcher.restore() == []
    allocated = device_allocated(device)

    uploads: list[int] = []
    real = upload._pack_and_copy

    def counting(tensors, target):
        uploads.append(len(tensors))
        return real(tensors, target)

    monkeypatch.setattr(upload, "CHUNK_BYTES", SMALL_CHUNK)
    monkeypatch.setattr(upload, "_pack_and_copy", counting)
    assert patcher.apply(active).ok
    if device.type == "cuda":
        assert len(uploads) > 5, f"only {len(uploads)} uploads: the chunk switching is not exercised"
    else:
        assert uploads == []
    assert_bit_identical(one_chunk, snapshot(model))
    check_model_against_oracle(model, oracle(model, active, pristine), pristine, DTYPE)
    assert patcher.restore() == []
    assert_bit_identical(pristine, snapshot(model))
    assert device_allocated(device) == allocated
