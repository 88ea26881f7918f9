"""Tags on any diffusers pipeline: parse the prompt, resolve against a LoRA library, patch, run, restore.

Works with every pipeline that holds a ``UNet2DConditionModel`` and CLIP text encoders (SD1, SD2, SDXL, and custom
pipelines such as Riffusion-style ones, found through ``pipe.components``). The weights are restored from the
patcher's pristine backups when the call ends, also when the pipeline raises (USERS R1, R7).
This module imports no diffusers: it only reads attributes of the pipeline object it is given.

Step schedules (USERS G4, G6–G8): the pipeline is patched with the multipliers of the first step; when a UNet
multiplier changes over the steps, ``generate`` passes a ``StepFollower`` as ``callback_on_step_end`` (chained after
a caller's own callback), which patches step ``i + 1`` at the end of step ``i`` only when its multipliers differ.
The text encoder runs once, before the first step, with the first step's te weight.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lora_ext.activation import at_step, build_active_set, requested_loras, steps_vary
from lora_ext.adapters import ActiveLora
from lora_ext.engine import LoraLoader
from lora_ext.errors import Problem, is_problem
from lora_ext.keys.model_parts import ModelParts
from lora_ext.patcher import Patcher
from lora_ext.schedules import DEFAULT_TOTAL
from lora_ext.stepping import StepPatches
from lora_ext.syntax import parse_prompt

_UNET_CLASSES = ("UNet2DConditionModel",)
_TE_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")


def find_components(pipe: Any) -> dict[str, Any]:
    """``{"unet", "text_encoder", "text_encoder_2"}`` of a pipeline, by attribute name or, for custom pipelines
    that store them under other names, by class name in ``pipe.components`` (text encoders in registration order).
    """
    found = {name: getattr(pipe, name, None) for name in ("unet", "text_encoder", "text_encoder_2")}
    components = getattr(pipe, "components", None)
    if isinstance(components, dict):
        encoders = []
        for value in components.values():
            cls = type(value).__name__
            if found["unet"] is None and cls in _UNET_CLASSES:
                found["unet"] = value
            elif (
                cls in _TE_CLASSES
                and value is not found["text_encoder"]
                and value is not found["text_encoder_2"]
            ):
                encoders.append(value)
        for slot in ("text_encoder", "text_encoder_2"):
            if found[slot] is None and encoders:
                found[slot] = encoders.pop(0)
    return {k: v for k, v in found.items() if v is not None}


def detect_family(components: dict[str, Any]) -> str:
    """ "sdxl" with a second text encoder or SDXL's text-time embedding, "sd2" for a 1024-wide context or linear
    ``proj_in`` (SD2 UNets use linear projections, SD1 UNets 1x1 convs), else "sd1"."""
    config = getattr(components.get("unet"), "config", None)

    def get(key: str) -> Any:
        return config.get(key) if isinstance(config, dict) else getattr(config, key, None)

    if components.get("text_encoder_2") is not None or get("addition_embed_type") == "text_time":
        return "sdxl"
    if get("cross_attention_dim") == 1024 or get("use_linear_projection"):
        return "sd2"
    return "sd1"


@dataclass
class Applied:
    """What one ``DiffusersHost.applied`` block set up.

    prompt: the prompt with every ``<lora:…>``/``<lyco:…>`` tag removed (what the pipeline receives); a list when
        a batch of prompts was given.
    active: the LoRAs patched in, in tag order.
    problems: everything a user should see (unknown names, bad tags, unmatched keys, ...).
    reports: (tag name, coverage report) per active LoRA; reports have ``.summary()`` and ``.to_dict()``.
    """

    prompt: str | list[str]
    active: list[ActiveLora] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    reports: list[tuple[str, Any]] = field(default_factory=list)

    def info_lines(self) -> list[str]:
        """One line per LoRA coverage report, then one per problem (for consoles and the app's info box)."""
        lines = []
        for name, report in self.reports:
            summary = report.summary() if hasattr(report, "summary") else str(report)
            lines.append(summary if summary.startswith(name) else f"{name}: {summary}")
        lines += [f"{p.severity}: {p}" for p in self.problems]
        return lines


@dataclass
class Generation:
    """Result of ``DiffusersHost.generate``: the pipeline output's images plus what was applied."""

    images: list[Any]
    applied: Applied


class DiffusersHost:
    """LoRA tags for one diffusers pipeline.

    pipe: the pipeline (its UNet and text encoders are patched in place for the duration of a call).
    library: a ``lora_ext.library.LoraLibrary`` (anything with ``resolve(name)``) to look names up.
    loader: a ``LoraLoader`` (keeps parsed files cached between calls); patcher: the only owner of backups.
    family: "sd1" | "sd2" | "sdxl" to override detection.
    """

    def __init__(
        self,
        pipe: Any,
        library: Any,
        *,
        loader: LoraLoader | None = None,
        patcher: Patcher | None = None,
        family: str | None = None,
    ) -> None:
        self.pipe = pipe
        self.library = library
        components = find_components(pipe)
        self.parts = ModelParts.from_diffusers(components, family or detect_family(components))
        if self.parts.unet is None:
            raise ValueError("DiffusersHost needs a pipeline with a UNet2DConditionModel")
        self.loader = loader if loader is not None else LoraLoader(max_cached=8)
        self.patcher = patcher if patcher is not None else Patcher()
        # One patched call at a time: Gradio may run handlers in several threads.
        self._lock = threading.RLock()

    @property
    def architecture(self) -> str:
        """ "SD1", "SD2" or "SDXL" for the loaded pipeline."""
        return self.parts.architecture

    def lookup(self, name: str) -> tuple[Any | None, list[Problem]]:
        """Library entry for a tag name (or None) and the problems the lookup reported: which file a bare name
        shared by several folders uses, a match in another letter case, "Lora not found" (USERS S5, S6, S9).

        A name not found triggers one rescan of the library and a retry (files added since the last scan, or a
        library that was never scanned), as the webui does (A1111_CONTRACT §10.2).
        """
        find = getattr(self.library, "lookup", None) or self.library.resolve
        found = find(name)
        if _entry_of(found) is None and hasattr(self.library, "refresh"):
            self.library.refresh()
            found = find(name)
        entry = _entry_of(found)
        if is_problem(found):
            return None, [found]
        return entry, list(getattr(found, "problems", ())) if entry is not found else []

    def prepare(
        self,
        prompt: str | Sequence[str],
        *,
        hires: bool = False,
        seed: int | None = None,
        steps: int = DEFAULT_TOTAL,
    ) -> Applied:
        """Parse ``prompt`` and resolve its tags without touching any weight.

        prompt: one prompt, or a batch of prompts. As in the webui, a batch uses the LoRAs of its first prompt and
            every prompt loses its tags; other prompts asking for other LoRAs get a warning (USERS S10).
        hires: use the tags' hires-pass weights (``hr=``, ``hrte=``, ``hrunet=``). seed: seeds random block weights.
        steps: the pass's sampling steps; ``Applied.active`` holds the multipliers of its first step (schedules).
        """
        batch = [prompt] if isinstance(prompt, str) else list(prompt)
        if not batch or not all(isinstance(p, str) for p in batch):
            raise TypeError("prompt must be a string or a non-empty list of strings")
        parsed = parse_prompt(batch[0])
        others = [parse_prompt(p) for p in batch[1:]]
        found = build_active_set(
            parsed.requests,
            self.lookup,
            lambda entry, request: self.loader.resolve(entry.path, self.parts, request.name),
            self.parts.family,
            hires=hires,
            seed=seed,
        )
        clean = parsed.clean if isinstance(prompt, str) else [parsed.clean, *(o.clean for o in others)]
        applied = Applied(prompt=clean, problems=list(parsed.problems))
        differing = [
            i + 2
            for i, o in enumerate(others)
            if requested_loras(o.requests) != requested_loras(parsed.requests)
        ]
        if differing:
            applied.problems.append(
                Problem(
                    f"prompt {', '.join(map(str, differing))}",
                    "asks for other LoRAs than the first prompt, but one batch uses the LoRAs of its first "
                    "prompt (as in the webui); generate such prompts as separate batches.",
                    severity="warning",
                )
            )
        for name, problems in found.not_found:
            applied.problems += problems or [Problem(name, f"LoRA not found: {name}. Check the name.")]
        applied.problems += found.problems
        applied.active = at_step(found.active, 0, steps)
        applied.reports = list(found.reports)
        return applied

    @contextlib.contextmanager
    def applied(
        self,
        prompt: str | Sequence[str],
        *,
        hires: bool = False,
        seed: int | None = None,
        steps: int = DEFAULT_TOTAL,
    ) -> Iterator[Applied]:
        """Patch the LoRAs tagged in ``prompt`` (at the first step of a ``steps``-step pass) for the duration of the
        block; always restore afterwards.

        hires, seed, steps: as in ``prepare`` (a second, upscaling pass run by the caller uses ``hires=True``).
        """
        with self._lock:
            applied = self.prepare(prompt, hires=hires, seed=seed, steps=steps)
            try:
                offloaded = _offloaded_parts(self.parts) if applied.active else []
                if offloaded:
                    applied.problems.append(
                        Problem(
                            ", ".join(offloaded),
                            "the weights are not in the model (meta tensors: pipe.enable_sequential_cpu_offload() "
                            "keeps them in its own store and loads them per layer), so no LoRA was applied. Use "
                            "pipe.enable_model_cpu_offload() or no offload to use LoRA tags.",
                            "error",
                        )
                    )
                elif applied.active:
                    result = self.patcher.apply(applied.active)
                    applied.problems += list(getattr(result, "problems", ()))
                yield applied
            finally:
                # Model CPU offload (``enable_model_cpu_offload``) moves each model to the GPU and back during the
                # call: the parameters then hold moved copies of the patched values, and the originals are copied
                # into them. Freed memory stays with the allocator while LoRAs are in use (the next apply reuses
                # it); a call without LoRAs gives it back to the OS (USERS P5).
                moved = self.patcher.only_moved()
                applied.problems += self.patcher.restore(moved=moved, release_memory=not applied.active)

    def generate(self, prompt: str | Sequence[str], **kwargs: Any) -> Generation:
        """Run the pipeline with the LoRAs tagged in ``prompt``; extra keyword arguments go to the pipeline.

        prompt: one prompt or a batch (a batch uses the LoRAs of its first prompt, see ``prepare``). Tags in
        ``negative_prompt`` stay literal text, as in A1111 (CONTRACT §3.2, USERS S12), with a warning.
        """
        steps = pipeline_steps(self.pipe, kwargs)
        with self.applied(prompt, steps=steps) as applied:
            applied.problems += negative_tag_warnings(kwargs.get("negative_prompt"))
            kwargs = self._follow_steps(applied, steps, kwargs)
            output = self.pipe(prompt=applied.prompt, **kwargs)
        images = output.images if hasattr(output, "images") else output[0]
        return Generation(images=list(images), applied=applied)

    def _follow_steps(self, applied: Applied, steps: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with a ``StepFollower`` as ``callback_on_step_end`` when a multiplier changes over the steps
        (a caller's callback is chained, its tensor inputs kept); a warning when the pipeline takes no such callback.
        """
        if not steps_vary(applied.active):
            return kwargs
        if "callback_on_step_end" not in inspect.signature(self.pipe.__call__).parameters:
            applied.problems.append(
                Problem(
                    "step schedules",
                    "this pipeline has no callback_on_step_end, so the weights of the first step are used for "
                    "every step.",
                    severity="warning",
                )
            )
            return kwargs
        user = kwargs.get("callback_on_step_end")
        follower = StepFollower(self.patcher, applied, steps, user)
        out = {**kwargs, "callback_on_step_end": follower}
        if getattr(user, "tensor_inputs", None) and "callback_on_step_end_tensor_inputs" not in kwargs:
            out["callback_on_step_end_tensor_inputs"] = list(user.tensor_inputs)
        return out


class StepFollower:
    """``callback_on_step_end`` that keeps the patched multipliers on the sampling step (USERS G6, G8).

    At the end of loop iteration ``i`` it calls the caller's callback (which still sees iteration ``i``'s weights),
    then patches the multipliers of the step iteration ``i + 1`` belongs to (``scheduler_step``) when they differ
    from those patched last (``lora_ext.stepping.StepPatches``); the patcher's problems join ``applied.problems``.
    """

    def __init__(self, patcher: Patcher, applied: Applied, steps: int, user: Callable | None = None) -> None:
        self.applied = applied
        self.user = user
        self.patches = StepPatches(patcher, applied.active, steps)

    def __call__(self, pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        result = (
            callback_kwargs if self.user is None else self.user(pipe, step_index, timestep, callback_kwargs)
        )
        step, total = scheduler_step(pipe, step_index + 1)
        problems = self.patches.advance(step, total)
        self.applied.problems += [p for p in problems if p not in self.applied.problems]
        return result


def scheduler_step(pipe: Any, iteration: int) -> tuple[int, int | None]:
    """(step from 0, the pass's steps or None) of denoising-loop iteration ``iteration`` (from 0) of ``pipe``.

    A pipeline loops over ``pipe.num_timesteps`` timesteps; a scheduler of order 2 (Heun, KDPM2) visits each step's
    timestep twice (the last step once), so the loop's iteration i belongs to step i // order of
    ⌈num_timesteps / order⌉ steps, as the webui counts the steps of its Heun and DPM2 samplers.
    """
    order = getattr(getattr(pipe, "scheduler", None), "order", 1)
    order = order if isinstance(order, int) and order >= 1 else 1
    iterations = getattr(pipe, "num_timesteps", None)
    total = -(-iterations // order) if isinstance(iterations, int) and iterations > 0 else None
    return iteration // order, total


def _offloaded_parts(parts: ModelParts) -> list[str]:
    """The model parts with weights on the ``meta`` device (sequential CPU offload): nothing to patch there."""
    return [name for name, module in parts.modules().items() if any(p.is_meta for p in module.parameters())]


def pipeline_steps(pipe: Any, kwargs: dict[str, Any]) -> int:
    """The steps a pipeline call will sample: ``num_inference_steps`` from ``kwargs``, else the pipeline's own
    default, else ``DEFAULT_TOTAL``."""
    steps = kwargs.get("num_inference_steps")
    if steps is None:
        try:
            steps = inspect.signature(pipe.__call__).parameters["num_inference_steps"].default
        except (KeyError, TypeError, ValueError):
            steps = None
    return int(steps) if isinstance(steps, int) and steps >= 1 else DEFAULT_TOTAL


def negative_tag_warnings(negative: Any) -> list[Problem]:
    """One warning per LoRA tag in a negative prompt (a string or a list of them): it is not applied (USERS S12)."""
    texts = [negative] if isinstance(negative, str) else negative if isinstance(negative, list) else []
    tags = [r.tag for text in texts if isinstance(text, str) for r in parse_prompt(text).requests]
    return [
        Problem(
            tag,
            "LoRA tags in the negative prompt are not applied (as in the webui) and stay there as plain text; a "
            "LoRA changes the model for both prompts, so put its tag in the prompt.",
            severity="warning",
        )
        for tag in dict.fromkeys(tags)
    ]


def _entry_of(found: Any) -> Any | None:
    """The library entry in what ``lookup`` / ``resolve`` returned (a ``Resolution``, an entry or a Problem)."""
    if is_problem(found):
        return None
    if hasattr(found, "entry") and hasattr(found, "via"):  # a library Resolution
        return found.entry
    return found
