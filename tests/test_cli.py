"""``python -m lora_ext generate | inspect`` on the embedded tiny model with LoRAs written by diffusers + peft."""

from __future__ import annotations

import pytest
from PIL import Image

from lora_ext.cli import main
from tests.browser_helpers import write_peft_lora


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_loras")
    write_peft_lora(folder, "style", seed=1)
    return folder


def test_generate_writes_images_and_prints_coverage(lora_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        ["generate", "--prompt", "a cat <lora:style:0.8>", "--lora-dir", str(lora_dir), "--out", str(out)]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "matched" in text and "style" in text
    with Image.open(out / "image-0.png") as img:
        assert img.size == (64, 64)


def test_grid_is_one_flag_away(lora_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    code = main(
        ["generate", "--prompt", "a cat", "--grid", "style", "--lora-dir", str(lora_dir), "--out", str(out)]
    )
    assert code == 0
    with Image.open(out / "grid-style.png") as grid:
        assert grid.size == (4 * 64, 64 + 14)
        tiles = [grid.crop((i * 64, 14, (i + 1) * 64, 78)).tobytes() for i in range(4)]
    assert len(set(tiles)) == 4  # weights -1, 0, 0.5, 1 give four different images
    assert "matched" in capsys.readouterr().out


def test_unknown_lora_is_reported_not_raised(lora_dir, tmp_path, capsys):
    code = main(
        ["generate", "--prompt", "x <lora:nope:1>", "--lora-dir", str(lora_dir), "--out", str(tmp_path)]
    )
    assert code == 3
    assert "nope" in capsys.readouterr().out


def test_inspect_prints_coverage_and_missing_file_is_a_message(lora_dir, capsys):
    assert main(["inspect", str(lora_dir / "style.safetensors")]) == 0
    assert "matched" in capsys.readouterr().out
    assert main(["inspect", str(lora_dir / "missing.safetensors")]) == 2
    assert "File not found" in capsys.readouterr().err


def test_demo_applies_reports_restores_and_writes_grid(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    text = capsys.readouterr().out
    assert "Coverage report" in text and "matched" in text
    assert "Weights restored bit-identically: 244 of 244 tensors" in text
    assert "differs from the image without it: yes.  OK" in text
    assert "still bit-identical to the original: yes.  OK" in text and "FAILED" not in text
    grid = tmp_path / "demo_output" / "grid.png"
    assert f"     {grid}" in text  # the printed location is where the grid is
    with Image.open(grid) as img:
        assert img.size == (4 * 64, 2 * (64 + 14))  # images, then their differences to weight 0
        assert img.crop((64, 2 * 14 + 64, 128, 2 * (14 + 64))).getextrema() == ((0, 0),) * 3  # 0 vs itself
        assert img.crop((192, 2 * 14 + 64, 256, 2 * (14 + 64))).getbbox() is not None  # weight 1 differs
    assert "bash run.sh app" in text
    assert "<lora:demo_style:1> demo style, bold strokes" in text  # tag + activation text, as a card click
    assert len(list((tmp_path / ".lora_ext_demo" / "loras").rglob("*.safetensors"))) >= 2


def test_model_flag_loads_a_diffusers_folder(lora_dir, tmp_path):
    from lora_ext.demo import build_tiny_pipeline

    model = tmp_path / "model"
    build_tiny_pipeline("sd1", 0).save_pretrained(str(model))
    args = ["--prompt", "a cat <lora:style:1>", "--lora-dir", str(lora_dir), "--steps", "2", "--width", "64"]
    args += ["--height", "64"]
    assert main(["generate", *args, "--model", str(model), "--out", str(tmp_path / "a")]) == 0
    assert main(["generate", *args, "--out", str(tmp_path / "b")]) == 0
    with Image.open(tmp_path / "a" / "image-0.png") as a, Image.open(tmp_path / "b" / "image-0.png") as b:
        assert a.tobytes() == b.tobytes()  # the same weights, loaded from disk instead of built in-process


def test_missing_model_or_lora_dir_is_a_message(tmp_path, capsys):
    assert main(["generate", "--prompt", "x", "--model", str(tmp_path / "nowhere")]) == 2
    assert "Model not found" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", "--lora-dir", str(tmp_path / "nowhere")]) == 2
    assert "LoRA folder not found" in capsys.readouterr().err


def test_generation_reports_each_step(lora_dir):
    from lora_ext.ui.runtime import generate, open_runtime

    rt = open_runtime(None, [str(lora_dir)])
    seen = []
    gen = generate(
        rt, "a cat <lora:style:1>", steps=3, on_step=lambda done, total: seen.append((done, total))
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert gen.applied.active


@pytest.mark.parametrize(
    ("name", "said"), [("nope", "Lora not found: nope"), ("style:0.5", "cannot be written")]
)
def test_grid_of_a_lora_that_cannot_be_used_is_a_message(lora_dir, tmp_path, capsys, name, said):
    """--grid NAME with an unknown name (or a weight typed into it) stops with a message before generating
    anything, instead of a traceback or a grid of four identical images and exit status 0."""
    out = tmp_path / "grid"
    code = main(
        ["generate", "--prompt", "a cat", "--grid", name, "--lora-dir", str(lora_dir), "--out", str(out)]
    )
    assert code == 2
    assert said in capsys.readouterr().err
    assert not out.exists() or not list(out.glob("*.png"))


@pytest.mark.parametrize(
    ("flags", "said"),
    [(["--width", "100"], "--width"), (["--height", "-8"], "--height"), (["--steps", "-1"], "--steps")],
)
def test_bad_sizes_are_a_message_not_a_traceback(lora_dir, tmp_path, capsys, flags, said):
    code = main(
        ["generate", "--prompt", "a cat", "--lora-dir", str(lora_dir), "--out", str(tmp_path), *flags]
    )
    assert code == 2
    assert said in capsys.readouterr().err
