"""Block weights (``lbw=``) and hires weights (``hr=``, ``hrte=``, ``hrunet=``) through the fake webui's real txt2img
call order with a hires pass (A1111_CONTRACT §8.2–8.3; USERS G1–G3, G11, H2). Weights seen at each sampling pass are
compared with the engine applied directly."""

from __future__ import annotations

import pytest
import torch
from fake_webui.lora_fixtures import expected_state, same_state, sd1_webui, state, write_lora


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("block_loras")
    return {
        "x": write_lora(folder, "x", "sd1", seed=1),
        "y": write_lora(folder, "y", "sd1", seed=2),
        "xl": write_lora(folder, "xl", "sdxl", seed=3),
    }


@pytest.fixture
def webui(tmp_path, store):
    with sd1_webui(tmp_path, {name: store[name] for name in ("x", "y", "xl")}) as w:
        yield w


def passes(webui, prompt, **kwargs) -> tuple[dict, dict, object]:
    """(weights at the first pass, weights at the hires pass, Processed); the model ends restored."""
    seen = {}
    processed, _ = webui.txt2img(
        prompt,
        enable_hr=True,
        sampling_probe=lambda p, name: seen.setdefault(name, state(webui.model)),
        **kwargs,
    )
    assert same_state(state(webui.model), webui.original) == []
    return seen["first"], seen["hires"], processed


def test_lbw_preset_applies_in_both_passes(webui, store):
    first, hires, _ = passes(webui, "a photo <lora:x:0.8:lbw=OUTD>")
    expected = expected_state("sd1", [(store["x"], 0.8, 0.8, "OUTD")])
    assert same_state(first, expected) == []
    assert same_state(hires, expected) == []  # G3
    # OUTD zeroes the input blocks: they hold their original weights while sampling
    inputs = [k for k in first if ".input_blocks.1." in k]
    assert inputs and all(same_state({k: first[k]}, {k: webui.original[k]}) == [] for k in inputs)
    assert same_state(first, expected_state("sd1", [(store["x"], 0.8, 0.8)])) != []


def test_lbw_list_and_negative_multiplier(webui, store):
    vector = "1,0,1,0,0,0,0,1,0,0,0,0,1,1,1,1,1"
    first, _, _ = passes(webui, f"a photo <lora:x:-2:lbw={vector}>")
    assert same_state(first, expected_state("sd1", [(store["x"], -2.0, -2.0, vector)])) == []


@pytest.mark.parametrize(
    ("tag", "first_weights", "hires_weights"),
    [
        ("<lora:x:0.8>", (0.8, 0.8), (0.8, 0.8)),  # no hr=: hires keeps the first-pass weights
        ("<lora:x:0.8:hr=0.3>", (0.8, 0.8), (0.3, 0.3)),
        ("<lora:x:0.8:hrte=0.1:hrunet=0.5>", (0.8, 0.8), (0.1, 0.5)),
    ],
)
def test_hires_weights(webui, store, tag, first_weights, hires_weights):
    first, hires, _ = passes(webui, f"a photo {tag}")
    assert same_state(first, expected_state("sd1", [(store["x"], *first_weights)])) == []
    assert same_state(hires, expected_state("sd1", [(store["x"], *hires_weights)])) == []


def test_hr_zero_drops_the_lora_from_the_hires_pass(webui, store):
    first, hires, processed = passes(webui, "a photo <lora:x:0.8:hr=0> <lora:y:0.5>")
    assert same_state(first, expected_state("sd1", [(store["x"], 0.8, 0.8), (store["y"], 0.5, 0.5)])) == []
    assert same_state(hires, expected_state("sd1", [(store["y"], 0.5, 0.5)])) == []
    assert "x: " in processed.extra_generation_params["Lora hashes"]


def test_lora_hashes_list_a_lora_used_only_in_the_hires_pass(webui, store):
    first, hires, processed = passes(webui, "a photo <lora:x:0.8>", hr_prompt="a photo <lora:y:0.5>")
    assert same_state(hires, expected_state("sd1", [(store["y"], 0.5, 0.5)])) == []
    hashes = processed.extra_generation_params["Lora hashes"]
    assert "x: " in hashes and "y: " in hashes
    assert "y: " in processed.info


def test_bad_lbw_skips_only_its_lora_with_a_message(webui, store):
    first, _, processed = passes(webui, "a photo <lora:x:1:lbw=1,0,1> <lora:y:0.5>")
    assert same_state(first, expected_state("sd1", [(store["y"], 0.5, 0.5)])) == []
    assert any("lbw= has 3 values" in line and "17 or 26" in line for line in processed.comments.splitlines())


def test_step_window_beyond_the_pass_applies_for_all_steps_without_a_warning(webui, store):
    first, _, processed = passes(webui, "a photo <lora:x:0.8:stop=10>")  # 2 steps, both before step 10 (G4)
    assert same_state(first, expected_state("sd1", [(store["x"], 0.8, 0.8)])) == []
    assert "stop=" not in processed.comments


def test_changing_lbw_between_generations_changes_weights_and_conds(webui, store):
    a, _, _ = passes(webui, "a photo <lora:x:1:lbw=INS>")
    b, _, _ = passes(webui, "a photo <lora:x:1:lbw=OUTS>")
    assert same_state(a, expected_state("sd1", [(store["x"], 1.0, 1.0, "INS")])) == []
    assert same_state(b, expected_state("sd1", [(store["x"], 1.0, 1.0, "OUTS")])) == []


def test_sdxl_12_value_list(webui, store):
    model = webui.load_model("sdxl")
    webui.model, webui.original = model, state(model)
    vector = "1,0,0,1,1,1,0,0,1,1,0,0"
    first, hires, _ = passes(webui, f"a photo <lora:xl:0.7:lbw={vector}>")
    expected = expected_state("sdxl", [(store["xl"], 0.7, 0.7, vector)])
    assert same_state(first, expected) == [] and same_state(hires, expected) == []


@pytest.mark.parametrize("lowvram", [False, True])
def test_hires_text_encoder_weights_reach_the_hires_conds(webui, store, lowvram):
    """§8.3: with ``--lowvram``/``--medvram`` the webui computes the hires conds before sampling, activating the hires
    data while ``p.is_hr_pass`` is still False; ``hrte=`` must still be the weight of those conds."""
    from fake_webui.harness import tiny_model
    from modules import devices, processing

    def conds(te: float, unet: float):
        model = tiny_model("sd1")
        model.load_state_dict(expected_state("sd1", [(store["x"], te, unet)]))
        with devices.autocast():  # as the webui computes conds
            return processing.encode(model, ["a photo "], 2)

    webui.model.lowvram = lowvram
    _, p = webui.txt2img("a photo <lora:x:0.8:hrte=0.1:hrunet=0.5>", enable_hr=True)
    assert torch.equal(p.c, conds(0.8, 0.8))
    assert torch.equal(p.hr_c, conds(0.1, 0.5))
    assert same_state(state(webui.model), webui.original) == []
