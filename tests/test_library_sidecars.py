"""Metadata, sidecars, previews, Civitai info, architecture and key summaries over a generated tree."""

from __future__ import annotations

import hashlib
import json

import pytest
from test_library_tree import PNG_1PX, build_tree, write_lora

from lora_ext.errors import Problem
from lora_ext.library import EMBEDDED_PREVIEW, LoraLibrary
from lora_ext.library.arch import from_civitai_base_model


@pytest.fixture
def tree(tmp_path):
    paths = build_tree(tmp_path)
    library = LoraLibrary([tmp_path / "Lora", tmp_path / "LyCORIS"], cache_path=tmp_path / "cache.json")
    library.refresh()
    return library, paths


def _entry(library, path):
    entry = library.get(str(path))
    assert entry is not None, path
    return entry


def test_metadata_decoded_and_summary(tree):
    library, paths = tree
    style = _entry(library, paths["style_a"])
    assert style.metadata["ss_output_name"] == "StyleAlias"
    assert style.summary.algorithms == ("lora",)
    assert (style.summary.rank, style.summary.alpha) == (4, 2.0)
    assert (style.summary.layer_count, style.summary.key_count) == (3, 9)
    assert style.summary.conventions == ("kohya",)
    loha = _entry(library, paths["loha"])
    assert loha.summary.algorithms == ("loha",)
    assert loha.summary.alpha == 2.0  # read from the .alpha tensor bytes (no metadata alpha)
    assert loha.summary.layer_count == 1
    assert loha.metadata["ss_network_module"] == "lycoris.kohya"
    legacy = _entry(library, paths["legacy"])
    assert legacy.metadata == {} and legacy.summary.key_count == 0 and legacy.problems == ()


def test_json_valued_metadata_strings_are_decoded(tmp_path):
    tags = {"10_style": {"red": 3, "blue": 1}}
    write_lora(
        tmp_path / "L" / "m.safetensors", metadata={"ss_tag_frequency": tags, "ss_resolution": "(512, 512)"}
    )
    library = LoraLibrary([tmp_path / "L"], cache_path=False)
    library.refresh()
    (entry,) = library.entries()
    assert entry.metadata["ss_tag_frequency"] == tags
    assert entry.metadata["ss_resolution"] == "(512, 512)"


def test_user_metadata_description_and_weights(tree):
    library, paths = tree
    style = _entry(library, paths["style_a"])
    assert style.description == "json description"  # JSON description wins over style_a.txt
    assert style.activation_text == "style a, painterly"
    assert style.negative_text == "blurry"
    assert style.preferred_weight == 0.8
    assert style.user_metadata["x-other-tool"] == {"keep": True}
    covered = _entry(library, paths["covered"])
    assert covered.description == "from description.txt"
    pony = _entry(library, paths["pony"])
    assert pony.preferred_weight is None  # 0 means "use the default multiplier" (USERS C7)


def test_preview_lookup_order(tree, tmp_path):
    library, paths = tree
    assert _entry(library, paths["style_a"]).preview == str(
        tmp_path / "Lora" / "style_a.png"
    )  # beats .preview.png
    hero_preview = str(tmp_path / "Lora" / "chars" / "hero.preview.png")
    assert _entry(library, paths["hero"]).preview == hero_preview  # .preview.png beats .jpg
    assert library.preview_file(_entry(library, paths["hero"])) == hero_preview
    assert _entry(library, paths["villain"]).preview is None
    (tmp_path / "Lora" / "chars" / "Villain.webp").write_bytes(PNG_1PX)
    library.refresh()
    assert _entry(library, paths["villain"]).preview == str(tmp_path / "Lora" / "chars" / "Villain.webp")


def test_samples_format_preview_extension(tmp_path):
    write_lora(tmp_path / "L" / "a.safetensors")
    (tmp_path / "L" / "a.avif").write_bytes(b"x")
    plain = LoraLibrary([tmp_path / "L"], cache_path=False)
    plain.refresh()
    assert plain.entries()[0].preview is None
    webui = LoraLibrary([tmp_path / "L"], cache_path=False, preview_extension="avif")
    webui.refresh()
    assert webui.entries()[0].preview == str(tmp_path / "L" / "a.avif")


def test_embedded_cover(tree):
    library, paths = tree
    covered = _entry(library, paths["covered"])
    assert covered.preview == EMBEDDED_PREVIEW + "0"
    assert covered.cover_count == 1
    assert "ssmd_cover_images" not in covered.metadata
    assert library.cover_image(covered, 0) == PNG_1PX
    assert library.preview_file(covered) is None
    assert isinstance(library.cover_image(covered, 5), Problem)


