"""Tag variants through the fake webui (A1111_CONTRACT §3.3–3.5): weights, te=/unet=, lyco:, duplicates, unknown
names, wrong architecture, bad tags, engine errors on one file, the ``sd_lora`` option, bundled embeddings,
coverage messages. Weights during sampling are compared with the engine applied directly."""

from __future__ import annotations

import pytest
from fake_webui.harness import lora_host
from fake_webui.lora_fixtures import expected_state, install, same_state, sd1_webui, state, write_lora
from safetensors.torch import load_file, save_file


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tag_loras")
    return {
        "x": write_lora(folder, "x", "sd1", seed=1),
        "y": write_lora(folder, "y", "sd1", seed=2),
        "xl": write_lora(folder, "xl", "sdxl", seed=3),
        "emb": write_lora(folder, "emb", "sd1", seed=4, embeddings={"lxtoken": 2}),
    }


@pytest.fixture
def webui(tmp_path, store):
    with sd1_webui(tmp_path, {name: store[name] for name in ("x", "y")}) as w:
        yield w


def sampled(webui, prompt, **kwargs):
    """(weights seen at the first sampling pass, Processed)."""
    seen = []
    processed, _ = webui.txt2img(
        prompt, sampling_probe=lambda p, name: seen.append(state(webui.model)), **kwargs
    )
    assert same_state(state(webui.model), webui.original) == []  # restored after every generation
    return seen[0], processed


@pytest.mark.parametrize(
    ("tag", "te", "unet"),
    [
        ("<lora:x:-1.5>", -1.5, -1.5),
        ("<lora:x:1:0.5>", 1.0, 0.5),
        ("<lora:x:unet=0.5>", 1.0, 0.5),
        ("<lora:x:0.3:te=0.9>", 0.9, 0.9),  # unet defaults to te AFTER the te= override
        ("<lyco:x:0.7>", 0.7, 0.7),
        ("<lora:x:0.6:mode=fast:stop=10>", 0.6, 0.6),  # unknown args ignored; 2 steps < stop
    ],
)
def test_weight_forms(webui, store, tag, te, unet):
    weights, _ = sampled(webui, f"a photo {tag}")
    assert same_state(weights, expected_state("sd1", [(store["x"], te, unet)])) == []


def test_te_zero_makes_unet_zero_too(webui):
    """``<lora:x:0.8:te=0>``: te=0 and unet defaults to te -> nothing changes at all."""
    weights, _ = sampled(webui, "a photo <lora:x:0.8:te=0>")
    assert same_state(weights, webui.original) == []


def test_same_lora_twice_sums(webui, store):
    weights, _ = sampled(webui, "a <lora:x:0.5> b <lora:x:0.25>")
    assert (
        same_state(weights, expected_state("sd1", [(store["x"], 0.5, 0.5), (store["x"], 0.25, 0.25)])) == []
    )


def test_unknown_name_message_with_suggestion_and_others_still_apply(webui, store):
    weights, processed = sampled(webui, "a photo <lora:xx:1> <lora:y:0.8>")
    assert "Lora not found: xx (did you mean 'x'?)" in processed.comments
    assert "Traceback" not in processed.comments
    assert same_state(weights, expected_state("sd1", [(store["y"], 0.8, 0.8)])) == []


def test_other_architecture_is_refused_with_a_message(webui, store):
    install(store["xl"], webui.lora_dir, "xl")
    weights, processed = sampled(webui, "a photo <lora:xl:1> <lora:y:1>")
    lines = [line for line in processed.comments.splitlines() if line.startswith("xl")]
    assert lines, processed.comments
    assert any("SDXL" in line for line in lines)
    assert same_state(weights, expected_state("sd1", [(store["y"], 1.0, 1.0)])) == []


def test_only_the_wrong_architecture_lora_means_nothing_applied(webui, store):
    install(store["xl"], webui.lora_dir, "xl")
    weights, processed = sampled(webui, "a photo <lora:xl:1>")
    assert same_state(weights, webui.original) == []
    assert "xl" in processed.comments


def test_a_refused_file_is_reported_once(webui, store):
    """The coverage line ("xl: refused: <reason>") already carries the reason: the same reason is not repeated on a
    second line under the file's path."""
    install(store["xl"], webui.lora_dir, "xl")
    _, processed = sampled(webui, "a photo <lora:xl:1>")
    lines = [line for line in processed.comments.splitlines() if "SDXL LoRA" in line]
    assert len(lines) == 1 and lines[0].startswith("xl: refused: "), processed.comments


def test_bad_weight_is_reported_and_does_not_disable_the_others(webui, store):
    weights, processed = sampled(webui, "a photo <lora:x:abc> <lora:y:1>")
    assert "<lora:x:abc>" in processed.comments
    assert same_state(weights, expected_state("sd1", [(store["y"], 1.0, 1.0)])) == []


