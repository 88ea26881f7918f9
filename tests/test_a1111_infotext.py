"""Infotext round trip through the fake webui (A1111_CONTRACT §11): generate -> ``Lora hashes`` -> paste with a
renamed local file remaps by hash; an ambiguous or unknown hash leaves the prompt as written with a note; AddNet
fields become tags unless the AddNet extension is active."""

from __future__ import annotations

import pytest
from fake_webui.harness import Webui, fake_modules
from fake_webui.lora_fixtures import install, write_lora


@pytest.fixture(scope="session")
def plain_lora(tmp_path_factory):
    """A LoRA without metadata: its name is its file name only, its hash is computed from the tensor bytes."""
    return write_lora(tmp_path_factory.mktemp("info_loras"), "orig", "sd1", seed=1, metadata=False)


@pytest.fixture
def webui(tmp_path):
    with fake_modules():
        w = Webui(tmp_path).start()
        w.load_model("sd1")
        try:
            yield w
        finally:
            w.stop()


def generate_infotext(webui, plain_lora) -> str:
    path = install(plain_lora, webui.lora_dir, "orig")
    processed, _ = webui.txt2img("a photo <lora:orig:0.7>, detailed")
    assert 'Lora hashes: "orig: ' in processed.info
    path.unlink()
    return processed.info


def test_paste_remaps_a_renamed_local_file_by_hash(webui, plain_lora):
    infotext = generate_infotext(webui, plain_lora)
    install(plain_lora, webui.lora_dir, "renamed")
    params = webui.paste(infotext)
    assert params["Prompt"] == "a photo <lora:renamed:0.7>, detailed"
    assert any("renamed" in note for note in params["lora_ext notes"])


def test_ambiguous_hash_leaves_prompt_unchanged_with_a_note(webui, plain_lora):
    infotext = generate_infotext(webui, plain_lora)
    install(plain_lora, webui.lora_dir, "copy_a")
    install(plain_lora, webui.lora_dir, "copy_b")
    params = webui.paste(infotext)
    assert params["Prompt"] == "a photo <lora:orig:0.7>, detailed"
    assert any("several" in note or "copy_a" in note for note in params["lora_ext notes"])


def test_unknown_hash_leaves_prompt_unchanged_with_a_note(webui, plain_lora):
    infotext = generate_infotext(webui, plain_lora)
    params = webui.paste(infotext)
    assert params["Prompt"] == "a photo <lora:orig:0.7>, detailed"
    assert any("no local" in note for note in params["lora_ext notes"])


def test_hash_of_the_same_local_file_keeps_the_prompt(webui, plain_lora):
    path = install(plain_lora, webui.lora_dir, "orig")
    processed, _ = webui.txt2img("a photo <lora:orig:0.7>")
    params = webui.paste(processed.info)
    assert params["Prompt"] == "a photo <lora:orig:0.7>"
    assert path.exists()


def test_addnet_fields_become_tags(webui):
    infotext = (
        "a cat\nSteps: 20, Seed: 1, Size: 512x512, AddNet Enabled: True, AddNet Module 1: LoRA, "
        "AddNet Model 1: style(0123abcd), AddNet Weight A 1: 0.6, AddNet Weight B 1: 0.6"
    )
    params = webui.paste(infotext)
    assert params["Prompt"] == "a cat\n<lora:style:0.6>"


def test_addnet_fields_left_alone_when_addnet_extension_is_active(webui):
    from modules import scripts

    scripts.scripts_txt2img.infotext_fields.append((object(), "AddNet Module 1"))
    infotext = (
        "a cat\nSteps: 20, Seed: 1, AddNet Module 1: LoRA, AddNet Model 1: style, AddNet Weight A 1: 0.6"
    )
    params = webui.paste(infotext)
    assert params["Prompt"] == "a cat"


