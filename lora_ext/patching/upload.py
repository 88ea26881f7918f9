"""Move the LoRA factors of an apply to the weights' accelerator in a few large copies instead of one per tensor.

Parsed LoRAs live in CPU memory. Copying each factor to the GPU on its own costs one small transfer per tensor, and a
copy from ordinary (pageable) memory waits for the GPU to finish its queued work: a 264-layer SD1.5 apply measured
86 ms on an H100 that way, 50 ms with this module, against 3–5 ms for the arithmetic itself (docs/PERFORMANCE.md).

An ``Uploader`` packs the factors of consecutive slots into pinned buffers (one per element size) of at most
``CHUNK_BYTES`` together, copies each in one transfer, and hands out slots whose adapters hold views of the device
copy. A chunk is dropped before the next one is made, so the factors never need more device memory than one chunk
(or one slot's factors, when they alone are larger), whatever the size of the LoRA set.

Only the tensors the arithmetic reads are moved: one-element tensors (a ``scale`` part, an IA³ ``on_input`` flag) stay
on the CPU, where reading their value costs no device synchronisation. float16 and bfloat16 factors (what LoRA files
hold) arrive as float32, widened on the device in one kernel per chunk instead of one per factor in the arithmetic,
which computes in float32 anyway; widening is exact, every other dtype keeps its bytes, so results are bit-identical
to per-tensor copies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from lora_ext.adapters import LayerAdapter
from lora_ext.patching.plan import Slot

#: Most device bytes (float32 for widened factors) of one chunk: the extra device memory an apply needs for factors.
#: Before chunks, the factors of one layer at a time were on the device. SD1.5's fp16 rank-32 LoRA (38 MB in the file,
#: 76 MB widened) takes two chunks, SDXL's (228 MB) seven.
CHUNK_BYTES = 64 << 20

#: Floating dtypes sent as they are and widened to float32 on the device.
_WIDENED = (torch.float16, torch.bfloat16)


def _moves(tensor: torch.Tensor, device: torch.device) -> bool:
    """True for a multi-element CPU tensor whose slot lives on an accelerator (a tensor already on some accelerator
    is left to ``compute_slot``, which moves it on its own)."""
    return tensor.device.type == "cpu" and device.type != "cpu" and tensor.numel() > 1


def _slot_device(slot: Slot) -> torch.device | None:
    tensor = getattr(slot.module, slot.weight_attr, None)
    return tensor.device if isinstance(tensor, torch.Tensor) else None


def _device_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * (4 if tensor.dtype in _WIDENED else tensor.element_size())


def _slot_bytes(slot: Slot, device: torch.device) -> int:
    return sum(
        _device_bytes(t) for c in slot.contributions for t in c.adapter.tensors.values() if _moves(t, device)
    )


class Uploader:
    """Hands out slots whose adapter tensors live on the slot weight's device, uploading factors chunk by chunk.

    order: the keys of ``slots`` in the order ``slot_for`` will ask for them (slots on the CPU are handed out
    unchanged and never uploaded). Asking out of order still works; it only uploads a chunk again.
    """

    def __init__(self, slots: dict[int, Slot], order: Sequence[int]) -> None:
        self._slots = slots
        self._chunk_of: dict[int, int] = {}
        self._chunks: list[list[int]] = []
        size = 0
        for key in order:
            device = _slot_device(slots[key])
            if device is None or device.type == "cpu":
                continue
            need = _slot_bytes(slots[key], device)
            if need == 0:
                continue
            if not self._chunks or size + need > CHUNK_BYTES:
                self._chunks.append([])
                size = 0
            self._chunks[-1].append(key)
            self._chunk_of[key] = len(self._chunks) - 1
            size += need
        self._loaded = -1
        self._ready: dict[int, Slot] = {}

    def slot_for(self, key: int) -> Slot:
        """The slot ``key`` with every multi-element adapter tensor on its weight's device (same values; float16 and
        bfloat16 ones as float32)."""
        chunk = self._chunk_of.get(key)
        if chunk is None:
            return self._slots[key]
        if chunk != self._loaded:
            self._ready = {}  # drop the previous chunk's device copies before making the next
            self._ready = self._upload(self._chunks[chunk])
            self._loaded = chunk
        return self._ready[key]

    def _upload(self, keys: list[int]) -> dict[int, Slot]:
        """Pack the moving tensors of ``keys``' slots into pinned buffers (per device and element size), copy each
        buffer once, and rebuild the slots around views of the copies."""
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for key in keys:
            device = _slot_device(self._slots[key])
            tensors = by_device.setdefault(device, [])
            for c in self._slots[key].contributions:
                tensors.extend(t for t in c.adapter.tensors.values() if _moves(t, device))
        moved: dict[int, torch.Tensor] = {}
        for device, tensors in by_device.items():
            moved.update(_pack_and_copy(tensors, device))
        ready = {}
        for key in keys:
            slot = self._slots[key]
            adapters: dict[int, LayerAdapter] = {}
            contributions = []
            for c in slot.contributions:
                adapter = adapters.get(id(c.adapter))
                if adapter is None:
                    parts = {name: moved.get(id(t), t) for name, t in c.adapter.tensors.items()}
                    adapter = adapters[id(c.adapter)] = dataclasses.replace(c.adapter, tensors=parts)
                contributions.append(dataclasses.replace(c, adapter=adapter))
            ready[key] = Slot(slot.module, slot.weight_attr, slot.bias_attr, contributions)
        return ready


#: Integer dtype of each element size: tensors are packed as raw elements of their size, so one ``cat`` per size packs
#: every dtype (fp8 and bool included) and each view of the copy is aligned for its own dtype.
_RAW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _pack_and_copy(tensors: list[torch.Tensor], device: torch.device) -> dict[int, torch.Tensor]:
    """{id(CPU tensor): the same values on ``device``}, made with one host-to-device copy per group of a packed buffer
    (pinned when the device is CUDA, so the copy is asynchronous). Groups: float16, bfloat16 (each widened to float32
    on the device by one kernel), and every other dtype by element size (bytes kept as they are)."""
    groups: dict[torch.dtype | int, list[torch.Tensor]] = {}
    seen: set[int] = set()
    for tensor in tensors:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            key = tensor.dtype if tensor.dtype in _WIDENED else tensor.element_size()
            groups.setdefault(key, []).append(tensor)
    out: dict[int, torch.Tensor] = {}
    for key, group in groups.items():
        raw = _RAW[group[0].element_size()]
        flat = [t.detach().reshape(-1).view(raw) for t in group]
        packed = torch.empty(sum(f.numel() for f in flat), dtype=raw, pin_memory=device.type == "cuda")
        torch.cat(flat, out=packed)
        # The caching host allocator keeps a pinned buffer until the asynchronous copy out of it has finished.
        on_device = packed.to(device, non_blocking=packed.is_pinned())
        if isinstance(key, torch.dtype):
            on_device = on_device.view(key).float()
        start = 0
        for tensor, part in zip(group, flat, strict=True):
            view = on_device.narrow(0, start, part.numel())
            if not isinstance(key, torch.dtype):  # raw elements: read them as the tensor's dtype again
                view = view.view(tensor.dtype)
            out[id(tensor)] = view.view(tensor.shape)
            start += part.numel()
    return out
