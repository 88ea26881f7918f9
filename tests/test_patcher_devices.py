"""The patcher waits for every accelerator it queued work on, not only CUDA (CI has no accelerator: the device
modules' ``synchronize`` are replaced by counters)."""

from __future__ import annotations

import torch

from lora_ext.patcher import _synchronize


def test_every_accelerator_is_synchronised_and_cpu_meta_and_unknown_types_are_not(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("mps"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(f"cuda:{device.index}"))
    # privateuseone: a device type with no torch module of its own, so nothing to call and no error.
    devices = {torch.device(d) for d in ("mps", "cuda:1", "cpu", "meta", "privateuseone:0")}
    _synchronize(devices)
    assert sorted(calls) == ["cuda:1", "mps"]
