"""Freed CPU memory goes back to the OS when LoRAs stop being used (``lora_ext/patching/memory.py``, USERS P5), and
stays with the allocator for the next apply while they are in use (issue 3: RAM held after restore)."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from fake_webui.lora_fixtures import sd1_webui, write_lora
from test_patcher_models import active, plain_lora, tiny_net

import lora_ext.patcher as patcher_module
from lora_ext.patcher import Patcher
from lora_ext.patching.memory import release_freed_memory

MiB = 1 << 20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux) only")
def test_release_gives_freed_heap_memory_back_to_the_os():
    release_freed_memory()
    base = rss()
    # many small blocks come from the heap, which glibc keeps after free; filled so their pages are resident
    blocks = [torch.ones(16 * 1024) for _ in range(8 * 1024)]  # 8192 × 64 KiB = 512 MiB
    pin = torch.ones(16 * 1024)  # allocated last, above the others: the heap's top cannot shrink past it
    assert rss() - base > 400 * MiB
    del blocks
    assert rss() - base > 400 * MiB  # freed, but the allocator keeps the pages
    assert release_freed_memory()
    assert rss() - base < 32 * MiB
    del pin


def _counting(monkeypatch, module) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(module, "release_freed_memory", lambda: calls.append(1) or True)
    return calls


def test_patcher_restore_releases_memory_only_when_asked(monkeypatch):
    calls = _counting(monkeypatch, patcher_module)
    net = tiny_net()
    patcher = Patcher("swap")
    lora = plain_lora(net, "p")
    patcher.apply(active((lora, 1.0)))
    patcher.restore()
    assert calls == []
    patcher.apply(active((lora, 1.0)))
    patcher.restore(release_memory=True)
    assert calls == [1] and not patcher.is_patched


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory):
    return write_lora(tmp_path_factory.mktemp("memory_loras"), "x", "sd1", seed=1)


def test_a1111_keeps_memory_between_lora_generations_and_releases_it_after_one_without(
    tmp_path, lora_file, monkeypatch
):
    calls = _counting(monkeypatch, patcher_module)
    with sd1_webui(tmp_path, {"x": lora_file}) as w:
        w.txt2img("a photo")
        assert calls == []  # nothing was patched: nothing to give back
        w.txt2img("a photo <lora:x:1>")
        w.txt2img("a photo <lora:x:0.5>")
        assert calls == []  # the end of a generation keeps the memory for the next one
        w.txt2img("a photo")
        assert calls == [1]  # a generation without LoRAs gives it back, once
        w.txt2img("a photo")
        assert calls == [1]
        w.txt2img("a photo <lora:x:1>")
        from modules import script_callbacks

        script_callbacks.app_reload_callback()  # UI reload: restore and give back
        assert calls == [1, 1]


def test_release_also_empties_the_pinned_host_cache_when_cuda_is_in_use(monkeypatch):
    """The copy strategy keeps GPU weights' pristine copies in pinned host memory; torch caches it after free, so
    releasing memory must flush that cache too (only when a CUDA context exists: nothing was pinned otherwise)."""
    from lora_ext.patching import memory

    flushed: list[int] = []
    monkeypatch.setattr(torch.accelerator, "empty_host_cache", lambda: flushed.append(1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    memory.release_freed_memory()
    assert flushed == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    memory.release_freed_memory()
    assert flushed == [1]

    def no_device() -> None:
        raise RuntimeError("Cannot access accelerator device when none is available.")

    monkeypatch.setattr(torch.accelerator, "empty_host_cache", no_device)
    assert memory.release_pinned_memory() is False
