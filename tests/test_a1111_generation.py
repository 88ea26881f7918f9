"""The A1111 host inside the fake webui: the real txt2img call order (A1111_CONTRACT §8.2–8.3) with batches and a
hires pass; weights during sampling equal the engine's; bit-exact restore; the restore traps of §8.4."""

from __future__ import annotations

import os

import pytest
import torch
from fake_webui.harness import Webui, fake_modules, lora_host
from fake_webui.lora_fixtures import expected_state, install, same_state, state, write_lora


@pytest.fixture(scope="session")
def lora_store(tmp_path_factory):
    """name -> file, written once: ``x_sd1``/``x_sd2``/``x_sdxl`` and a second SD1 LoRA ``y_sd1``."""
    folder = tmp_path_factory.mktemp("loras")
    files = {f"x_{f}": write_lora(folder, f"x_{f}", f, seed=1) for f in ("sd1", "sd2", "sdxl")}
    files["y_sd1"] = write_lora(folder, "y_sd1", "sd1", seed=2)
    return files


@pytest.fixture
def webui(tmp_path):
    with fake_modules():
        w = Webui(tmp_path).start()
        try:
            yield w
        finally:
            w.stop()


class Probe:
    """``p.sampling_probe``: records the model's weights at every sampling pass; may raise once."""

    def __init__(self, model, raise_in: str | None = None):
        self.model = model
        self.raise_in = raise_in
        self.seen: list[tuple[str, dict]] = []

    def __call__(self, p, pass_name):
        self.seen.append((pass_name, state(self.model)))
        if self.raise_in == pass_name:
            raise RuntimeError("simulated failure inside sampling")


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_tag_applies_during_sampling_and_restores_bit_exactly(webui, lora_store, family):
    model = webui.load_model(family)
    original = state(model)
    lora = install(lora_store[f"x_{family}"], webui.lora_dir, "x")
    expected = expected_state(family, [(lora, 0.8, 0.8)])

    plain, p_plain = webui.txt2img("a photo", n_iter=2, enable_hr=True)
    probe = Probe(model)
    tagged, p_tagged = webui.txt2img("a photo <lora:x:0.8>", n_iter=2, enable_hr=True, sampling_probe=probe)

    # every pass of both batches (first pass and hires) sampled with exactly the engine's patched weights
    assert [name for name, _ in probe.seen] == ["first", "hires", "first", "hires"]
    for _, weights in probe.seen:
        assert same_state(weights, expected) == []
    # text-encoder outputs (conds) and UNet outputs differ from the untagged generation
    c_plain = p_plain.c["crossattn"] if isinstance(p_plain.c, dict) else p_plain.c
    c_tagged = p_tagged.c["crossattn"] if isinstance(p_tagged.c, dict) else p_tagged.c
    assert not torch.equal(c_plain, c_tagged)
    assert not torch.equal(plain.images[0], tagged.images[0])
    # after the generation every parameter is bit-identical to the original
    assert same_state(state(model), original) == []
    assert "Lora hashes" in tagged.info


def test_exception_inside_sampling_leaves_next_generation_identical_to_fresh_model(webui, lora_store):
    model = webui.load_model("sd1")
    original = state(model)
    install(lora_store["x_sd1"], webui.lora_dir, "x")

    with pytest.raises(RuntimeError, match="simulated failure"):
        webui.txt2img("a photo <lora:x:1>", sampling_probe=Probe(model, raise_in="first"))
    assert same_state(state(model), original) != []  # nothing after the loop ran: still patched

    probe = Probe(model)
    after, _ = webui.txt2img("a photo", sampling_probe=probe)
    assert same_state(probe.seen[0][1], original) == []  # restored at the next activation (activate(p, []))

    fresh = webui.load_model("sd1")
    reference, _ = webui.txt2img("a photo")
    assert torch.equal(after.images[0], reference.images[0])
    assert same_state(state(model), state(fresh)) == []


