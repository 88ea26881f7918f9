"""Batched upload of LoRA factors to the weights' device (``lora_ext/patching/upload.py``).

CI has no GPU, so the bytes are checked by packing for the CPU (the same packing and views a GPU upload uses), and the
hand-out logic with weights on the ``meta`` device (a non-CPU device that stores no values). The values after a real
CUDA upload are checked by ``tests_gpu/``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lora_ext.adapters import LayerAdapter, Target
from lora_ext.patching import upload
from lora_ext.patching.plan import Contribution, Slot
from lora_ext.patching.upload import Uploader, _pack_and_copy


def _slot(module: nn.Module, adapter: LayerAdapter, name: str = "a") -> Slot:
    target = Target("unet", name, name, module=module)
    return Slot(module, "weight", "bias", [Contribution(target, adapter, 0.5, None, name, (name,))])


def _lora(out: int, inp: int, rank: int = 2, dtype=torch.float16) -> LayerAdapter:
    return LayerAdapter(
        "lora",
        {
            "up": torch.randn(out, rank).to(dtype),
            "down": torch.randn(rank, inp).to(dtype),
            "scale": torch.tensor(0.25),
        },
        alpha=1.0,
    )


def test_packing_keeps_every_byte_of_every_dtype_and_layout():
    """Mixed dtypes (fp32, fp16, bf16, fp8, bool), odd byte sizes and a non-contiguous tensor come back with their
    shapes and values, aligned: float16 and bfloat16 widened to float32 (exactly), every other dtype bit-identical;
    each group (fp16, bf16, then one per other element size) shares one buffer (one transfer); a tensor listed twice
    is packed once."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 7, generator=g)
    tensors = [
        base,
        torch.randn(3, 3, generator=g).half(),
        torch.randn(11, generator=g).bfloat16(),
        torch.randn(2, 5, generator=g).to(torch.float8_e4m3fn),
        torch.rand(13, generator=g) > 0.5,
        base.t(),  # non-contiguous view of the same storage
        torch.randn(4, 3, 1, 1, generator=g),
        torch.randn(6, generator=g).half(),
        torch.arange(-4, 5, dtype=torch.int16),
    ]
    out = _pack_and_copy([*tensors, tensors[1]], torch.device("cpu"))
    assert len(out) == len(tensors)
    widened = (torch.float16, torch.bfloat16)
    buffers: dict = {}
    for t in tensors:
        key = t.dtype if t.dtype in widened else t.element_size()
        buffers.setdefault(key, set()).add(out[id(t)].untyped_storage().data_ptr())
    assert {key: len(ptrs) for key, ptrs in buffers.items()} == {
        4: 1, torch.float16: 1, torch.bfloat16: 1, 1: 1, 2: 1
    }  # fmt: skip
    for tensor in tensors:
        copy = out[id(tensor)]
        assert copy.shape == tensor.shape
        assert copy.data_ptr() % copy.element_size() == 0
        if tensor.dtype in widened:
            assert copy.dtype == torch.float32 and torch.equal(copy, tensor.float())
        else:
            assert copy.dtype == tensor.dtype
            assert torch.equal(
                copy.reshape(-1).view(torch.uint8), tensor.contiguous().reshape(-1).view(torch.uint8)
            )


def test_slots_on_an_accelerator_get_device_factors_and_one_element_tensors_stay_on_the_cpu():
    module = nn.Linear(6, 4).to("meta")
    adapter = _lora(4, 6)
    slot = _slot(module, adapter)
    moved = Uploader({1: slot}, [1]).slot_for(1)
    parts = moved.contributions[0].adapter.tensors
    assert parts["up"].device.type == "meta" and parts["down"].device.type == "meta"
    assert parts["up"].shape == (4, 2) and parts["up"].dtype == torch.float32  # widened from float16
    assert parts["scale"] is adapter.tensors["scale"], (
        "reading a scalar must not need a device synchronisation"
    )
    # The plan keeps its own adapters: signatures (the unchanged-set check) still name the parsed adapter.
    assert slot.contributions[0].adapter is adapter and adapter.tensors["up"].device.type == "cpu"
    assert moved.contributions[0].signature()[1:] == slot.contributions[0].signature()[1:]
    assert moved.contributions[0].lora_name == "a" and moved.module is module


