"""DiffusersHost: tags on a diffusers pipeline are patched, run and restored bit for bit (issue 6 acceptance).

LoRA files are written by diffusers + peft (``save_lora_weights``) for the tiny SD1 pipeline at test time.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from lora_ext.adapters import ActiveLora
from lora_ext.engine import LoraLoader
from lora_ext.hosts.diffusers_host import DiffusersHost, find_components
from lora_ext.keys.model_parts import ModelParts
from lora_ext.library import LoraLibrary
from lora_ext.patcher import Patcher
from tests.browser_helpers import write_peft_lora

GEN = dict(height=64, width=64, num_inference_steps=2)


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    write_peft_lora(folder, "style", seed=1)
    return folder


def state(pipe) -> dict[str, torch.Tensor]:
    parts = ModelParts.from_diffusers(find_components(pipe))
    return {
        f"{c}.{k}": v.detach().clone() for c, m in parts.modules().items() for k, v in m.state_dict().items()
    }


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not bad, bad[:5]


def image_bytes(images) -> bytes:
    return images[0].tobytes()


def host_for(pipe, lora_dir, strategy: str = "auto") -> DiffusersHost:
    library = LoraLibrary([str(lora_dir)])
    library.refresh()
    return DiffusersHost(pipe, library, patcher=Patcher(strategy))


@contextlib.contextmanager
def moved_around_each_forward(*modules):
    """What ``enable_model_cpu_offload`` does to a model around its forward (to the GPU and back): every parameter
    gets a copy of its values in new storage (``param.data = clone``; same values, version counter untouched)."""

    def move_there_and_back(module, args):
        for param in module.parameters():
            param.data = param.data.clone()

    hooks = [m.register_forward_pre_hook(move_there_and_back) for m in modules]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def test_tagged_generation_equals_engine_patched_pipeline_and_restores(sd1_pipe, make_pipeline, lora_dir):
    host = host_for(sd1_pipe, lora_dir)
    original = state(sd1_pipe)
    gen = host.generate("a cat <lora:style:0.7:0.4>", generator=torch.Generator().manual_seed(3), **GEN)
    assert_bit_identical(state(sd1_pipe), original)
    assert [p for p in gen.applied.problems if p.severity == "error"] == []
    assert gen.applied.reports and "style" in gen.applied.info_lines()[0]

    # reference: a second pipeline patched by the engine directly, run with the clean prompt
    ref = make_pipeline("sd1", 0)
    parts = ModelParts.from_diffusers(ref)
    resolved = LoraLoader().resolve(str(lora_dir / "style.safetensors"), parts, "style")
    patcher = Patcher()
    patcher.apply([ActiveLora(resolved, te=0.7, unet=0.4)])
    expected = ref(prompt=gen.applied.prompt, generator=torch.Generator().manual_seed(3), **GEN).images
    patcher.restore()
    assert image_bytes(gen.images) == image_bytes(expected)

    plain = host.generate("a cat", generator=torch.Generator().manual_seed(3), **GEN)
    assert image_bytes(plain.images) != image_bytes(gen.images)


@pytest.mark.parametrize("strategy", ["swap", "copy"])
def test_weights_moved_during_the_call_are_restored(sd1_pipe, lora_dir, strategy):
    """``enable_model_cpu_offload`` moves each model to the GPU before its forward and back after it: every
    parameter then holds a copy of the patched values in new storage (simulated here by ``param.data = clone``). The
    originals must still come back, bit for bit, with no "replaced or reloaded" warning."""
    host = host_for(sd1_pipe, lora_dir, strategy)
    original = state(sd1_pipe)
    with moved_around_each_forward(sd1_pipe.unet, sd1_pipe.text_encoder):
        gen = host.generate("a cat <lora:style:0.7:0.4>", generator=torch.Generator().manual_seed(3), **GEN)
    assert_bit_identical(state(sd1_pipe), original)
    assert [p for p in gen.applied.problems if p.severity != "info"] == []
    assert not host.patcher.is_patched and host.patcher.held_bytes() == 0


def test_sequential_cpu_offload_is_refused_with_a_message(make_pipeline, lora_dir):
    """``enable_sequential_cpu_offload`` leaves meta tensors in the model and loads the real weights per layer from
    its own store: a patch there would change nothing the pipeline uses, so the host says so instead of applying."""
    pipe = make_pipeline("sd1", 0)
    pipe.unet.to("meta")
    host = host_for(pipe, lora_dir)
    with host.applied("a cat <lora:style:1>") as applied:
        assert not host.patcher.is_patched
    errors = [p for p in applied.problems if p.severity == "error"]
    assert len(errors) == 1 and errors[0].subject == "unet"
    assert "enable_model_cpu_offload" in errors[0].message
    assert applied.prompt.strip() == "a cat"  # the tag is still taken out of the prompt


def test_restore_when_the_pipeline_raises_mid_run(sd1_pipe, lora_dir):
    host = host_for(sd1_pipe, lora_dir)
    original = state(sd1_pipe)
    seen = {}

    def boom(pipe, step, timestep, kwargs):
        seen["patched"] = any(
            not torch.equal(v, original[f"unet.{k}"]) for k, v in pipe.unet.state_dict().items()
        )
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        host.generate("a cat <lora:style:1>", callback_on_step_end=boom, **GEN)
    assert seen["patched"]  # the LoRA really was in the weights while the pipeline ran
    assert_bit_identical(state(sd1_pipe), original)
    assert not host.patcher.is_patched


def test_unknown_name_is_a_problem_and_nothing_is_patched(sd1_pipe, lora_dir):
    host = host_for(sd1_pipe, lora_dir)
    gen = host.generate("a cat <lora:nope:1>", generator=torch.Generator().manual_seed(0), **GEN)
    plain = host.generate("a cat", generator=torch.Generator().manual_seed(0), **GEN)
    assert any("nope" in str(p) for p in gen.applied.problems)
    assert gen.applied.active == []
    assert image_bytes(gen.images) == image_bytes(plain.images)


def test_a_library_never_scanned_or_missing_new_files_is_rescanned_once_on_a_miss(
    sd1_pipe, lora_dir, tmp_path
):
    """The README's three lines (library, host, generate) work without an explicit refresh, and a file added after
    the last scan is found, as in the webui (A1111_CONTRACT §10.2)."""
    import shutil

    folder = tmp_path / "loras"
    folder.mkdir()
    host = DiffusersHost(sd1_pipe, LoraLibrary([str(folder)], cache_path=False))
    assert host.lookup("style")[0] is None  # nothing there yet: still a clean "not found"
    shutil.copy(lora_dir / "style.safetensors", folder / "style.safetensors")
    gen = host.generate("a cat <lora:style:1>", generator=torch.Generator().manual_seed(0), **GEN)
    assert [str(p) for p in gen.applied.problems if p.severity == "error"] == []
    assert len(gen.applied.active) == 1


class RiffusionLike:
    """A custom pipeline that keeps its parts under other names (only ``components`` says what they are)."""

    def __init__(self, pipe):
        self.components = {"denoiser": pipe.unet, "clip": pipe.text_encoder, "vae": pipe.vae}
        self.inner = pipe

    def __call__(self, prompt, **kw):
        return self.inner(prompt=prompt, **kw)


def test_custom_pipeline_found_by_component_class(sd1_pipe, lora_dir):
    custom = RiffusionLike(sd1_pipe)
    found = find_components(custom)
    assert found["unet"] is sd1_pipe.unet and found["text_encoder"] is sd1_pipe.text_encoder
    host = host_for(custom, lora_dir)
    original = state(sd1_pipe)
    with host.applied("x <lora:style:1>") as applied:
        assert applied.active
        assert not torch.equal(
            sd1_pipe.unet.state_dict()[
                next(k for k in original if "to_q" in k and k.startswith("unet."))[5:]
            ],
            original[next(k for k in original if "to_q" in k and k.startswith("unet."))],
        )
    assert_bit_identical(state(sd1_pipe), original)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_other_families_patch_run_and_restore(family, make_pipeline, tmp_path):
    from lora_ext.demo import write_demo_loras

    pipe = make_pipeline(family, 0)
    write_demo_loras(tmp_path, pipe)
    host = host_for(pipe, tmp_path)
    assert host.architecture == family.upper()
    original = state(pipe)
    tagged = host.generate("a cat <lora:demo_style:1>", generator=torch.Generator().manual_seed(0), **GEN)
    assert_bit_identical(state(pipe), original)
    assert tagged.applied.active and not [p for p in tagged.applied.problems if p.severity == "error"]
    plain = host.generate("a cat", generator=torch.Generator().manual_seed(0), **GEN)
    assert image_bytes(tagged.images) != image_bytes(plain.images)


def test_memory_is_kept_while_loras_are_used_and_given_back_by_a_call_without(
    sd1_pipe, lora_dir, monkeypatch
):
    import lora_ext.patcher as patcher_module

    calls: list[int] = []
    monkeypatch.setattr(patcher_module, "release_freed_memory", lambda: calls.append(1) or True)
    host = host_for(sd1_pipe, lora_dir)
    with host.applied("a cat"):
        pass
    assert calls == []  # nothing was patched yet
    for prompt in ("a cat <lora:style:1>", "a cat <lora:style:0.4>"):
        with host.applied(prompt) as applied:
            assert applied.active and host.patcher.is_patched
    assert calls == [] and not host.patcher.is_patched
    with host.applied("a cat"):
        pass
    assert calls == [1]
    with host.applied("a dog"):
        pass
    assert calls == [1]


def test_lookup_notes_reach_the_user(sd1_pipe, tmp_path):
    """S5, S6: a bare name shared by two folders, or a name that matches only in another letter case, still
    applies, and the host says which file it used (the library's warning), as the webui host does."""
    for folder, seed in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        write_peft_lora(tmp_path / folder, "style", seed=seed)
    host = DiffusersHost(sd1_pipe, LoraLibrary([str(tmp_path)], cache_path=False))
    applied = host.prepare("x <lora:style:1>")
    assert len(applied.active) == 1
    warnings = [str(p) for p in applied.problems if p.severity == "warning"]
    assert any("a/style" in w and "b/style" in w for w in warnings), applied.problems
    applied = host.prepare("x <lora:A/STYLE:1>")
    assert len(applied.active) == 1
    assert any("letter case" in str(p) for p in applied.problems), applied.problems
    assert host.prepare("x <lora:b/style:1>").problems == []


def test_a_batch_of_prompts_uses_the_loras_of_the_first_and_says_so(sd1_pipe, lora_dir):
    """S10: as in the webui, one batch uses the LoRAs of its first prompt; the tags are stripped from every prompt,
    and a user whose other prompts ask for other LoRAs is told to run them as separate batches."""
    host = host_for(sd1_pipe, lora_dir)
    original = state(sd1_pipe)
    gen = host.generate(
        ["a cat <lora:style:0.7>", "a dog <lora:style:0.2>"],
        generator=torch.Generator().manual_seed(3),
        **GEN,
    )
    assert gen.applied.prompt == ["a cat ", "a dog "]
    assert len(gen.images) == 2 and [a.te for a in gen.applied.active] == [0.7]
    assert any("first prompt" in str(p) and p.severity == "warning" for p in gen.applied.problems)
    assert_bit_identical(state(sd1_pipe), original)
    same = host.prepare(["a <lora:style:0.7>", "b <lora:style:0.7>", "c <lora:style:0.7>"])
    assert same.prompt == ["a ", "b ", "c "] and same.problems == []


def test_tags_in_the_negative_prompt_stay_text_and_the_user_is_told(sd1_pipe, lora_dir):
    """S12: as in the webui, a LoRA tag in the negative prompt is not applied; it reaches the text encoder as
    typed, and a warning says so instead of the user assuming a negative-only LoRA works."""
    host = host_for(sd1_pipe, lora_dir)
    seen = {}
    real = sd1_pipe.__class__.__call__

    def spy(pipe, *args, **kwargs):
        seen.update(kwargs)
        return real(pipe, *args, **kwargs)

    sd1_pipe.__class__ = type("Spy", (sd1_pipe.__class__,), {"__call__": spy})
    gen = host.generate("a cat", negative_prompt="blurry <lora:style:1>", **GEN)
    assert seen["negative_prompt"] == "blurry <lora:style:1>"
    assert gen.applied.active == []
    warnings = [p for p in gen.applied.problems if p.severity == "warning"]
    assert len(warnings) == 1 and "negative prompt" in warnings[0].message, gen.applied.problems
    assert warnings[0].subject == "<lora:style:1>"
    assert host.generate("a cat", negative_prompt="blurry", **GEN).applied.problems == []
