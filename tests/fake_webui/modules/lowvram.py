"""Fake ``modules.lowvram`` (A1111_CONTRACT.md §8.3, §14): ``--lowvram`` and ``--medvram`` set ``sd_model.lowvram``."""

from __future__ import annotations


def is_enabled(sd_model):
    return bool(getattr(sd_model, "lowvram", False))
