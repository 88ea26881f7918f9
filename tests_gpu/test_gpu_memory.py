"""``lora_ext.patching.memory`` on CUDA: the copy strategy keeps the pristine copies of GPU weights in pinned host
memory, which torch's caching host allocator keeps after they are freed; ``restore(release_memory=True)`` must leave
that cache empty.

Statistics (bytes) from ``torch.cuda.memory.host_memory_stats()``, whose keys changed between torch versions:
newer torch reports ``allocated_bytes`` = pinned blocks the allocator owns (in use + cached) and ``active_bytes`` =
in use; older torch reports ``reserved_bytes`` = owned and ``allocated_bytes`` = in use. Owned − in use = cached.
Block sizes are as the allocator rounds them (up to a power of two), so owned bytes ≥ the bytes asked for.
"""

from __future__ import annotations

import pytest
import torch
from gpu_helpers import build_model, resolve

from lora_ext.adapters import ActiveLora
from lora_ext.patcher import Patcher
from lora_ext.patching.memory import release_pinned_memory


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