def test_deactivate_not_called_without_tags_yet_model_restored(webui, lora_store):
    """§3.4: deactivate runs only if the LAST batch had tags; postprocess / activate([]) restore anyway."""
    model = webui.load_model("sd1")
    original = state(model)
    install(lora_store["x_sd1"], webui.lora_dir, "x")
    from modules import processing, scripts

    probe = Probe(model)
    p = processing.StableDiffusionProcessingTxt2Img(
        prompt="", n_iter=2, scripts=scripts.scripts_txt2img, sampling_probe=probe
    )
    p.all_prompts = ["a photo <lora:x:1>", "a photo"]
    processing.process_images(p)
    assert not p.extra_network_data  # so extra_networks.deactivate was not called
    assert same_state(probe.seen[0][1], original) != []
    assert same_state(probe.seen[1][1], original) == []
    assert same_state(state(model), original) == []


def test_activation_runs_inside_autocast_and_math_stays_float32(webui, lora_store):
    """§8.2 step 4: the fake's autocast is a real bf16 autocast; exact equality with the fp32 reference proves
    the engine switched it off."""
    from modules import devices

    model = webui.load_model("sd1")
    lora = install(lora_store["x_sd1"], webui.lora_dir, "x")
    probe = Probe(model)
    before = devices.autocast_entries
    webui.txt2img("a photo <lora:x:1.3>", sampling_probe=probe)
    assert devices.autocast_entries > before
    assert same_state(probe.seen[0][1], expected_state("sd1", [(lora, 1.3, 1.3)])) == []


def test_same_architecture_checkpoint_switch_drops_stale_backups(webui, lora_store):
    """§8.4: weights loaded in place + model_loaded: the backup of the old checkpoint must not come back."""
    from modules import sd_models
    from tiny_models import a1111_model

    model = webui.load_model("sd1")
    install(lora_store["x_sd1"], webui.lora_dir, "x")
    with pytest.raises(RuntimeError):
        webui.txt2img("a photo <lora:x:1>", sampling_probe=Probe(model, raise_in="first"))
    other = state(a1111_model("sd1", seed=5))
    sd_models.load_weights_in_place(model, other)  # fires model_loaded
    probe = Probe(model)
    webui.txt2img("a photo", sampling_probe=probe)
    assert same_state(probe.seen[0][1], other) == []
    assert same_state(state(model), other) == []


def test_model_back_from_memory_cache_without_callback(webui, lora_store):
    """§6/§8.4: a model switched to from the webui's cache fires no model_loaded; the host detects what happened."""
    from modules import sd_models
    from tiny_models import a1111_model

    model_a = webui.load_model("sd1")
    original_a = state(model_a)
    install(lora_store["x_sd1"], webui.lora_dir, "x")
    with pytest.raises(RuntimeError):
        webui.txt2img("a photo <lora:x:1>", sampling_probe=Probe(model_a, raise_in="first"))

    # switch to another cached model without callback: the next activation restores A (its backups are valid)
    model_b = a1111_model("sd1", seed=3)
    sd_models.switch_to_cached(model_b)
    webui.txt2img("a photo")
    assert same_state(state(model_a), original_a) == []

    # A patched again, then its tensors rewritten behind our back (no callback): stale backups are dropped
    sd_models.switch_to_cached(model_a)
    with pytest.raises(RuntimeError):
        webui.txt2img("a photo <lora:x:1>", sampling_probe=Probe(model_a, raise_in="first"))
    reloaded = state(a1111_model("sd1", seed=7))
    with torch.no_grad():
        model_a.load_state_dict(reloaded)
    webui.txt2img("a photo")
    assert same_state(state(model_a), reloaded) == []


def test_cond_cache_never_serves_conds_of_another_lora_set(webui, lora_store):
    """§8.2 step 6: same tags, different file behind the name -> conds are recomputed."""
    model = webui.load_model("sd1")
    install(lora_store["x_sd1"], webui.lora_dir, "x")
    _, p1 = webui.txt2img("a photo <lora:x:1>")
    _, p2 = webui.txt2img("a photo <lora:x:1>")
    assert torch.equal(p1.c, p2.c)
    path = install(lora_store["y_sd1"], webui.lora_dir, "x")  # same name, other weights
    os.utime(path, ns=(1, 10**18))
    probe = Probe(model)
    _, p3 = webui.txt2img("a photo <lora:x:1>", sampling_probe=probe)
    assert same_state(probe.seen[0][1], expected_state("sd1", [(lora_store["y_sd1"], 1.0, 1.0)])) == []
    assert not torch.equal(p3.c, p1.c)


