"""The library over files written by the real tools (lycoris-lora, diffusers + peft) and kohya-style files with
kohya's own ``sshs_model_hash``, on the tiny SDXL pipeline (so key names say SDXL: ``lora_te2_``, depth > 1)."""

from __future__ import annotations

import hashlib

import pytest
from lora_writers import kohya_metadata, write_kohya, write_lycoris, write_peft_lora
from test_library_tree import header_length

from lora_ext.library import Hashes, LoraLibrary


@pytest.fixture(scope="module")
def real_library(tmp_path_factory):
    from lora_ext.demo import build_tiny_pipeline

    pipe = build_tiny_pipeline("sdxl")
    root = tmp_path_factory.mktemp("real") / "Lora"
    written = {
        "loha": write_lycoris(
            pipe, root / "lyco" / "tiny_loha.safetensors", algo="loha", rank=4, alpha=2.0
        ).path,
        "lokr": write_lycoris(
            pipe, root / "lyco" / "tiny_lokr.safetensors", algo="lokr", rank=4, alpha=2.0
        ).path,
        "peft": write_peft_lora(pipe, root / "peft" / "tiny_peft.safetensors", rank=4, alpha=8.0).path,
        "kohya": write_kohya(
            pipe,
            root / "tiny_kohya.safetensors",
            rank=4,
            alpha=2.0,
            metadata=kohya_metadata("sdxl", "kohya_alias"),
        ).path,
    }
    library = LoraLibrary([root], cache_path=False)
    report = library.refresh()
    return library, written, report


def _entry(library, path):
    entry = library.get(str(path))
    assert entry is not None, path
    return entry


def test_real_files_list_without_problems(real_library):
    library, written, report = real_library
    assert report.errors == []
    assert sorted(e.path for e in library.entries()) == sorted(str(p) for p in written.values())


def test_lycoris_files(real_library):
    library, written, _ = real_library
    for algo in ("loha", "lokr"):
        entry = _entry(library, written[algo])
        assert entry.summary.algorithms == (algo,)
        assert entry.summary.alpha == 2.0
        assert entry.summary.conventions == ("kohya",)
        assert entry.metadata["ss_network_module"] == "lycoris.kohya"
        assert entry.arch == "SDXL"
        assert entry.summary.layer_count > 0 and entry.summary.key_count > entry.summary.layer_count
    assert _entry(library, written["loha"]).summary.rank == 4


def test_peft_file(real_library):
    library, written, _ = real_library
    entry = _entry(library, written["peft"])
    summary = entry.summary
    assert (summary.algorithms, summary.rank, summary.alpha) == (("lora",), 4, 8.0)  # alpha from the metadata
    assert summary.conventions == ("diffusers",)
    assert summary.key_count == 2 * summary.layer_count  # lora_A + lora_B per layer


def test_kohya_file_alias_arch_and_embedded_hash(real_library):
    library, written, _ = real_library
    entry = _entry(library, written["kohya"])
    assert entry.alias == "kohya_alias"
    assert library.resolve("kohya_alias").path == entry.path
    assert (entry.arch, entry.arch_source) == ("SDXL", "keys")  # lora_te2_ keys (metadata agrees)
    assert entry.metadata["modelspec.architecture"].startswith("stable-diffusion-xl")
    hashes = library.hashes(entry)
    assert isinstance(hashes, Hashes) and hashes.source == "sshs_model_hash"
    data = written["kohya"].read_bytes()
    independent = hashlib.sha256(data[8 + header_length(written["kohya"]) :]).hexdigest()
    # kohya hashes the file re-serialized with only ss_* metadata: the tensor bytes are the same
    assert hashes.addnet == independent == hashes.computed_addnet
    assert hashes.sha256 == hashlib.sha256(data).hexdigest()
