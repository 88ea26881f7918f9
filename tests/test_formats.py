"""Readers (issue 2 §3): safetensors header without tensors, weights-only pickles, and every bad input as a Problem."""

from __future__ import annotations

import json
import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from lora_ext.adapters import LoraFile
from lora_ext.errors import Problem
from lora_ext.formats import read_lora_file, read_safetensors_header


def write_raw(path, header: bytes, data: bytes = b"", length: int | None = None) -> str:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header) if length is None else length))
        f.write(header)
        f.write(data)
    return str(path)


def good_file(tmp_path) -> str:
    path = str(tmp_path / "good.safetensors")
    save_file(
        {
            "lora_unet_x.lora_down.weight": torch.ones(2, 3),
            "lora_unet_x.alpha": torch.tensor(1.0, dtype=torch.float16),
        },
        path,
        metadata={"ss_network_dim": "2", "modelspec.architecture": "stable-diffusion-v1/lora"},
    )
    return path


def test_header_reads_metadata_and_shapes_without_tensors(tmp_path):
    header = read_safetensors_header(good_file(tmp_path))
    assert not isinstance(header, Problem)
    assert header.metadata == {"ss_network_dim": "2", "modelspec.architecture": "stable-diffusion-v1/lora"}
    assert header.tensors == {
        "lora_unet_x.lora_down.weight": ("F32", (2, 3)),
        "lora_unet_x.alpha": ("F16", ()),
    }
    assert header.data_offset + 24 + 2 == header.file_size


def test_read_safetensors_file(tmp_path):
    loaded = read_lora_file(good_file(tmp_path))
    assert isinstance(loaded, LoraFile)
    assert torch.equal(loaded.tensors["lora_unet_x.lora_down.weight"], torch.ones(2, 3))
    assert loaded.tensors["lora_unet_x.alpha"].dtype == torch.float16
    assert loaded.metadata["ss_network_dim"] == "2"
    assert os.path.isabs(loaded.path)


def _assert_problem(result, path, *words):
    assert isinstance(result, Problem), result
    assert result.subject == str(path) or result.subject == os.path.abspath(str(path))
    text = result.message.lower()
    for word in words:
        assert word in text, (word, result.message)


def test_truncated_file(tmp_path):
    full = good_file(tmp_path)
    data = open(full, "rb").read()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-5])
    _assert_problem(read_safetensors_header(cut), cut, "truncated")
    _assert_problem(read_lora_file(cut), cut, "truncated")


def test_header_not_json(tmp_path):
    path = write_raw(tmp_path / "nj.safetensors", b"{not json at all", b"\0" * 8)
    _assert_problem(read_lora_file(path), path, "json")


def test_header_length_beyond_file(tmp_path):
    path = write_raw(tmp_path / "long.safetensors", b"{}", length=10_000)
    _assert_problem(read_lora_file(path), path, "header")


def test_directory_named_safetensors(tmp_path):
    path = tmp_path / "x.safetensors"
    path.mkdir()
    _assert_problem(read_lora_file(path), path, "directory")
    _assert_problem(read_safetensors_header(path), path, "directory")


@pytest.mark.parametrize("name", ["empty.safetensors", "empty.pt"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    _assert_problem(read_lora_file(path), path, "empty")


def test_header_with_bad_entries(tmp_path):
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}).encode()
    path = write_raw(tmp_path / "size.safetensors", header, b"\0" * 4)
    _assert_problem(read_lora_file(path), path, "shape needs")
    header = json.dumps({"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = write_raw(tmp_path / "dtype.safetensors", header, b"\0" * 4)
    _assert_problem(read_lora_file(path), path, "data type q9", "cannot read", "float16")
    path = write_raw(tmp_path / "list.safetensors", b"[1, 2]")
    _assert_problem(read_lora_file(path), path, "json object")


def test_missing_file_and_unknown_suffix(tmp_path):
    _assert_problem(
        read_lora_file(tmp_path / "nope.safetensors"), tmp_path / "nope.safetensors", "does not exist"
    )
    other = tmp_path / "a.txt"
    other.write_text("x")
    _assert_problem(read_lora_file(other), other, "unsupported")


def test_weights_only_pickle_is_read(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"lora_unet_x.lora_up.weight": torch.ones(3, 2), "nested": {"alpha": 4}}, path)
    loaded = read_lora_file(path)
    assert isinstance(loaded, LoraFile)
    assert torch.equal(loaded.tensors["lora_unet_x.lora_up.weight"], torch.ones(3, 2))
    assert float(loaded.tensors["nested.alpha"]) == 4.0


def test_cloneofsimo_list_pickle_becomes_numbered_keys(tmp_path):
    path = tmp_path / "lora.pt"
    torch.save([torch.ones(4, 1), torch.zeros(1, 3)], path)
    loaded = read_lora_file(path)
    assert list(loaded.tensors) == ["0", "1"]


class _Payload:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".bin"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, suffix):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / f"evil{suffix}"
    with open(path, "wb") as f:
        pickle.dump({"lora_unet_x.lora_up.weight": _Payload(str(marker))}, f)
    result = read_lora_file(path)
    _assert_problem(result, path, "refused")
    assert not marker.exists()