def test_factors_already_on_an_accelerator_are_left_to_the_arithmetic(monkeypatch):
    """Only CPU tensors are packed (the packed buffer lives in CPU memory): a factor already on another device than
    the weight (here ``meta`` beside a weight on ``cuda:1``) is handed on as it is, for ``compute_slot`` to move."""
    packed: list[torch.Tensor] = []

    def pack(tensors, device):
        packed.extend(tensors)
        return {id(t): t.clone() for t in tensors}

    monkeypatch.setattr(upload, "_slot_device", lambda slot: torch.device("cuda", 1))
    monkeypatch.setattr(upload, "_pack_and_copy", pack)
    adapter = _lora(4, 6)
    adapter.tensors["down"] = adapter.tensors["down"].to("meta")
    parts = Uploader({1: _slot(nn.Linear(6, 4), adapter)}, [1]).slot_for(1).contributions[0].adapter.tensors
    assert [t is adapter.tensors["up"] for t in packed] == [True]
    assert parts["down"] is adapter.tensors["down"] and parts["up"] is not adapter.tensors["up"]


def test_cpu_slots_are_handed_out_unchanged():
    slot = _slot(nn.Linear(6, 4), _lora(4, 6))
    assert Uploader({7: slot}, [7]).slot_for(7) is slot


def test_chunks_are_bounded_and_the_previous_chunk_is_dropped(monkeypatch):
    """With room for one slot's factors per chunk, each slot is its own transfer and only the current chunk is held;
    asking again for an earlier slot uploads it again."""
    # one slot's up and down, widened to float32: 32 + 48 bytes
    monkeypatch.setattr(upload, "CHUNK_BYTES", 100)
    slots = {k: _slot(nn.Linear(6, 4).to("meta"), _lora(4, 6), f"s{k}") for k in range(3)}
    uploader = Uploader(slots, [0, 1, 2])
    first = uploader.slot_for(0)
    assert uploader.slot_for(0) is first, "a slot of the loaded chunk is not uploaded twice"
    second = uploader.slot_for(1)
    assert second.contributions[0].adapter.tensors["up"].device.type == "meta"
    again = uploader.slot_for(0)
    assert again is not first


def test_one_chunk_holds_several_slots_and_a_shared_adapter_is_moved_once():
    shared = _lora(4, 6)
    a, b = nn.Linear(6, 4).to("meta"), nn.Linear(6, 4).to("meta")
    slots = {1: _slot(a, shared, "x"), 2: _slot(b, shared, "y")}
    uploader = Uploader(slots, [1, 2])
    up1 = uploader.slot_for(1).contributions[0].adapter.tensors["up"]
    up2 = uploader.slot_for(2).contributions[0].adapter.tensors["up"]
    assert up1 is up2


@pytest.mark.parametrize("strategy", ["swap", "copy"])
def test_patcher_on_a_non_cpu_device_computes_from_uploaded_factors(strategy, monkeypatch):
    """The patcher hands ``compute_slot`` the uploaded slot (factors on the weight's device), never the parsed one."""
    from lora_ext.adapters import ActiveLora, ResolvedLora
    from lora_ext.patcher import Patcher
    from lora_ext.patching import compute

    module = nn.Linear(6, 4)
    adapter = _lora(4, 6)
    target = Target("unet", "m", "m", module=module)
    lora = ResolvedLora(name="l", path="/l.safetensors", layers={target: adapter})
    seen = []
    original = compute.compute_slot

    def spy(slot, *args, **kwargs):
        seen.append(slot)
        return original(slot, *args, **kwargs)

    monkeypatch.setattr("lora_ext.patcher.compute_slot", spy)
    monkeypatch.setattr(upload, "_slot_device", lambda slot: torch.device("meta"))
    monkeypatch.setattr(upload, "_pack_and_copy", lambda tensors, device: {id(t): t.clone() for t in tensors})
    before = module.weight.detach().clone()
    result = Patcher(strategy).apply([ActiveLora(lora, 1.0, 1.0)])
    assert result.ok, result.problems
    assert len(seen) == 1 and seen[0].contributions[0].adapter is not adapter
    assert not torch.equal(module.weight.detach(), before)