def test_civitai_info_and_architecture(tree):
    library, paths = tree
    pony = _entry(library, paths["pony"])
    assert pony.civitai is not None and pony.civitai.found
    assert pony.civitai.base_model == "Pony" and pony.civitai.arch == "SDXL"
    assert pony.civitai.trained_words == ("pony_char", "score_9")
    assert (pony.civitai.model_id, pony.civitai.version_id) == (123, 456)
    assert "civitai text" in pony.civitai.description
    # Civitai Helper wrote "sd version": "Unknown"; that does not override (USERS C9), Civitai's Pony -> SDXL does
    assert (pony.arch, pony.arch_source) == ("SDXL", "civitai")
    assert (_entry(library, paths["style_a"]).arch, _entry(library, paths["style_a"]).arch_source) == (
        "SD1",
        "user",
    )
    assert (_entry(library, paths["hero"]).arch, _entry(library, paths["hero"]).arch_source) == (
        "SDXL",
        "keys",
    )
    assert _entry(library, paths["villain"]).arch == "SD1"
    assert _entry(library, paths["legacy"]).arch == "Unknown"


@pytest.mark.parametrize(
    "kind, metadata, expected",
    [
        ("sd1", {}, ("SD1", "keys")),
        ("sd2", {}, ("SD2", "keys")),
        ("sdxl", {}, ("SDXL", "keys")),
        ("flux", {}, ("Flux", "keys")),
        ("peft", {}, ("SD1", "keys")),
        ("plain", {}, ("Unknown", "none")),
        ("plain", {"ss_v2": "True"}, ("SD2", "ss_v2")),
        ("plain", {"ss_network_dim": "4"}, ("SD1", "metadata")),
        ("plain", {"ss_base_model_version": "sdxl_base_v1-0"}, ("SDXL", "ss_base_model_version")),
        ("plain", {"ss_base_model_version": "flux1"}, ("Flux", "ss_base_model_version")),
        ("plain", {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, ("SDXL", "modelspec")),
        (
            "sd1",
            {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"},
            ("SD1", "keys"),
        ),  # shapes win
        ("sdxl", {"ss_base_model_version": "sd_v1"}, ("SDXL", "keys")),
        ("plain", {"ss_sd_model_name": "ponyDiffusionV6XL.safetensors"}, ("SDXL", "model name")),
        ("plain", {"modelspec.architecture": "stable-diffusion-v2-768-v/lora"}, ("SD2", "modelspec")),
    ],
)
def test_architecture_detection(tmp_path, kind, metadata, expected):
    write_lora(tmp_path / "L" / "f.safetensors", kind, metadata)
    library = LoraLibrary([tmp_path / "L"], cache_path=False)
    library.refresh()
    (entry,) = library.entries()
    assert (entry.arch, entry.arch_source) == expected


def test_user_sd_version_overrides_detection(tmp_path):
    write_lora(tmp_path / "L" / "f.safetensors", "sd1")
    (tmp_path / "L" / "f.json").write_text(json.dumps({"sd version": "SDXL"}))
    library = LoraLibrary([tmp_path / "L"], cache_path=False)
    library.refresh()
    assert (library.entries()[0].arch, library.entries()[0].arch_source) == ("SDXL", "user")


@pytest.mark.parametrize(
    "base, arch",
    [
        ("SD 1.5", "SD1"),
        ("SD 1.4", "SD1"),
        ("SD 1.5 LCM", "SD1"),
        ("SD 2.1 768", "SD2"),
        ("SDXL 1.0", "SDXL"),
        ("SDXL Lightning", "SDXL"),
        ("Pony", "SDXL"),
        ("Illustrious", "SDXL"),
        ("NoobAI", "SDXL"),
        ("Pony V7", "Other"),
        ("Flux.1 D", "Flux"),
        ("Flux.1 Kontext", "Flux"),
        ("SD 3.5 Large", "SD3"),
        ("Qwen", "Other"),
        ("", "Unknown"),
    ],
)
def test_civitai_base_model_mapping(base, arch):
    assert from_civitai_base_model(base) == arch


def test_minimal_civitai_info_means_not_found(tmp_path):
    write_lora(tmp_path / "L" / "f.safetensors", "plain")
    (tmp_path / "L" / "f.civitai.info").write_text("{}")
    library = LoraLibrary([tmp_path / "L"], cache_path=False)
    library.refresh()
    entry = library.entries()[0]
    assert entry.civitai is not None and not entry.civitai.found
    assert entry.arch == "Unknown"


def test_write_user_metadata_is_atomic_merges_and_keeps_the_lora_file(tree, tmp_path):
    library, paths = tree
    style = _entry(library, paths["style_a"])
    lora_bytes = paths["style_a"].read_bytes()
    updated = library.write_user_metadata(
        style, {"activation text": "new words", "preferred weight": -1.5, "notes": None}
    )
    assert not isinstance(updated, Problem)
    assert updated.activation_text == "new words" and updated.preferred_weight == -1.5
    on_disk = json.loads((tmp_path / "Lora" / "style_a.json").read_text(encoding="utf-8"))
    assert on_disk["x-other-tool"] == {"keep": True}  # unknown keys preserved
    assert on_disk["description"] == "json description"
    assert "notes" not in on_disk
    assert library.user_metadata(updated) == on_disk
    assert hashlib.sha256(paths["style_a"].read_bytes()).digest() == hashlib.sha256(lora_bytes).digest()
    assert sorted(p.name for p in (tmp_path / "Lora").iterdir() if p.name.startswith(".tmp")) == []
    # a LoRA without a sidecar gets a new {name}.json
    villain = _entry(library, paths["villain"])
    assert not isinstance(library.write_user_metadata(villain, {"sd version": "SD2"}), Problem)
    assert json.loads((tmp_path / "Lora" / "chars" / "Villain.json").read_text()) == {"sd version": "SD2"}
    assert _entry(library, paths["villain"]).arch == "SD2"


def test_write_user_metadata_with_an_unsavable_value_keeps_the_old_file(tree, tmp_path):
    library, paths = tree
    before = (tmp_path / "Lora" / "style_a.json").read_text(encoding="utf-8")
    result = library.write_user_metadata(_entry(library, paths["style_a"]), {"notes": {1, 2}})
    assert isinstance(result, Problem) and "Cannot save" in result.message
    assert (tmp_path / "Lora" / "style_a.json").read_text(encoding="utf-8") == before
    assert [p.name for p in (tmp_path / "Lora").iterdir() if p.name.startswith(".tmp")] == []


def test_quick_same_size_rewrites_are_all_seen(tree, tmp_path, monkeypatch):
    import os

    import lora_ext.library.library as library_module

    real_write = library_module.write_json_atomic

    def write_within_one_tick(path, data):  # file times are as coarse as the kernel tick: simulate one tick
        real_write(path, data)
        os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))

    monkeypatch.setattr(library_module, "write_json_atomic", write_within_one_tick)
    library, paths = tree
    entry = _entry(library, paths["villain"])
    sidecar = tmp_path / "Lora" / "chars" / "Villain.json"
    for weight in (0.1, 0.2, 0.3, 0.4):  # same size and same mtime each time
        entry = library.write_user_metadata(entry, {"preferred weight": weight})
        assert not isinstance(entry, Problem)
        assert entry.preferred_weight == weight
        assert library.get(str(paths["villain"])).preferred_weight == weight
        assert json.loads(sidecar.read_text())["preferred weight"] == weight
    fresh = LoraLibrary([tmp_path / "Lora", tmp_path / "LyCORIS"], cache_path=tmp_path / "cache.json")
    fresh.refresh()
    assert fresh.get(str(paths["villain"])).preferred_weight == 0.4


def test_write_user_metadata_refuses_to_overwrite_broken_json(tree, tmp_path):
    library, paths = tree
    broken = tmp_path / "Lora" / "chars" / "Villain.json"
    broken.write_text("{not json", encoding="utf-8")
    library.refresh()
    villain = _entry(library, paths["villain"])
    assert any("not valid JSON" in p.message for p in villain.problems)
    result = library.write_user_metadata(villain, {"notes": "x"})
    assert isinstance(result, Problem) and "fix or delete" in result.message
    assert broken.read_text(encoding="utf-8") == "{not json"


def test_unknown_entry_is_refused(tree, tmp_path):
    library, paths = tree
    import dataclasses

    forged = dataclasses.replace(_entry(library, paths["style_a"]), path="/etc/passwd", name="passwd")
    assert isinstance(library.write_user_metadata(forged, {"notes": "x"}), Problem)
    assert isinstance(library.hashes(forged), Problem)
    assert isinstance(library.cover_image(forged), Problem)
    assert library.user_metadata(forged) == {}