def test_hires_prompt_is_remapped_too(webui, plain_lora):
    """USERS H2: a LoRA used only in the hires prompt is in ``Lora hashes``; pasting remaps it in the "Hires prompt"
    field as well, else the hires pass of the pasted image misses it."""
    path = install(plain_lora, webui.lora_dir, "orig")
    processed, _ = webui.txt2img("a photo", enable_hr=True, hr_prompt="a photo <lora:orig:0.4>")
    assert "Hires prompt" in processed.info and 'Lora hashes: "orig: ' in processed.info
    path.unlink()
    install(plain_lora, webui.lora_dir, "renamed")
    params = webui.paste(processed.info)
    assert params["Prompt"] == "a photo"
    assert params["Hires prompt"] == "a photo <lora:renamed:0.4>"


def test_same_file_name_in_two_folders_is_never_swapped_on_paste(webui, plain_lora, tmp_path):
    """``Lora hashes`` names carry no folder (USERS H3), so ``a/x`` and ``b/x`` share one entry holding one hash;
    pasting must not rename both tags to the file of that hash (a silent swap, CONTRACT §16)."""
    other = write_lora(tmp_path / "other", "other", "sd1", seed=2, metadata=False)
    install(plain_lora, webui.lora_dir / "a", "x")
    install(other, webui.lora_dir / "b", "x")
    processed, _ = webui.txt2img("a photo <lora:a/x:1> <lora:b/x:0.5>")
    params = webui.paste(processed.info)
    assert params["Prompt"] == "a photo <lora:a/x:1> <lora:b/x:0.5>"


def test_no_hashing_still_writes_hashes_already_known(webui, plain_lora):
    """§14 ``--no-hashing``: no file is read for a hash, but hashes already computed (cached) are still used, as the
    built-in does."""
    from modules import shared

    install(plain_lora, webui.lora_dir, "orig")
    install(plain_lora, webui.lora_dir, "never_hashed")
    first, _ = webui.txt2img("a photo <lora:orig:0.7>")
    shared.cmd_opts.no_hashing = True
    try:
        processed, _ = webui.txt2img("a photo <lora:orig:0.7> <lora:never_hashed:0.2>")
    finally:
        shared.cmd_opts.no_hashing = False
    written = first.extra_generation_params["Lora hashes"]
    assert (
        processed.extra_generation_params["Lora hashes"] == written
    )  # orig's cached hash; never_hashed none


def test_paste_reads_at_most_the_budget_of_never_hashed_files(webui, plain_lora, monkeypatch):
    """Paste runs for every parsed infotext (paste buttons, png-info): it must not hash a whole library. Over
    ``PASTE_HASH_BUDGET`` only known hashes are searched, the file the pasted name points at is still confirmed, and
    a note says how many files were not searched."""
    from fake_webui.harness import lora_host

    from lora_ext.hosts.a1111 import paste

    infotext = generate_infotext(webui, plain_lora)
    renamed = install(plain_lora, webui.lora_dir, "renamed")
    other = write_lora(webui.lora_dir.parent / "src", "other", "sd1", seed=3, metadata=False)
    install(other, webui.lora_dir, "unrelated")
    monkeypatch.setattr(paste, "PASTE_HASH_BUDGET", renamed.stat().st_size - 1)
    params = webui.paste(infotext)
    assert params["Prompt"] == "a photo <lora:orig:0.7>, detailed"  # renamed was not hashed, so not found
    assert any("2 LoRA files" in note and "not been hashed yet" in note for note in params["lora_ext notes"])
    library = lora_host().library
    assert all(library.known_hashes(e) is None for e in library.entries())

    # the pasted name points at a local file never hashed: that one file is read and confirms the name
    install(plain_lora, webui.lora_dir, "orig")
    params = webui.paste(infotext)
    assert params["Prompt"] == "a photo <lora:orig:0.7>, detailed"
    assert "lora_ext notes" not in params
    hashed = {e.name for e in library.entries() if library.known_hashes(e) is not None}
    assert hashed == {"orig"}

    # under the budget the whole library is searched again (USERS H7)
    (webui.lora_dir / "orig.safetensors").unlink()
    monkeypatch.setattr(paste, "PASTE_HASH_BUDGET", 2 * 1024**3)
    params = webui.paste(infotext)
    assert params["Prompt"] == "a photo <lora:renamed:0.7>, detailed"
