"""``A1111Host``: the extension's state inside the webui and the activation flow (A1111_CONTRACT.md §3.4, §8).

One object per process, created by ``wiring.setup()``. It owns the LoRA library, the loader (parsed-file LRU) and,
per loaded model object (weakly keyed, so a model dropped by the webui is forgotten), the engine's ``Patcher``.

Restore rules (§8.4): every ``activate`` call fully defines the active set, ``[]`` included; the end of a generation
(``postprocess`` / ``deactivate``), ``on_before_reload`` and ``on_script_unloaded`` restore eagerly; the next
activation restores any OTHER model still patched after an exception; ``on_model_loaded`` (weights loaded in place)
drops backups instead of restoring them, and so does an activation that finds the patched tensors were rewritten
in place behind the patcher's back. Tensors that were only moved between devices (low-VRAM modes, a model kept in
the webui's memory cache and sent to the CPU and back) hold moved copies, so the originals are copied into them.

Each activation goes through ``lora_ext.activation.build_active_set`` (``lbw=`` block weights; ``hr=``, ``hrte=``,
``hrunet=`` for the hires pass's data, ``hires_activation``), the same step the diffusers host uses.

Step schedules (USERS G4, G6–G8): an activation patches the multipliers of the pass's first step (the text encoder
runs once, right after). When some LoRA's UNet multiplier changes over the steps, the activation keeps a ``Stepping``
and ``on_step`` (the ``on_cfg_denoiser`` callback, A1111_CONTRACT §6, called before each denoising step with the
pass's ``sampling_step`` / ``total_sampling_steps``) hands the active set of that step to the patcher, only when the
multipliers differ from the step patched last; the patcher re-patches only the tensors whose contribution changed.
The hires pass's activation starts its own ``Stepping``, counting the hires steps from 0 (G3).
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lora_ext.activation import ActiveSet, at_step, build_active_set, requested_loras, steps_vary
from lora_ext.adapters import ActiveLora, ResolvedLora
from lora_ext.engine import LoraLoader
from lora_ext.errors import Problem
from lora_ext.hosts.a1111 import embeddings, messages
from lora_ext.hosts.a1111.model import parts_from_sd_model
from lora_ext.infotext import format_lora_hashes, infotext_name
from lora_ext.keys.model_parts import ModelParts
from lora_ext.patcher import Patcher
from lora_ext.schedules import DEFAULT_TOTAL
from lora_ext.stepping import StepPatches
from lora_ext.syntax import LoraRequest, parse_args, parse_prompt

NOT_SUPPORTED = "LoRA: the loaded model is not SD1, SD2 or SDXL; no LoRA was applied."


@dataclass
class ModelState:
    """Bookkeeping for one loaded model object.

    parts: its targetable modules. patcher: the only owner of its backups.
    embeddings: names of bundled embeddings this host registered for the current set.
    """

    parts: ModelParts
    patcher: Patcher
    embeddings: list[str] = field(default_factory=list)


@dataclass
class Activation:
    """What one ``activate`` call did (kept as ``host.last`` for the compat modules, the API and tests).

    active: (request, library entry, resolved LoRA) per applied LoRA, in tag order.
    messages: user-facing lines written to the generation info.
    signature: identity of the applied weights: (path, size, mtime_ns, te, unet, dyn, blocks) per LoRA.
    weights: the ``ActiveLora`` handed to the patcher per item of ``active`` (this pass's te/unet, block weights).
    """

    active: list[tuple[LoraRequest, Any, ResolvedLora]] = field(default_factory=list)
    weights: list[ActiveLora] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    signature: tuple = ()


@dataclass
class Stepping:
    """A pass whose LoRA multipliers follow the sampling steps: a weak reference to the model being sampled and the
    ``StepPatches`` that keep its patcher on the current step."""

    model: Any
    patches: StepPatches


class A1111Host:
    """The extension inside the webui. ``library_factory()`` builds the ``LoraLibrary`` on first use."""

    def __init__(self, library_factory, *, max_cached: int = 4, patch_strategy: str = "auto") -> None:
        self._library_factory = library_factory
        self._library = None
        self.loader = LoraLoader(max_cached=max_cached)
        self.patch_strategy = patch_strategy
        self._states: weakref.WeakKeyDictionary[Any, ModelState] = weakref.WeakKeyDictionary()
        # cond-cache guard: our params (repr) -> signature applied when the webui last cached conds for them
        self._cond_signatures: dict[str, tuple] = {}
        self.last = Activation()
        self.hooks: list = []  # callables(host) run after every activation (compat modules mirror state)
        self.last_image: Any = None  # the last generated PIL image, for the tab's "Replace preview"
        self.stepping: Stepping | None = None  # the pass being sampled, when its multipliers follow the steps

    # -- library --------------------------------------------------------------------------------------------------

    @property
    def library(self):
        if self._library is None:
            self._library = self._library_factory()
            self._library.refresh()
        return self._library

    def reset_library(self) -> None:
        """Build the library again on next use (an option it was made with changed, e.g. ``list_hidden_files``)."""
        self._library = None

    def refresh(self) -> None:
        """Rescan the LoRA folders (Extra Networks refresh button, ``POST /sdapi/v1/refresh-loras``)."""
        self.library.refresh()
        self._run_hooks()

    def lookup(self, name: str) -> tuple[Any | None, list[Problem]]:
        """Library entry for a tag name plus the notes of the lookup (duplicates, letter case), or (None, [the
        "Lora not found" Problem with suggestions]). Retries once after a rescan (new files, CONTRACT §10.2)."""
        library = self.library
        found = library.lookup(name)
        if found.entry is None:
            library.refresh()
            found = library.lookup(name)
        if found.entry is not None:
            return found.entry, list(found.problems)
        missing = library.resolve(name)
        return None, [missing] if isinstance(missing, Problem) else list(found.problems)

    # -- per-model state ------------------------------------------------------------------------------------------

    def set_patch_strategy(self, strategy: str) -> None:
        """Backup strategy for patches from now on ("auto", "swap" or "copy"); tensors already patched keep theirs."""
        self.patch_strategy = strategy
        for state in self._states.values():
            state.patcher.strategy = strategy

    def state_for(self, sd_model: Any) -> ModelState | None:
        state = self._states.get(sd_model)
        if state is None:
            parts = parts_from_sd_model(sd_model)
            if parts is None:
                return None
            state = ModelState(parts=parts, patcher=Patcher(strategy=self.patch_strategy))
            self._states[sd_model] = state
        return state

    def patched_models(self) -> list[Any]:
        return [m for m, s in list(self._states.items()) if s.patcher.is_patched]

    def restore(self, sd_model: Any) -> None:
        """Put back ``sd_model``'s pristine weights (or forget stale backups) and unregister bundled embeddings."""
        state = self._states.get(sd_model)
        if state is None:
            return
        if state.patcher.is_patched:
            moved = moved_only(sd_model, state.patcher)
            if moved or state.patcher.verify():
                for problem in state.patcher.restore(moved=moved):
                    messages.console(str(problem))
            else:
                state.patcher.drop_backups()
        embeddings.unregister(state, sd_model)

    def restore_all(self, release_memory: bool = False) -> None:
        """End of generation, UI reload, script unload: no weight of any model stays patched.

        release_memory: also give the memory the patches used back to the OS (UI reload, script unload). At the end
        of a generation it stays with the allocator for the next one; an activation without LoRAs gives it back.
        """
        self.stepping = None
        for sd_model in list(self._states.keys()):
            self.restore(sd_model)
        if release_memory:
            self._release_memory()
        self.last = Activation()
        self._run_hooks()

    def _release_memory(self) -> None:
        for state in list(self._states.values()):
            state.patcher.release_memory()

    def model_loaded(self, sd_model: Any) -> None:
        """``on_model_loaded``: new weights were loaded into these module objects; backups are stale."""
        state = self._states.get(sd_model)
        self.stepping = None
        if state is not None:
            state.patcher.drop_backups()
            state.embeddings.clear()
            del self._states[sd_model]
        self._cond_signatures.clear()
        self.loader.forget_models()  # parsed files stay valid; resolutions hold the old modules

    # -- activation -----------------------------------------------------------------------------------------------

    def activate(self, p: Any, params_list: Sequence[Any]) -> None:
        """The ``ExtraNetwork.activate`` body: make ``shared.sd_model`` hold exactly the LoRAs of ``params_list``."""
        from modules import shared

        sd_model = shared.sd_model
        state = self._prepare_model(sd_model)
        if state is None:
            if sd_model is not None and params_list:
                messages.deliver(p, [NOT_SUPPORTED])
            return
        params_list = list(params_list)
        hires = hires_activation(p, params_list)
        if not hires:
            self._say_batch_rule(p)
        self._add_default_network(p, params_list)
        requests: list[LoraRequest] = []
        bad: list[str] = []
        for params in params_list:
            request = parse_args(list(getattr(params, "items", params)), "lora")
            if isinstance(request, Problem):
                bad.append(str(request))
            else:
                requests.append(request)
        total = pass_steps(p, hires)
        activation, found = self._apply_requests(
            state, requests, hires=hires, seed=generation_seed(p), total=total
        )
        self.stepping = self._stepping_for(sd_model, state, activation, total)
        activation.messages[:0] = bad
        if found.not_found:
            names = [messages.not_found_name(name, problems) for name, problems in found.not_found]
            messages.not_found(p, names, activation.messages)
        self._guard_cond_cache(p, params_list, activation.signature, hires)
        activation.messages += embeddings.register(state, sd_model, [res for _, _, res in activation.active])
        self._write_hashes(p, activation, hires)
        messages.deliver(p, activation.messages)
        self.last = activation
        self._run_hooks()

    def load_networks(
        self,
        names: Sequence[str],
        te_multipliers: Sequence[float] | None = None,
        unet_multipliers: Sequence[float] | None = None,
        dyn_dims: Sequence[int | None] | None = None,
    ) -> None:
        """The built-in's ``networks.load_networks`` for extensions that call it (Regional Prompter, LoRA Block
        Weight): make ``shared.sd_model`` hold exactly these LoRAs (multipliers default to 1, as in the built-in).
        Messages go to the console; the end of the generation restores as usual."""
        from modules import shared

        sd_model = shared.sd_model
        state = self._prepare_model(sd_model)
        if state is None:
            if sd_model is not None and names:
                messages.console(NOT_SUPPORTED)
            return
        requests = []
        for i, name in enumerate(names):
            te = float(te_multipliers[i]) if te_multipliers else 1.0
            unet = float(unet_multipliers[i]) if unet_multipliers else 1.0
            dyn = dyn_dims[i] if dyn_dims else None
            requests.append(LoraRequest(name=name, te=te, unet=unet, dyn=dyn, tag=f"<lora:{name}>"))
        activation, found = self._apply_requests(state, requests)
        self.stepping = None
        if found.not_found:
            activation.messages.append(f"Lora not found: {', '.join(name for name, _ in found.not_found)}")
        activation.messages += embeddings.register(state, sd_model, [res for _, _, res in activation.active])
        for line in activation.messages:
            messages.console(line)
        self.last = activation
        self._run_hooks()

    def _prepare_model(self, sd_model: Any) -> ModelState | None:
        """Restore other patched models, make sure ``sd_model``'s backups are current; its state or None when no
        model is loaded or it is not SD1/SD2/SDXL."""
        if sd_model is None:
            return None
        for other in self.patched_models():
            if other is not sd_model:
                self.restore(other)  # left patched by a generation that raised, before a model switch
        state = self.state_for(sd_model)
        if state is None:
            return None
        if state.patcher.is_patched and not state.patcher.verify():
            if moved_only(sd_model, state.patcher):  # moved between devices: put the originals back
                for problem in state.patcher.restore(moved=True):
                    messages.console(str(problem))
            else:
                state.patcher.drop_backups()  # the tensors were reloaded behind our back: backups are stale
        return state

    def _apply_requests(
        self,
        state: ModelState,
        requests: list[LoraRequest],
        *,
        hires: bool = False,
        seed: int | None = None,
        total: int = DEFAULT_TOTAL,
    ) -> tuple[Activation, ActiveSet]:
        """Build the active set of ``requests`` and patch in its multipliers at the first step of a pass of ``total``
        steps; the Activation has messages and signature."""
        activation = Activation()
        found = build_active_set(
            requests,
            self.lookup,
            lambda entry, request: self.loader.resolve(entry.path, state.parts, request.name),
            state.parts.family,
            hires=hires,
            seed=seed,
            on_exception=lambda name, exc: messages.report_exception(f"lora_ext: loading {name}", exc),
        )
        activation.active = list(found.used)
        activation.messages += messages.activation_lines(found)

        started = time.perf_counter()
        found.active = at_step(found.active, 0, total)
        result = state.patcher.apply(found.active)
        # No LoRA in this generation: the memory earlier patches used is not needed now (USERS P5).
        if not found.active:
            self._release_memory()
        if result.changed and activation.active:  # the one-time patch cost, visible in the console (USERS P1)
            names = ", ".join(req.name for req, _, _ in activation.active)
            messages.console(
                f"applied {names}: {result.visited} tensors in {time.perf_counter() - started:.2f} s"
            )
        activation.messages += [str(problem) for problem in result.problems]
        activation.weights = list(found.active)
        if result.failed:
            activation.active = []
            activation.weights = []
        activation.signature = tuple(
            (entry.path, *_stat(entry.path), lora.te, lora.unet, lora.dyn, lora.blocks)
            for (_, entry, _), lora in zip(activation.active, activation.weights, strict=True)
        ) + (("failed",) if result.failed else ())
        return activation, found

    def _stepping_for(
        self, sd_model: Any, state: ModelState, activation: Activation, total: int
    ) -> Stepping | None:
        """The ``Stepping`` of this activation's pass, or None when no multiplier changes over its steps."""
        if not steps_vary(activation.weights):
            return None
        return Stepping(weakref.ref(sd_model), StepPatches(state.patcher, activation.weights, total))

    def on_step(self, params: Any) -> None:
        """``on_cfg_denoiser`` (A1111_CONTRACT §6), before each model call: patch the multipliers of the step being
        denoised (``denoising_step``) when they differ from those patched last. Nothing to do (one attribute read)
        when no scheduled LoRA is active."""
        stepping = self.stepping
        if stepping is None:
            return
        from modules import shared

        if shared.sd_model is not stepping.model():  # another model samples now (e.g. a refiner): not ours
            return
        step, total = denoising_step(params)
        for problem in stepping.patches.advance(step, total):
            messages.console(str(problem))
        if not stepping.patches.following:  # the patcher restored the model: stop following the steps
            self.stepping = None

    def remember_image(self, processed: Any) -> None:
        """Keep the first image of a finished generation (``Processed.images``) when it is a PIL image."""
        for image in getattr(processed, "images", None) or []:
            if hasattr(image, "save") and hasattr(image, "size"):
                self.last_image = image
                return

    def deactivate(self, p: Any) -> None:
        """``ExtraNetwork.deactivate``: only called when the last batch had tags, so restore is also elsewhere."""
        self.restore_all()

    # -- helpers --------------------------------------------------------------------------------------------------

    def _say_batch_rule(self, p: Any) -> None:
        """USERS S10: once per generation, when a batch's prompts ask for other LoRAs than its first prompt, say that
        the first prompt's LoRAs are used (the webui passes only the first prompt's tags, A1111_CONTRACT §3.2)."""
        if getattr(p, "lora_ext_batch_rule_checked", False):
            return
        p.lora_ext_batch_rule_checked = True
        line = batch_rule_line(list(getattr(p, "all_prompts", None) or []), getattr(p, "batch_size", 1))
        if line is not None:
            messages.notice(p, line)

    def _add_default_network(self, p: Any, params_list: list) -> None:
        """The ``sd_lora`` option ("Add network to prompt"), as the built-in does it (A1111_CONTRACT §3.5).

        The tag is written into each of ``p.all_prompts`` (for the infotext) only where that prompt does not already
        name the LoRA: the hires pass's data never holds it, and adding it again there made later batches apply the
        LoRA twice (the built-in's behaviour).
        """
        from modules import extra_networks, shared

        name = getattr(shared.opts, "sd_lora", "None")
        if not name or name == "None":
            return
        if any(list(getattr(x, "items", []))[:1] == [name] for x in params_list):
            return
        weight = shared.opts.extra_networks_default_multiplier
        if getattr(p, "all_prompts", None):
            p.all_prompts = [
                x if _names_lora(x, name) else x + f"<lora:{name}:{weight}>" for x in p.all_prompts
            ]
        params_list.append(extra_networks.ExtraNetworkParams(items=[name, weight]))

    def _guard_cond_cache(self, p: Any, params_list: list, signature: tuple, hires: bool) -> None:
        """Clear the webui's cond caches when the same tags now mean other weights (file replaced, failed patch, ...).

        The webui keys cached conds by the prompt's extra-network data; that is only safe while the same data always
        leads to the same weights (A1111_CONTRACT §8.2 step 6). Tags this host has not applied before clear the
        caches too: the webui's caches outlive a UI reload, which loads a new host that cannot vouch for them.
        """
        key = repr([list(getattr(x, "items", x)) for x in params_list]) + ("|hr" if hires else "")
        previous = self._cond_signatures.get(key)
        self._cond_signatures[key] = signature
        if previous == signature:
            return
        for attr in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):
            cache = getattr(p, attr, None)
            if isinstance(cache, list) and len(cache) == 2:
                cache[0] = None
                cache[1] = None

    def _write_hashes(self, p: Any, activation: Activation, hires: bool) -> None:
        """``Lora hashes`` infotext, reset on first-pass activations and accumulated over hires (§11)."""
        from modules import shared

        if not getattr(shared.opts, "lora_add_hashes_to_infotext", True):
            return
        if not hires or not isinstance(getattr(p, "lora_hashes", None), dict):
            p.lora_hashes = {}  # a dict like the built-in's: written name -> short hash
        for request, entry, _ in activation.active:
            shorthash = self.shorthash(entry)
            if shorthash:
                p.lora_hashes.setdefault(infotext_name(request.name), shorthash)
        value = format_lora_hashes(list(p.lora_hashes.items()))
        if value:
            p.extra_generation_params["Lora hashes"] = value
        else:
            p.extra_generation_params.pop("Lora hashes", None)

    def shorthash(self, entry: Any) -> str | None:
        """The entry's 12-hex short hash, or None (unreadable file; ``--no-hashing`` and no embedded or already
        computed hash)."""
        from modules import shared

        embedded = getattr(entry, "sshs_model_hash", None)
        if embedded:
            return embedded[:12]
        hashes = self.library.hashes(entry, compute=not getattr(shared.cmd_opts, "no_hashing", False))
        return None if isinstance(hashes, Problem) else getattr(hashes, "shorthash", None)

    def inspect(self, entry: Any) -> dict[str, Any]:
        """See ``inspect_entry``."""
        return inspect_entry(self, entry)

    def _run_hooks(self) -> None:
        for hook in list(self.hooks):
            hook(self)