def test_garbage_pickle(tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(b"\x80\x04this is not a pickle")
    assert isinstance(read_lora_file(path), Problem)


def test_adapter_config_beside_peft_file_joins_metadata(tmp_path):
    save_file(
        {"base_model.model.x.lora_A.weight": torch.ones(1, 2)}, str(tmp_path / "adapter_model.safetensors")
    )
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 1, "lora_alpha": 8}))
    loaded = read_lora_file(tmp_path / "adapter_model.safetensors")
    assert json.loads(loaded.metadata["adapter_config.json"])["lora_alpha"] == 8
    # an unrelated kohya file in the same folder does not pick it up
    save_file({"lora_unet_x.lora_down.weight": torch.ones(1, 2)}, str(tmp_path / "other.safetensors"))
    assert "adapter_config.json" not in read_lora_file(tmp_path / "other.safetensors").metadata


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_full_checkpoint_in_the_lora_folder_is_named_as_such(tmp_path, suffix):
    state = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.ones(4, 4, 3, 3),
        "first_stage_model.decoder.conv_in.bias": torch.ones(4),
        "alphas_cumprod": torch.ones(1000),  # real SD1 checkpoints hold the noise schedule
    }
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    _assert_problem(read_lora_file(path), path, "checkpoint", "not a lora")


def test_comfyui_lora_keys_are_not_a_checkpoint(tmp_path):
    path = str(tmp_path / "c.safetensors")
    save_file({"diffusion_model.input_blocks.1.1.proj_in.lora_up.weight": torch.ones(2, 1)}, path)
    assert isinstance(read_lora_file(path), LoraFile)


def test_file_shorter_than_the_length_field(tmp_path):
    path = tmp_path / "stub.safetensors"
    path.write_bytes(b"\x10\x00\x00")
    _assert_problem(read_lora_file(path), path, "only 3 bytes")


@pytest.mark.parametrize("kind", ["sd1.safetensors", "sdxl.safetensors", "a1111.pt"])
def test_textual_inversion_embedding_in_the_lora_folder_is_named_as_such(tmp_path, kind):
    path = tmp_path / f"emb_{kind}"
    if kind == "sd1.safetensors":
        save_file({"emb_params": torch.ones(2, 768)}, str(path))
    elif kind == "sdxl.safetensors":
        save_file({"clip_l": torch.ones(2, 768), "clip_g": torch.ones(2, 1280)}, str(path))
    else:  # the dict A1111's textual inversion training saves
        torch.save(
            {
                "string_to_token": {"*": 265},
                "string_to_param": {"*": torch.ones(2, 768)},
                "name": "emb",
                "step": 1000,
                "sd_checkpoint": "abc",
                "sd_checkpoint_name": "v1-5",
            },
            path,
        )
    _assert_problem(read_lora_file(path), path, "textual-inversion embedding", "embeddings folder")


def test_lora_with_bundled_embeddings_is_still_a_lora(tmp_path):
    path = str(tmp_path / "bundle.safetensors")
    save_file(
        {"lora_unet_x.lora_up.weight": torch.ones(2, 1), "bundle_emb.tok.clip_l": torch.ones(1, 768)}, path
    )
    assert isinstance(read_lora_file(path), LoraFile)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_unreadable_file_says_check_permissions(tmp_path, suffix, monkeypatch):
    path = tmp_path / f"locked{suffix}"
    if suffix == ".safetensors":
        good = good_file(tmp_path)
        os.replace(good, path)
    else:
        torch.save({"lora_unet_x.lora_up.weight": torch.ones(2, 1)}, path)
    import builtins

    real_open = builtins.open

    def deny(file, *args, **kwargs):  # root ignores file modes; refuse this one file like a permission error
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    _assert_problem(read_lora_file(path), path, "permission denied", "permissions")


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_renamed_to_safetensors_is_named_as_such(tmp_path, zip_format):
    path = tmp_path / "renamed.safetensors"
    torch.save(
        {"lora_unet_x.lora_up.weight": torch.ones(2, 1)}, path, _use_new_zipfile_serialization=zip_format
    )
    _assert_problem(read_lora_file(path), path, "pytorch pickle", "rename it to .pt")


def test_header_length_starting_like_a_pickle_is_still_read(tmp_path):
    entries = {"lora_unet_x.lora_up.weight": {"dtype": "F32", "shape": [2, 1], "data_offsets": [0, 8]}}
    header = json.dumps(entries).encode().ljust(640)  # length 640 = bytes 0x80 0x02, like a pickle's start
    path = write_raw(tmp_path / "h640.safetensors", header, struct.pack("<2f", 1.0, 2.0))
    with open(path, "rb") as handle:
        assert handle.read(2) == b"\x80\x02"
    loaded = read_lora_file(path)
    assert isinstance(loaded, LoraFile) and loaded.tensors["lora_unet_x.lora_up.weight"].tolist() == [
        [1.0],
        [2.0],
    ]
