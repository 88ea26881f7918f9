"""Large tensors a patch allocates on the CPU are advised for transparent huge pages (``patching/fresh_memory.py``):
the hint lands on exactly those tensors' memory, values and layouts are untouched, and restore stays bit-exact."""

from __future__ import annotations

import sys

import pytest
import torch
from test_patcher_models import snapshot
from torch import nn

from lora_ext.adapters import ActiveLora, LayerAdapter, ResolvedLora, Target
from lora_ext.patcher import Patcher
from lora_ext.patching import fresh_memory

MiB = 1 << 20
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="madvise hints are a Linux feature"
)


def vm_flags(address: int) -> list[str]:
    """The VmFlags of the mapping of this process that holds ``address`` (``/proc/self/smaps``)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def _middle(tensor: torch.Tensor) -> int:
    return tensor.data_ptr() + tensor.numel() * tensor.element_size() // 2


@linux_only
def test_large_cpu_tensor_is_advised_and_small_one_is_not():
    big = torch.empty(2048, 1024)  # 8 MiB: glibc maps it on its own
    assert "hg" not in vm_flags(_middle(big))
    assert fresh_memory.advise_huge_pages(big)
    assert "hg" in vm_flags(_middle(big))
    small = torch.empty(1024)
    assert not fresh_memory.advise_huge_pages(small)
    assert not fresh_memory.advise_huge_pages(torch.empty(fresh_memory.MIN_BYTES // 4 - 1))


@linux_only
def test_empty_like_keeps_shape_dtype_and_strides():
    source = torch.randn(4, 64, 128, 128).to(memory_format=torch.channels_last)  # 16 MiB
    out = fresh_memory.empty_like(source)
    assert (out.shape, out.dtype, out.stride(), out.device) == (
        source.shape,
        source.dtype,
        source.stride(),
        source.device,
    )
    assert "hg" in vm_flags(_middle(out))
    out.copy_(source)
    assert torch.equal(out, source)


@linux_only
@pytest.mark.parametrize("strategy", ["swap", "copy"])
def test_patch_allocations_carry_the_hint_and_restore_is_exact(strategy):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1024, 2048), nn.Linear(16, 16))  # an 8 MiB weight and a tiny one
    before = snapshot(net)
    layers = {
        Target("unet", str(i), str(i), module=m): LayerAdapter(
            "lora",
            {"up": torch.randn(m.out_features, 4) * 0.1, "down": torch.randn(4, m.in_features) * 0.1},
            4.0,
        )
        for i, m in enumerate(net)
    }
    lora = ResolvedLora("big", "/loras/big.safetensors", layers)
    patcher = Patcher(strategy)
    patcher.apply([ActiveLora(lora, 1.0, 1.0)])
    assert snapshot(net) != before
    # swap: the installed weight is the new tensor; copy: the pristine copy the patcher keeps is
    big = net[0].weight.data
    if strategy == "copy":
        (big,) = [
            b.original
            for rec in patcher._applied.values()
            for b in rec.backups
            if b.module is net[0] and b.attr == "weight"
        ]
        assert big.data_ptr() != net[0].weight.data_ptr()
    assert "hg" in vm_flags(_middle(big))
    patcher.restore()
    assert snapshot(net) == before
