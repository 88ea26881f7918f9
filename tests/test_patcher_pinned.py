"""The copy strategy's pinned backups are carved out of 64 MiB blocks (``lora_ext/patching/pinned.py``) instead of one
block each, which torch's pinned allocator rounds up to a power of two. CI has no CUDA, so the packing is checked in
ordinary memory (``pin=False``) with small slabs; ``tests_gpu/test_gpu_memory.py`` checks the pinned bytes on a GPU."""

from __future__ import annotations

import gc

import pytest
import torch

from lora_ext.patching import pinned
from lora_ext.patching.pinned import PinnedSlabs


@pytest.fixture
def small_slabs(monkeypatch):
    monkeypatch.setattr(pinned, "SLAB_BYTES", 4096)
    return PinnedSlabs(pin=False)


def _span(t: torch.Tensor) -> tuple[int, int]:
    return t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()


def test_tensors_are_packed_first_fit_aligned_and_apart(small_slabs):
    shapes = [
        ((100, 3), torch.float32),
        ((7,), torch.float16),
        ((900,), torch.float32),
        ((5, 5), torch.bfloat16),
    ]
    tensors = [small_slabs.empty(shape, dtype) for shape, dtype in shapes * 3]
    for t, (shape, dtype) in zip(tensors, shapes * 3, strict=True):
        assert t.shape == shape and t.dtype == dtype and t.is_contiguous()
        assert (t.data_ptr() - t.untyped_storage().data_ptr()) % pinned.ALIGN == 0  # from the slab's start
    spans = sorted(_span(t) for t in tensors)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), "two tensors share bytes"
    # 1200, 14, 3600 and 50 bytes, three times, first fit into 4096-byte slabs at 512-byte starts: the first slab takes
    # 1200 + 14 + 50 + 1200, each 3600 needs a slab of its own, and a fifth takes 14 + 50 + 1200 + 14 + 50
    assert small_slabs.slab_bytes() == 5 * 4096
    for i, t in enumerate(tensors):
        t.fill_(i)
    assert all(bool((t == i).all()) for i, t in enumerate(tensors))


def test_a_tensor_larger_than_a_slab_gets_memory_of_its_own(small_slabs):
    big = small_slabs.empty((2000,), torch.float32)
    assert big.shape == (2000,) and small_slabs.slab_bytes() == 0
    assert big.untyped_storage().nbytes() == 8000


def test_a_slab_is_filled_again_once_everything_handed_out_of_it_is_gone(small_slabs):
    a = small_slabs.empty((512,), torch.float32)  # half a slab
    b = small_slabs.empty((256,), torch.float32)
    start = a.data_ptr()
    del a
    gc.collect()
    c = small_slabs.empty((512,), torch.float32)
    assert small_slabs.slab_bytes() == 2 * 4096, "b still lives in the first slab, so c needs a second one"
    del b, c
    gc.collect()
    d = small_slabs.empty((1000,), torch.float32)
    assert d.data_ptr() == start and small_slabs.slab_bytes() == 2 * 4096


def test_reset_forgets_the_slabs_but_not_the_tensors_handed_out(small_slabs):
    a = small_slabs.empty((10,), torch.float32)
    a.fill_(3)
    small_slabs.reset()
    assert small_slabs.slab_bytes() == 0
    b = small_slabs.empty((10,), torch.float32)
    assert _span(a)[0] != _span(b)[0] and bool((a == 3).all())