def test_cond_cache_guard_holds_across_a_ui_reload(webui, lora_store):
    """§8.2 step 6 across a UI reload: the scripts (and our host) are loaded anew while the webui's class-level cond
    cache stays. A file replaced behind the same tag after the reload must not get the conds cached before it."""
    webui.load_model("sd1")
    install(lora_store["x_sd1"], webui.lora_dir, "x")
    _, p1 = webui.txt2img("a photo <lora:x:1>")
    before = lora_host()
    webui.stop()
    webui.start()  # "Reload UI": script_unloaded, then the scripts load again (§2)
    assert lora_host() is not before
    path = install(lora_store["y_sd1"], webui.lora_dir, "x")  # same name, other weights
    os.utime(path, ns=(1, 10**18))
    _, p2 = webui.txt2img("a photo <lora:x:1>")
    assert not torch.equal(p2.c, p1.c)
    _, p3 = webui.txt2img("a photo <lora:x:1>")
    assert torch.equal(p3.c, p2.c)


def test_host_state_is_one_object_per_script_load(webui):
    host = lora_host()
    assert host is not None
    assert host.library.roots[0] == str(webui.lora_dir)


def test_interrupted_generation_ends_restored(webui, lora_store):
    """§8.2: an interrupt only breaks the batch loop; the end-of-generation restore still runs."""
    from modules import shared

    model = webui.load_model("sd1")
    original = state(model)
    install(lora_store["x_sd1"], webui.lora_dir, "x")

    def interrupt(p, pass_name):
        shared.state.interrupted = True

    processed, _ = webui.txt2img("a photo <lora:x:1>", n_iter=3, sampling_probe=interrupt)
    assert len(processed.images) == 1
    assert same_state(state(model), original) == []


@pytest.mark.parametrize("callback", ["script_unloaded", "app_reload"])
def test_exception_then_unload_or_reload_restores(webui, lora_store, callback):
    from modules import script_callbacks

    model = webui.load_model("sd1")
    original = state(model)
    install(lora_store["x_sd1"], webui.lora_dir, "x")
    with pytest.raises(RuntimeError):
        webui.txt2img("a photo <lora:x:1>", sampling_probe=Probe(model, raise_in="hires"), enable_hr=True)
    assert same_state(state(model), original) != []
    if callback == "script_unloaded":
        script_callbacks.script_unloaded_callback()
    else:
        script_callbacks.app_reload_callback()  # what webui.py calls on a UI reload (on_before_reload callbacks)
    assert same_state(state(model), original) == []


def move_to_other_device(model) -> None:
    """What ``send_model_to_cpu`` / ``send_model_to_device`` do on a CUDA machine (``model.to(device)``): every
    parameter gets new storage holding the same values (on this CPU-only machine ``.to("cpu")`` would be a no-op)."""
    for param in model.parameters():
        param.data = param.data.clone()


def test_patched_model_moved_by_a_mid_generation_checkpoint_switch_is_restored(webui, lora_store):
    """§6/§8.4 with ``sd_checkpoints_limit`` > 1: a switch during the generation (refiner, hires checkpoint) keeps the
    patched model in memory and moves it to the CPU (``sd_checkpoints_keep_in_cpu``), then back, with no
    ``model_loaded``. Its tensors were replaced by moved copies, not reloaded: the originals must come back, or the
    LoRA stays baked into the model for good (and is applied twice by the next generation with the tag)."""
    from modules import sd_models
    from tiny_models import a1111_model

    model_a = webui.load_model("sd1")
    original_a = state(model_a)
    lora = install(lora_store["x_sd1"], webui.lora_dir, "x")
    model_b = a1111_model("sd1", seed=3)

    def refiner_switch(p, pass_name):  # base sampled with the LoRA, then the refiner takes over
        move_to_other_device(model_a)
        sd_models.switch_to_cached(model_b)

    webui.txt2img("a photo <lora:x:1>", sampling_probe=refiner_switch)
    sd_models.switch_to_cached(model_a)
    move_to_other_device(model_a)
    assert same_state(state(model_a), original_a) == []

    probe = Probe(model_a)
    webui.txt2img("a photo <lora:x:1>", sampling_probe=probe)  # patched once, not twice
    assert same_state(probe.seen[0][1], expected_state("sd1", [(lora, 1.0, 1.0)])) == []
    webui.txt2img("a photo")
    assert same_state(state(model_a), original_a) == []