def moved_only(sd_model: Any, patcher: Patcher) -> bool:
    """True when the patched tensors that were replaced hold moved copies of ours, not reloaded weights; restoring
    then copies the originals into them (``Patcher.restore(moved=True)``). The webui moves modules between devices
    in low-VRAM modes (``--lowvram`` / ``--medvram``: ``sd_model.lowvram``) and when it switches checkpoints with
    more than one kept in memory (``sd_checkpoints_keep_in_cpu``: to the CPU and back, no ``model_loaded``, e.g. a
    refiner or hires checkpoint during a generation); a reload writes in place instead (``Patcher.only_moved``)."""
    return bool(getattr(sd_model, "lowvram", False)) or patcher.only_moved()


def hires_activation(p: Any, params_list: Sequence[Any]) -> bool:
    """True for an activation of the hires pass's data: in the hires pass (``p.is_hr_pass``), and when the webui
    activates ``p.hr_extra_network_data`` early to compute the hires conds (``--lowvram``/``--medvram``,
    A1111_CONTRACT §8.3), where ``is_hr_pass`` is still False. The hires data is parsed from the hires prompts on
    its own, so its params are other objects than the first pass's even for the same prompt."""
    if getattr(p, "is_hr_pass", False):
        return True
    hires_data = getattr(p, "hr_extra_network_data", None)
    if not params_list or not hires_data:
        return False
    ours = {id(params) for values in hires_data.values() for params in values}
    return all(id(params) in ours for params in params_list)