def test_engine_error_on_one_file_does_not_disable_the_others(webui, store, monkeypatch):
    host = lora_host()
    real = host.loader.resolve

    def flaky(path, parts, name):
        if name == "x":
            raise ValueError("boom")
        return real(path, parts, name)

    monkeypatch.setattr(host.loader, "resolve", flaky)
    weights, processed = sampled(webui, "a photo <lora:x:1> <lora:y:1>")
    assert "x: could not be loaded (ValueError: boom)" in processed.comments
    assert same_state(weights, expected_state("sd1", [(store["y"], 1.0, 1.0)])) == []


def test_unmatched_keys_are_reported(webui, store):
    tensors = load_file(str(store["y"]))
    tensors["lora_unet_not_a_layer.lora_down.weight"] = tensors[next(iter(tensors))].clone()
    save_file(tensors, str(webui.lora_dir / "partial.safetensors"))
    _, processed = sampled(webui, "a photo <lora:partial:1>")
    assert any("1 of" in line and "keys unmatched" in line for line in processed.comments.splitlines())


def test_sd_lora_option_adds_the_network(webui, store):
    from modules import shared

    shared.opts.sd_lora = "y"
    weights, processed = sampled(webui, "a photo")
    assert same_state(weights, expected_state("sd1", [(store["y"], 1.0, 1.0)])) == []
    assert "<lora:y:1.0>" in processed.info


def test_bundled_embeddings_registered_only_while_active(webui, store):
    from modules import sd_hijack

    install(store["emb"], webui.lora_dir, "emb")
    db = sd_hijack.model_hijack.embedding_db
    during = []
    webui.txt2img(
        "a lxtoken <lora:emb:1>", sampling_probe=lambda p, n: during.append(set(db.word_embeddings))
    )
    assert "lxtoken" in during[0]
    assert "lxtoken" not in db.word_embeddings


def test_lora_hashes_accumulate_over_hires_and_batches(webui):
    processed, p = webui.txt2img(
        "a photo <lora:x:1>", enable_hr=True, hr_prompt="a photo <lora:y:1>", n_iter=2
    )
    value = p.extra_generation_params["Lora hashes"]
    assert value.startswith("x: ") and ", y: " in value
    assert 'Lora hashes: "x: ' in processed.info


def test_batch_uses_first_prompt_networks(webui, store):
    """§3.2: one batch uses the first prompt's tags, whatever the others say."""
    from modules import processing, scripts

    seen = []
    p = processing.StableDiffusionProcessingTxt2Img(
        prompt="",
        batch_size=2,
        scripts=scripts.scripts_txt2img,
        sampling_probe=lambda p, n: seen.append(state(webui.model)),
    )
    p.all_prompts = ["a <lora:y:1>", "b <lora:x:1>"]
    processing.process_images(p)
    assert same_state(seen[0], expected_state("sd1", [(store["y"], 1.0, 1.0)])) == []


def batch_p(webui, prompts, **kwargs):
    """A txt2img ``p`` whose ``all_prompts`` are ``prompts`` (one batch per ``batch_size`` of them)."""
    from modules import processing, scripts

    p = processing.StableDiffusionProcessingTxt2Img(prompt="", scripts=scripts.scripts_txt2img, **kwargs)
    p.all_prompts = list(prompts)
    return p


def test_batch_rule_is_said_once_under_the_image_when_a_batch_asks_for_other_loras(webui, capsys):
    """USERS S10: the webui gives every image of a batch the first prompt's LoRAs; prompts that ask for others get
    one line naming the prompt, its tags, the tags used and what to do, also with coverage lines kept out of the
    infotext, and once per generation (two batches, hires pass)."""
    from modules import processing, shared

    shared.opts.lora_ext_coverage_in_infotext = False
    p = batch_p(
        webui,
        ["a <lora:y:1>", "b <lora:x:-1:0.5>", "c <lora:y:1>", "d"],
        batch_size=2,
        n_iter=2,
        enable_hr=True,
    )
    processed = processing.process_images(p)
    lines = [line for line in processed.comments.splitlines() if "batch" in line]
    assert lines == [
        "LoRA batch rule: prompt 2 asks for <lora:x:-1:0.5>, but its batch uses <lora:y:1> from prompt 1 (1 more "
        "prompt differs too): every image of a batch gets the LoRAs of the batch's first "
        "prompt (as in the webui). To give each prompt its own LoRAs, set Batch size to 1 and raise Batch count."
    ]
    assert capsys.readouterr().out.count("LoRA batch rule") == 1
    # prompts that ask for the same LoRAs, in another order or other words, get no such line
    p = batch_p(
        webui, ["a <lora:y:1> <lora:x:0.5>", "b <lora:x:0.5> <lora:y:1>", "c", "d"], batch_size=2, n_iter=2
    )
    assert "batch rule" not in processing.process_images(p).comments
    assert "batch rule" not in capsys.readouterr().out


def test_coverage_lines_can_be_kept_out_of_the_infotext(webui, store, capsys):
    from modules import shared

    install(store["xl"], webui.lora_dir, "xl")
    shared.opts.lora_ext_coverage_in_infotext = False
    _, processed = sampled(webui, "a photo <lora:xl:1> <lora:nope:1>")
    assert "Lora not found: nope" in processed.comments
    assert not any(line.startswith("xl") for line in processed.comments.splitlines())
    assert "[lora_ext] xl" in capsys.readouterr().out


