"""Fake ``modules.devices`` (A1111_CONTRACT.md §9.2, §8.4).

CPU only. ``autocast()`` is a REAL ``torch.autocast("cpu", dtype=torch.bfloat16)`` so that code running inside it
(``activate`` runs inside ``devices.autocast()``, §8.2 step 4) sees matmuls downcast exactly as CUDA autocast would
downcast them to fp16; code that forgets to switch autocast off produces wrong (rounded) deltas.
"""

from __future__ import annotations

import contextlib

import torch

cpu = torch.device("cpu")
device = device_interrogate = device_gfpgan = device_esrgan = device_codeformer = cpu
dtype = torch.float32
dtype_vae = torch.float32
dtype_unet = torch.float32
dtype_inference = torch.float32
unet_needs_upcast = False
fp8 = False

#: How many times ``autocast()`` was entered (tests check activation ran inside it).
autocast_entries = 0


def autocast(disable=False):
    global autocast_entries
    if disable:
        return contextlib.nullcontext()
    autocast_entries += 1
    return torch.autocast("cpu", dtype=torch.bfloat16)


def without_autocast(disable=False):
    return (
        torch.autocast("cpu", enabled=False)
        if torch.is_autocast_enabled("cpu") and not disable
        else contextlib.nullcontext()
    )


def cond_cast_unet(x):
    return x.to(dtype_unet) if unet_needs_upcast else x


def cond_cast_float(x):
    return x.float() if unet_needs_upcast else x


def torch_gc():
    pass