def pass_steps(p: Any, hires: bool) -> int:
    """The sampling steps of the pass an activation is for: ``p.steps``; in the hires pass
    ``p.hr_second_pass_steps`` when set (the webui's "Hires steps", 0 = same as the first pass)."""
    steps = getattr(p, "hr_second_pass_steps", 0) if hires else 0
    steps = steps or getattr(p, "steps", 0)
    return int(steps) if isinstance(steps, (int, float)) and steps >= 1 else DEFAULT_TOTAL


def generation_seed(p: Any) -> int | None:
    """The seed of the batch being generated (seeds random block weights ``R``/``U``), or None."""
    for attr in ("seeds", "all_seeds"):
        seeds = getattr(p, attr, None)
        if seeds:
            return int(seeds[0])
    seed = getattr(p, "seed", None)
    return int(seed) if isinstance(seed, (int, float)) else None


def batch_rule_line(prompts: list[str], batch_size: Any) -> str | None:
    """The message for prompts that ask for other LoRAs than the first prompt of their batch (``batch_size``
    prompts per batch, in order), or None when every batch's prompts agree. Names the first such prompt's tags and
    the tags its batch uses, counts the others, and says how to give each prompt its own LoRAs."""
    size = batch_size if isinstance(batch_size, int) and batch_size > 0 else 1
    wanted = [_wanted(prompt) for prompt in prompts]
    differing = [i for i in range(len(prompts)) if i % size and wanted[i][0] != wanted[i - i % size][0]]
    if not differing:
        return None
    first = differing[0]
    lead = first - first % size
    more = len(differing) - 1
    others = f" ({more} more prompt{'s differ' if more > 1 else ' differs'} too)" if more else ""
    return (
        f"LoRA batch rule: prompt {first + 1} asks for {wanted[first][1] or 'no LoRA'}, but its batch uses "
        f"{wanted[lead][1] or 'no LoRA'} from prompt {lead + 1}{others}: every image of a batch gets the LoRAs of "
        "the batch's first prompt (as in the webui). To give each prompt its own LoRAs, set Batch size to 1 and "
        "raise Batch count."
    )