def test_sd_lora_option_with_hires_and_batches_adds_the_network_once(webui, store):
    """The hires pass's data never holds the added tag, so it is added again there; that must not write a second
    tag into the prompts (the next batch would then apply the LoRA twice, and the infotext would show it twice)."""
    from modules import shared

    shared.opts.sd_lora = "y"
    seen = []
    processed, p = webui.txt2img(
        "a photo",
        n_iter=2,
        enable_hr=True,
        sampling_probe=lambda p, name: seen.append((name, state(webui.model))),
    )
    expected = expected_state("sd1", [(store["y"], 1.0, 1.0)])
    assert [name for name, _ in seen] == ["first", "hires", "first", "hires"]
    for _, weights in seen:
        assert same_state(weights, expected) == []
    assert all(prompt.count("<lora:y:") == 1 for prompt in p.all_prompts), p.all_prompts
    assert processed.info.count("<lora:y:") == 1


def test_bundled_embeddings_come_back_after_the_webui_reloads_its_embeddings(webui, store):
    """The webui reloads its embedding folder at the start of a generation when it changed, clearing
    ``word_embeddings`` (§9.2); after a failed generation left the LoRA active, the same tag must register the
    bundled embedding again."""
    from modules import sd_hijack

    install(store["emb"], webui.lora_dir, "emb")
    db = sd_hijack.model_hijack.embedding_db

    def fail(p, name):
        raise RuntimeError("simulated failure inside sampling")

    with pytest.raises(RuntimeError):
        webui.txt2img("a lxtoken <lora:emb:1>", sampling_probe=fail)
    db.word_embeddings.clear()  # load_textual_inversion_embeddings() after the folder changed
    during = []
    webui.txt2img(
        "a lxtoken <lora:emb:1>", sampling_probe=lambda p, n: during.append(set(db.word_embeddings))
    )
    assert "lxtoken" in during[0]


def test_unregistering_bundled_embeddings_never_removes_a_folder_embedding(webui, store):
    import torch
    from modules import sd_hijack
    from modules.textual_inversion import textual_inversion

    install(store["emb"], webui.lora_dir, "emb")
    db = sd_hijack.model_hijack.embedding_db

    def reload_folder(p, name):  # the folder now has its own "lxtoken" (the webui reloaded it mid-way)
        folder = textual_inversion.create_embedding_from_data(
            {"string_to_param": {"*": torch.zeros(1, 32)}}, "x"
        )
        db.word_embeddings.clear()
        db.register_embedding_by_name(folder, webui.model, "lxtoken")

    webui.txt2img("a lxtoken <lora:emb:1>", sampling_probe=reload_folder)
    assert "lxtoken" in db.word_embeddings
    assert not getattr(db.word_embeddings["lxtoken"], "lora_ext_bundled", False)


def test_bundled_embedding_the_webui_rejects_is_a_message_not_a_lost_generation(webui, store):
    """A bundled embedding the webui cannot build (two unknown kinds: ``embedding file has multiple terms``) must
    not make the activation raise, which would drop every LoRA of the batch with a traceback (§3.4)."""
    from modules import errors

    tensors = load_file(str(store["emb"]))
    vector = next(v for k, v in tensors.items() if k.startswith("bundle_emb."))
    tensors["bundle_emb.badtok.first"] = vector.clone()
    tensors["bundle_emb.badtok.second"] = vector.clone()
    save_file(tensors, str(webui.lora_dir / "bad_emb.safetensors"))
    shown = []
    errors.display = lambda e, task, **kw: shown.append(task)
    weights, processed = sampled(webui, "a photo <lora:bad_emb:1> <lora:y:0.5>")
    assert shown == []
    expected = [
        (webui.lora_dir / "bad_emb.safetensors", 1.0, 1.0),
        (webui.lora_dir / "y.safetensors", 0.5, 0.5),
    ]
    assert same_state(weights, expected_state("sd1", expected)) == []  # both still applied
    assert any("badtok" in line for line in processed.comments.splitlines()), processed.comments


def test_batch_rule_line_compares_each_prompt_with_the_first_of_its_batch():
    from lora_ext.hosts.a1111.host import batch_rule_line

    assert batch_rule_line([], 2) is None
    assert batch_rule_line(["<lora:a:1>", "<lora:b:1>"], 1) is None  # one prompt per batch
    assert batch_rule_line(["<lora:a:1>", "<lora:a:1>", "<lora:b:1>"], 2) is None  # 3 leads batch 2
    assert batch_rule_line(["x", "y <lora:b:1>"], 2).startswith(
        "LoRA batch rule: prompt 2 asks for <lora:b:1>, but its batch uses no LoRA from prompt 1: "
    )
    assert batch_rule_line(["<lora:a:1:lbw=OUTD>", "<lora:a:1>"], 2) is not None  # block weights differ
    assert batch_rule_line(["<lora:a:1>", "<lyco:a:1.0>"], 2) is None  # the same request written otherwise
