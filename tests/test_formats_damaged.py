"""Damaged files (cut short, bytes changed, bytes inserted) give a LoraFile or a Problem naming the file, never an
exception."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import save_file

from lora_ext.adapters import LoraFile
from lora_ext.errors import Problem
from lora_ext.formats import SafetensorsHeader, read_lora_file, read_safetensors_header


def _source(tmp_path, suffix: str) -> bytes:
    state = {
        "lora_unet_x.lora_down.weight": torch.randn(4, 8),
        "lora_unet_x.lora_up.weight": torch.randn(8, 4).half(),
        "lora_unet_x.alpha": torch.tensor(2.0),
    }
    path = tmp_path / f"src{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path), metadata={"ss_network_dim": "4"})
    else:
        torch.save(state, path)
    return path.read_bytes()


def _damage(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    how = rng.random()
    if how < 0.3:
        return bytes(out[: rng.randrange(len(out))])
    if how < 0.8:
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    at = rng.randrange(len(out))
    return bytes(out[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 20))) + out[at:])


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_damaged_files_never_raise(tmp_path, suffix):
    data = _source(tmp_path, suffix)
    rng = random.Random(3)
    path = tmp_path / f"damaged{suffix}"
    problems = 0
    for _ in range(150):
        path.write_bytes(_damage(data, rng))
        result = read_lora_file(path)
        assert isinstance(result, (LoraFile, Problem))
        if isinstance(result, Problem):
            problems += 1
            assert result.subject == str(path) and result.message
        if suffix == ".safetensors":
            assert isinstance(read_safetensors_header(path, validate=False), (SafetensorsHeader, Problem))
    assert problems > 20  # most damage is detected, not silently read


def test_zip_pickle_with_an_odd_directory_is_read_or_refused_without_raising(tmp_path):
    data = bytearray(_source(tmp_path, ".pt"))
    end = data.rfind(b"PK\x05\x06")  # end-of-central-directory record
    data[end + 4 : end + 6] = (1).to_bytes(2, "little")  # "disk 1": zipfile.is_zipfile raises
    path = tmp_path / "multidisk.pt"
    path.write_bytes(bytes(data))
    result = read_lora_file(path)  # torch's own zip reader still reads it
    assert isinstance(result, LoraFile) and result.tensors["lora_unet_x.lora_down.weight"].shape == (4, 8)
