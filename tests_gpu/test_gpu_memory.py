"""``lora_ext.patching.memory`` on CUDA: the copy strategy keeps the pristine copies of GPU weights in pinned host
memory, which torch's caching host allocator keeps after they are freed; ``restore(release_memory=True)`` must leave
that cache empty.

Statistics (bytes) from ``torch.cuda.memory.host_memory_stats()``, whose keys changed between torch versions:
newer torch reports ``allocated_bytes`` = pinned blocks the allocator owns (in use + cached) and ``active_bytes`` =
in use; older torch reports ``reserved_bytes`` = owned and ``allocated_bytes`` = in use. Owned − in use = cached.
Block sizes are as the allocator rounds them (up to a power of two), so owned bytes ≥ the bytes asked for; the
patcher's backups come out of blocks of 64 MiB, which are not rounded.
"""

from __future__ import annotations

import pytest
import torch
from gpu_helpers import build_model, resolve
from torch import nn

from lora_ext.adapters import ActiveLora, LayerAdapter, ResolvedLora, Target
from lora_ext.patcher import Patcher
from lora_ext.patching.memory import release_pinned_memory
from lora_ext.patching.pinned import SLAB_BYTES


def pinned() -> tuple[int, int]:
    """(owned, in use) bytes of pinned host memory held by torch's CUDA host allocator."""
    stats_fn = getattr(torch.cuda.memory, "host_memory_stats", None)
    if stats_fn is None:
        pytest.fail(f"torch {torch.__version__} has no torch.cuda.memory.host_memory_stats()")
    stats = dict(stats_fn())
    if "active_bytes.current" in stats and "allocated_bytes.current" in stats:
        return int(stats["allocated_bytes.current"]), int(stats["active_bytes.current"])
    if "reserved_bytes.current" in stats and "allocated_bytes.current" in stats:
        return int(stats["reserved_bytes.current"]), int(stats["allocated_bytes.current"])
    pytest.fail(
        f"torch {torch.__version__}: host_memory_stats() has neither allocated_bytes + active_bytes nor "
        f"reserved_bytes + allocated_bytes; its keys are {sorted(stats)}. Adapt pinned() in {__file__}."
    )


def test_restore_with_release_leaves_nothing_in_the_pinned_host_cache(device, lora_files):
    """Copy strategy, fp16 model, four LoRAs. On CUDA (bytes of pinned host memory):

    - while patched, the pinned memory the host allocator owns grew by at least ``held_bytes()`` (> 0);
    - ``restore()`` without release keeps those blocks cached (owned memory still ≥ baseline + ``held_bytes()``):
      the premise, so that the next check measures the release and not the free;
    - after another apply and ``restore(release_memory=True)``: owned pinned memory is back to the baseline taken
      after flushing the cache before the first apply, and
      ``held_bytes() == 0``.

    On CPU (no pinned memory): the same applies and restores, and ``held_bytes()`` is > 0 while patched and 0 after.
    """
    model = build_model(device, torch.float16)
    loras = resolve(model, lora_files, ("plain", "loha", "lokr", "dora"))
    active = [ActiveLora(lora, te=0.8, unet=-0.6) for lora in loras.values()]
    patcher = Patcher("copy")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        release_pinned_memory()  # other tests may have left cached blocks behind
        base_owned, _ = pinned()
    assert patcher.apply(active).ok
    held = patcher.held_bytes()
    assert held > 0
    if cuda:
        owned, _ = pinned()
        assert owned - base_owned >= held, (base_owned, owned, held)
    assert patcher.restore() == []
    assert patcher.held_bytes() == 0
    if cuda:
        owned, _ = pinned()
        assert owned - base_owned >= held, "freed pinned blocks were not cached: the check below has no teeth"
    assert patcher.apply(active).ok and patcher.held_bytes() == held
    assert patcher.restore(release_memory=True) == []
    assert patcher.held_bytes() == 0 and not patcher.is_patched
    if cuda:
        # Only what torch owns is compared: on torch 2.11 its in-use counter read 11 MB after the flush while it
        # owned 0 bytes, so that counter is no measure of what is held.
        owned, _ = pinned()
        assert owned == base_owned, (
            f"pinned host memory owned by torch: {base_owned} bytes before apply, {owned} after "
            "restore(release_memory=True)"
        )


def test_pinned_backups_are_packed_not_rounded_up(device):
    """Copy strategy, fp32, 160 layers whose weights are 1025 × 256 (just over 1 MiB, which torch's pinned allocator
    would round up to 2 MiB each, 320 MiB in all). The backups are carved out of 64 MiB blocks instead: on CUDA the
    pinned memory torch owns grows by at most ``held_bytes()`` + one block (and by at least ``held_bytes()``).
    Restore is bit-exact and frees every backup. On CPU (nothing pinned): the apply and the restore only."""
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Linear(256, 1025, bias=False) for _ in range(160)]).to(device)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    layers = {
        Target("unet", str(i), str(i), module=m): LayerAdapter(
            "lora", {"up": torch.randn(1025, 4) * 0.01, "down": torch.randn(4, 256) * 0.01}, 4.0
        )
        for i, m in enumerate(net)
    }
    lora = ResolvedLora("many", "/loras/many.safetensors", layers)
    patcher = Patcher("copy")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        release_pinned_memory()
        base_owned, _ = pinned()
    assert patcher.apply([ActiveLora(lora, 1.0, 1.0)]).ok
    held = patcher.held_bytes()
    assert held == 160 * 1025 * 256 * 4
    if cuda:
        owned, _ = pinned()
        assert held <= owned - base_owned <= held + SLAB_BYTES, (owned - base_owned, held)
    assert patcher.restore(release_memory=True) == [] and patcher.held_bytes() == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