def _wanted(prompt: str) -> tuple[tuple[str, ...], str]:
    """(what the prompt's tags ask for, in an order-free comparable form; the tags as written)."""
    requests = parse_prompt(prompt).requests
    return requested_loras(requests), " ".join(r.tag for r in requests)


def _names_lora(prompt: str, name: str) -> bool:
    """True when ``prompt`` has a ``<lora:…>``/``<lyco:…>`` tag naming ``name``."""
    return any(request.name == name for request in parse_prompt(prompt).requests)


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


def inspect_entry(host: A1111Host, entry: Any, name: str | None = None) -> dict[str, Any]:
    """Coverage report against the loaded model plus metadata, as plain JSON-ready data (API and tab)."""
    from modules import shared

    out: dict[str, Any] = {
        "name": entry.name,
        "alias": entry.alias,
        "path": entry.path,
        "sd_version": entry.arch,
        "metadata": entry.metadata,
        "user_metadata": entry.user_metadata,
        "shorthash": entry.sshs_model_hash[:12] if entry.sshs_model_hash else None,
        "coverage": None,
        "summary": None,
        "problems": [p.message for p in entry.problems],
    }
    sd_model = shared.sd_model
    state = host.state_for(sd_model) if sd_model is not None else None
    if state is None:
        out["problems"].append("No SD1/SD2/SDXL model is loaded; coverage is unknown.")
        return out
    resolved = host.loader.resolve(entry.path, state.parts, name or entry.name)
    if isinstance(resolved, Problem):
        out["problems"].append(resolved.message)
        return out
    if resolved.report is not None:
        out["coverage"] = resolved.report.to_dict()
        out["summary"] = resolved.report.summary()
    out["problems"] += [p.message for p in resolved.problems]
    return out


def denoising_step(params: Any) -> tuple[int, int | None]:
    """(step index from 0, the pass's steps or None) of the model call that ``CFGDenoiserParams`` describes.

    The webui's ``params.sampling_step`` lags: its sampler sets that counter after each step, so both the first and
    the second step read 0, and step i reads i - 1. The denoiser (``params.denoiser``, v1.6 and later) counts its
    model calls instead (``step``, from 0 in each pass) against the calls it expects (``total_steps``: twice the
    steps for second-order samplers such as Heun), which gives the step being denoised for every sampler. Without a
    denoiser (older webuis, other callers) the lagging counter is the best there is.
    """
    total = int(getattr(params, "total_sampling_steps", 0) or 0) or None
    denoiser = getattr(params, "denoiser", None)
    calls, expected = getattr(denoiser, "step", None), getattr(denoiser, "total_steps", None)
    if total and isinstance(calls, int) and isinstance(expected, int) and expected > 0:
        return min(total - 1, calls * total // expected), total
    return int(getattr(params, "sampling_step", 0) or 0), total
