"""Tensor data of .safetensors files: every dtype, odd layouts, and files changed on disk after loading."""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest
import torch
from safetensors.torch import save_file

from lora_ext.adapters import LoraFile
from lora_ext.engine import LoraLoader
from lora_ext.errors import Problem
from lora_ext.formats import read_lora_file

ALL_DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.int16,
    torch.uint16,
    torch.float16,
    torch.bfloat16,
    torch.int32,
    torch.uint32,
    torch.float32,
    torch.int64,
    torch.uint64,
    torch.float64,
]


def _sample(dtype: torch.dtype, shape=(3, 5)) -> torch.Tensor:
    values = torch.arange(-7, -7 + shape[0] * shape[1], dtype=torch.float32).reshape(shape) / 4
    if dtype == torch.bool:
        return values > 0
    if not dtype.is_floating_point:
        values = values.abs() * 4
    return values.to(dtype)


def test_every_safetensors_dtype_reads_back_bit_exact(tmp_path):
    state = {f"t_{str(d).split('.')[-1]}": _sample(d) for d in ALL_DTYPES}
    state["scalar"] = torch.tensor(0.125, dtype=torch.bfloat16)
    state["empty"] = torch.zeros(0, 4, dtype=torch.float16)
    state["empty_bool"] = torch.zeros(2, 0, dtype=torch.bool)
    path = str(tmp_path / "all.safetensors")
    save_file(state, path)
    loaded = read_lora_file(path)
    assert isinstance(loaded, LoraFile)
    assert set(loaded.tensors) == set(state)
    for key, expected in state.items():
        got = loaded.tensors[key]
        assert got.dtype == expected.dtype and got.shape == expected.shape, key
        got_bytes = got.reshape(-1).view(torch.uint8)
        assert torch.equal(got_bytes, expected.reshape(-1).view(torch.uint8)), key


def _raw_file(path, entries: dict, data: bytes) -> str:
    header = json.dumps(entries).encode()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header + data)
    return str(path)


def test_unaligned_offsets_from_other_writers_still_read_right(tmp_path):
    # one byte of padding puts the float32 tensor at an odd offset; an unaligned header length does the same
    floats = struct.pack("<3f", 1.5, -2.0, 3.25)
    half = struct.pack("<2e", 0.5, -1.0)
    entries = {
        "pad": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
        "w": {"dtype": "F32", "shape": [3], "data_offsets": [1, 13]},
        "h": {"dtype": "F16", "shape": [2], "data_offsets": [13, 17]},
    }
    loaded = read_lora_file(_raw_file(tmp_path / "odd.safetensors", entries, b"\x07" + floats + half))
    assert isinstance(loaded, LoraFile)
    assert loaded.tensors["w"].tolist() == [1.5, -2.0, 3.25]
    assert loaded.tensors["h"].tolist() == [0.5, -1.0]
    assert loaded.tensors["pad"].tolist() == [7]


def test_trailing_bytes_after_the_last_tensor_are_ignored(tmp_path):
    entries = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    loaded = read_lora_file(
        _raw_file(tmp_path / "tail.safetensors", entries, struct.pack("<f", 2.0) + b"junk")
    )
    assert loaded.tensors["w"].tolist() == [2.0]


def test_tensors_of_one_file_share_one_buffer_and_are_writable(tmp_path):
    path = str(tmp_path / "a.safetensors")
    save_file({"a": torch.ones(4, 4), "b": torch.zeros(8, 2), "c": torch.ones(3, dtype=torch.float16)}, path)
    loaded = read_lora_file(path)
    pointers = {t.untyped_storage().data_ptr() for t in loaded.tensors.values()}
    assert len(pointers) == 1  # views of one read, not one copy per tensor
    loaded.tensors["a"].mul_(2)  # a private buffer: writing never touches the file
    assert torch.equal(read_lora_file(path).tensors["a"], torch.ones(4, 4))


def _lora_state(value: float) -> dict[str, torch.Tensor]:
    return {
        "lora_unet_x.lora_down.weight": torch.full((4, 64), value),
        "lora_unet_x.lora_up.weight": torch.full((64, 4), value),
    }


@pytest.mark.parametrize("how", ["overwrite in place", "truncate", "replace by rename", "delete"])
def test_loaded_tensors_never_change_when_the_file_changes_on_disk(tmp_path, how):
    path = tmp_path / "l.safetensors"
    save_file(_lora_state(1.0), str(path))
    loaded = read_lora_file(path)
    other = tmp_path / "other.safetensors"
    save_file(_lora_state(9.0), str(other))
    if how == "overwrite in place":  # cp over the same inode, as cp/curl -o do
        with open(other, "rb") as src, open(path, "r+b") as dst:
            shutil.copyfileobj(src, dst)
    elif how == "truncate":  # a mapped file would raise SIGBUS here and kill the process
        with open(path, "r+b") as dst:
            dst.truncate(10)
    elif how == "replace by rename":
        os.replace(other, path)
    else:
        os.remove(path)
    for tensor in loaded.tensors.values():
        assert torch.equal(tensor, torch.ones_like(tensor))


def test_loader_rereads_a_file_rewritten_in_place(tmp_path):
    path = tmp_path / "l.safetensors"
    save_file(_lora_state(1.0), str(path))
    loader = LoraLoader(max_cached=2)
    first = loader.load(str(path))
    assert loader.load(str(path)) is first
    save_file(_lora_state(3.0), str(path), metadata={"v": "2"})
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse file systems
    second = loader.load(str(path))
    assert second is not first and second.metadata == {"v": "2"}
    assert float(second.tensors["lora_unet_x.lora_up.weight"][0, 0]) == 3.0
    assert float(first.tensors["lora_unet_x.lora_up.weight"][0, 0]) == 1.0


def test_file_shrunk_between_header_and_data_is_a_problem(tmp_path):
    from lora_ext.formats.safetensors_data import read_safetensors_tensors
    from lora_ext.formats.safetensors_header import read_safetensors_header

    path = tmp_path / "s.safetensors"
    save_file(_lora_state(1.0), str(path))
    header = read_safetensors_header(path)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 100)
    result = read_safetensors_tensors(header)
    assert isinstance(result, Problem) and result.subject == str(path) and "truncated" in result.message


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM")) / 1024


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:  # "5" resets VmHWM to the current RSS (Linux)
        handle.write("5")


def _current_rss_mib() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024


def test_full_ckpt_checkpoint_is_named_without_reading_its_weights(tmp_path):
    state = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.ones(4, 4, 3, 3),
        "model.diffusion_model.middle_block.1.proj_in.weight": torch.ones(48 * 1024 * 1024 // 4),
        "first_stage_model.decoder.conv_in.weight": torch.ones(48 * 1024 * 1024 // 4),
    }
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": state}, path)
    del state
    _reset_peak_rss()
    before = _current_rss_mib()
    result = read_lora_file(path)
    assert isinstance(result, Problem) and "checkpoint" in result.message
    assert _peak_rss_mib() - before < 48  # 96 MiB of weights were never read into memory


def test_pickled_lora_tensors_are_private_copies(tmp_path):
    path = tmp_path / "l.pt"
    torch.save(_lora_state(1.0), path)
    loaded = read_lora_file(path)
    torch.save(_lora_state(5.0), path)  # rewritten in place (same inode)
    with open(path, "r+b") as handle:
        handle.truncate(100)
    for tensor in loaded.tensors.values():
        assert torch.equal(tensor, torch.ones_like(tensor))
