"""Fake ``modules.processing`` (A1111_CONTRACT.md §8.2, §8.3, §8.4, §15).

``process_images`` reproduces the webui's call order for txt2img: scripts' ``before_process`` and ``process``;
per batch ``reload_model_weights`` → ``before_process_batch`` → ``parse_extra_network_prompts`` →
``extra_networks.activate`` INSIDE ``devices.autocast()`` → ``process_batch`` → ``setup_conds`` (cond cache keyed
like the webui's) → hijack comments into ``p.comment`` → sampling under autocast (hires: ``is_hr_pass``, activate
with ``hr_extra_network_data``, hires conds unless computed early, ``before_hr``, second sampling; in low-VRAM modes
``setup_conds`` computes the hires conds early, activating the hires data while ``is_hr_pass`` is False, then the
first-pass data again) → ``postprocess_batch``; after the loop
``extra_networks.deactivate`` ONLY IF extra networks are enabled and ``p.extra_network_data`` is truthy, then
``postprocess``. Like the webui there is NO ``finally`` around the loop: an exception in sampling skips
``deactivate`` and ``postprocess``.

The model is asked for ``get_learned_conditioning(prompts)`` (text encoders) and ``apply_model(x, t, cond)``
(UNet), the LatentDiffusion API the webui's samplers use, with fallbacks for the tiny A1111-shaped trees. Tests observe weights during
sampling through ``p.sampling_probe(p, pass_name)``, which may raise to simulate a failure. Each pass runs ``p.steps``
denoising steps (hires: ``p.hr_second_pass_steps`` or ``p.steps``), each one or two model calls (``denoise``) made like
the webui's ``CFGDenoiser.forward``: ``script_callbacks.cfg_denoiser_callback`` (§6) then a UNet forward.
"""

from __future__ import annotations

import torch

from modules import devices, extra_networks, infotext_utils, lowvram, script_callbacks, sd_models, shared
from modules.sd_hijack import model_hijack


class Processed:
    def __init__(self, p, images, infotexts):
        self.images = images
        self.infotexts = infotexts
        self.info = infotexts[0] if infotexts else ""
        self.comments = "".join(f"{c}\n" for c in p.comments)
        self.extra_generation_params = dict(p.extra_generation_params)


class StableDiffusionProcessing:
    cached_uc = [None, None]
    cached_c = [None, None]

    def __init__(
        self,
        prompt="",
        negative_prompt="",
        seed=0,
        n_iter=1,
        batch_size=1,
        steps=2,
        width=16,
        height=16,
        scripts=None,
        sampling_probe=None,
        disable_extra_networks=False,
        sampler_name="Euler",
    ):
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.seed = seed
        self.subseed = -1
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.steps = steps
        self.width = width
        self.height = height
        self.scripts = scripts
        self.script_args = ()
        self.sampling_probe = sampling_probe
        self.disable_extra_networks = disable_extra_networks
        self.sampler_name = sampler_name
        self.extra_generation_params = {}
        self.comments = {}
        self.iteration = 0
        self.is_hr_pass = False
        self.enable_hr = False
        self.extra_network_data = None
        self.hr_extra_network_data = None
        self.all_prompts = None
        self.all_negative_prompts = None
        self.all_seeds = None
        self.all_subseeds = None
        self.prompts = None
        self.negative_prompts = None
        self.seeds = None
        self.subseeds = None
        self.c = None
        self.uc = None
        self.sd_model = shared.sd_model
        self.outputs: list[torch.Tensor] = []

    def comment(self, text):
        """§8.4: stored into the dict ``p.comments``."""
        self.comments[text] = 1

    def setup_prompts(self):
        if self.all_prompts is None:
            self.all_prompts = [self.prompt] * (self.n_iter * self.batch_size)
        if self.all_negative_prompts is None:
            self.all_negative_prompts = [self.negative_prompt] * (self.n_iter * self.batch_size)
        self.all_seeds = [self.seed + i for i in range(len(self.all_prompts))]
        self.all_subseeds = [0] * len(self.all_prompts)

    def parse_extra_network_prompts(self):
        """§8.2 step 4.3: strips tags, sets ``extra_network_data`` from the FIRST prompt of the batch."""
        self.prompts, self.extra_network_data = extra_networks.parse_prompts(self.prompts)

    def cached_params(self, required_prompts, steps, extra_network_data, hires_steps=None):
        """§8.2 step 4.6: the cache key of the webui (prompts, steps, networks, checkpoint, options)."""
        return (
            required_prompts,
            steps,
            hires_steps,
            shared.opts.fp8_storage,
            shared.opts.cache_fp16_weight,
            repr(extra_network_data),
            id(shared.sd_model),
            self.width,
            self.height,
        )

    def get_conds_with_caching(
        self, function, required_prompts, steps, caches, extra_network_data, hires_steps=None
    ):
        caches = [self.cached_params(required_prompts, steps, extra_network_data, hires_steps), *caches]
        cached_params = caches[0]
        for cache in caches[1:]:
            if cache[0] is not None and cached_params == cache[0]:
                return cache[1]
        cache = caches[1]
        with devices.autocast():
            cache[1] = function(shared.sd_model, required_prompts, steps)
        cache[0] = cached_params
        return cache[1]

    def setup_conds(self):
        self.uc = self.get_conds_with_caching(
            encode, self.negative_prompts, self.steps, [self.cached_uc], self.extra_network_data
        )
        self.c = self.get_conds_with_caching(
            encode, self.prompts, self.steps, [self.cached_c], self.extra_network_data
        )

    def sample(self, conditioning, unconditional_conditioning, seeds):
        raise NotImplementedError


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    cached_hr_uc = [None, None]
    cached_hr_c = [None, None]

    def __init__(self, enable_hr=False, hr_prompt="", hr_second_pass_steps=0, **kwargs):
        super().__init__(**kwargs)
        self.enable_hr = enable_hr
        self.hr_prompt = hr_prompt
        self.hr_second_pass_steps = hr_second_pass_steps
        self.hr_c = None
        self.hr_uc = None
        self.all_hr_prompts = None
        self.hr_prompts = None

    def setup_prompts(self):
        super().setup_prompts()
        if self.enable_hr:
            hr = self.hr_prompt or None
            self.all_hr_prompts = [hr or x for x in self.all_prompts]
            # §11: the webui's ``init`` stores a per-image callable; the infotext gets "Hires prompt" only when it
            # differs from the image's prompt
            self.extra_generation_params["Hires prompt"] = get_hr_prompt

    def parse_extra_network_prompts(self):
        res = super().parse_extra_network_prompts()
        if self.enable_hr:
            b = self.iteration * self.batch_size
            self.hr_prompts = self.all_hr_prompts[b : b + self.batch_size]
            self.hr_prompts, self.hr_extra_network_data = extra_networks.parse_prompts(self.hr_prompts)
        return res

    def calculate_hr_conds(self):
        if self.hr_c is not None:
            return
        self.hr_uc = self.get_conds_with_caching(
            encode,
            self.negative_prompts,
            self.steps,
            [self.cached_hr_uc, self.cached_uc],
            self.hr_extra_network_data,
            self.steps,
        )
        self.hr_c = self.get_conds_with_caching(
            encode,
            self.hr_prompts,
            self.steps,
            [self.cached_hr_c, self.cached_c],
            self.hr_extra_network_data,
            self.steps,
        )

    def setup_conds(self):
        """§8.3: first-pass conds; in low-VRAM modes the hires conds right away, with the hires data activated
        OUTSIDE the hires pass (``is_hr_pass`` is False), then the first-pass data activated again."""
        super().setup_conds()
        self.hr_uc = None
        self.hr_c = None
        if self.enable_hr:
            if shared.opts.hires_fix_use_firstpass_conds:
                self.calculate_hr_conds()
            elif lowvram.is_enabled(shared.sd_model):
                with devices.autocast():
                    extra_networks.activate(self, self.hr_extra_network_data)
                self.calculate_hr_conds()
                with devices.autocast():
                    extra_networks.activate(self, self.extra_network_data)

    def sample(self, conditioning, unconditional_conditioning, seeds):
        """§8.3: first pass, then the hires pass with its own activation (hires conds computed only if not yet)."""
        x = denoise(self, conditioning, seeds, "first", uncond=unconditional_conditioning)
        if not self.enable_hr:
            return x
        self.is_hr_pass = True
        if not self.disable_extra_networks:
            with devices.autocast():
                extra_networks.activate(self, self.hr_extra_network_data)
        with devices.autocast():
            self.calculate_hr_conds()
        if self.scripts is not None:
            self.scripts.before_hr(self)
        x = denoise(self, self.hr_c, seeds, "hires", x, self.hr_second_pass_steps or self.steps, self.hr_uc)
        self.is_hr_pass = False
        return x


def get_hr_prompt(p, index, prompt_text, **kwargs):
    hr_prompt = p.all_hr_prompts[index]
    return hr_prompt if hr_prompt != prompt_text else None


def encode(sd_model, prompts, steps):
    """The text-encoder forward (``get_learned_conditioning``), run under autocast like the webui.

    Models without that method (the tiny A1111-shaped trees) are encoded the way ldm/sgm do it: SD1/SD2 call
    ``cond_stage_model(texts)``; SDXL concatenates the two embedders' hidden states (``crossattn``) and builds the
    ``vector`` from TE2's pooled projection plus zeros for the size/crop embedders.
    """
    if hasattr(sd_model, "get_learned_conditioning"):
        return sd_model.get_learned_conditioning(list(prompts))
    texts = list(prompts)
    with torch.no_grad():
        if not getattr(sd_model, "is_sdxl", False):
            return sd_model.cond_stage_model(texts).float()
        e = sd_model.conditioner.embedders
        crossattn = torch.cat([e[0](texts).float(), e[1](texts).float()], dim=-1)
        tower = e[1].wrapped
        ids = tower.tokenizer(
            texts,
            padding="max_length",
            max_length=tower.model.context_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        pooled = tower.model.pooled(ids).float()
        adm_in = sd_model.model.diffusion_model.label_emb[0][0].in_features
        vector = torch.cat([pooled, torch.zeros(len(texts), adm_in - pooled.shape[-1])], dim=-1)
        return {"crossattn": crossattn, "vector": vector}


def apply_model(sd_model, x, t, cond):
    """``sd_model.apply_model`` when present, else the DiffusionWrapper forward with ``context`` (and SDXL ``y``)."""
    if hasattr(sd_model, "apply_model"):
        return sd_model.apply_model(x, t, cond)
    if isinstance(cond, dict):
        return sd_model.model(x, t, context=cond["crossattn"], y=cond["vector"])
    return sd_model.model(x, t, context=cond)


#: Samplers whose steps call the model twice (the webui's ``second_order`` sampler option), but the last step once.
SECOND_ORDER = ("Heun", "DPM2")


class Denoiser:
    """What a webui ``CFGDenoiser`` exposes to ``on_cfg_denoiser`` callbacks as ``params.denoiser`` (v1.10.1):
    ``step`` = model calls made so far in this pass (incremented at the end of each call), ``steps`` = the pass's
    steps, ``total_steps`` = the calls expected (``SamplerData.total_steps``: twice the steps for second-order
    samplers)."""

    def __init__(self, steps: int, second_order: bool):
        self.step = 0
        self.steps = steps
        self.total_steps = steps * 2 if second_order else steps


def denoise(p, cond, seeds, pass_name, x=None, steps=None, uncond=None):
    """One tiny 'sampling' pass of ``steps`` (default ``p.steps``) denoising steps under autocast; the probe sees the
    live weights once, before the first step.

    Step counting as in the webui: ``launch_sampling`` sets ``state.sampling_steps`` to the steps and
    ``state.sampling_step`` to 0; every model call builds ``CFGDenoiserParams`` from those two and the denoiser; the
    sampler's ``callback_state`` sets ``state.sampling_step`` to the step index only AFTER the step's model calls, so
    the calls of step i (i ≥ 1) see i - 1. A step is two model calls with a ``SECOND_ORDER`` sampler (the last step
    one), each followed by the denoiser's ``step += 1``."""
    if p.sampling_probe is not None:
        p.sampling_probe(p, pass_name)
    if x is None:
        g = torch.Generator().manual_seed(int(seeds[0]))
        x = torch.randn((len(seeds), 4, 8, 8), generator=g)
    total = int(steps or p.steps)
    if isinstance(cond, dict):
        cond = {k: v[: x.shape[0]] for k, v in cond.items()}
    second_order = getattr(p, "sampler_name", "") in SECOND_ORDER
    denoiser = Denoiser(total, second_order)
    state = shared.state
    state.sampling_steps, state.sampling_step = total, 0
    for step in range(total):
        t = torch.full((x.shape[0],), 10 * (total - step), dtype=torch.long)
        for _ in range(2 if second_order and step < total - 1 else 1):
            params = script_callbacks.CFGDenoiserParams(
                x, None, t.float(), state.sampling_step, state.sampling_steps, cond, uncond, denoiser
            )
            script_callbacks.cfg_denoiser_callback(params)
            with torch.no_grad(), devices.autocast():
                x = apply_model(p.sd_model, params.x, t, cond).float()
            denoiser.step += 1
        state.sampling_step = step  # Sampler.callback_state, after the step
    return x


def process_images(p):
    """§8.2: ``before_process``, then the inner loop; the try/finally only restores settings."""
    if p.scripts is not None:
        p.scripts.before_process(p)
    try:
        res = process_images_inner(p)
    finally:
        pass  # the webui restores overridden settings here; nothing else
    return res


def process_images_inner(p):
    p.sd_model = shared.sd_model
    model_hijack.clear_comments()
    p.setup_prompts()
    if p.scripts is not None:
        p.scripts.process(p)
    infotexts = []
    output = []
    for n in range(p.n_iter):
        p.iteration = n
        if shared.state.interrupted:
            break
        sd_models.reload_model_weights()
        b = n * p.batch_size
        p.prompts = p.all_prompts[b : b + p.batch_size]
        p.negative_prompts = p.all_negative_prompts[b : b + p.batch_size]
        p.seeds = p.all_seeds[b : b + p.batch_size]
        p.subseeds = p.all_subseeds[b : b + p.batch_size]
        if p.scripts is not None:
            p.scripts.before_process_batch(
                p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds
            )
        p.parse_extra_network_prompts()
        if not p.disable_extra_networks:
            with devices.autocast():
                extra_networks.activate(p, p.extra_network_data)
        if p.scripts is not None:
            p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
        p.setup_conds()
        for comment in model_hijack.comments:
            p.comment(comment)
        with devices.autocast():
            samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds)
        if p.scripts is not None:
            p.scripts.postprocess_batch(p, samples, batch_number=n)
        output.append(samples)
        p.outputs.append(samples)
        for i in range(len(p.prompts)):
            infotexts.append(create_infotext(p, b + i))
    if not p.disable_extra_networks and p.extra_network_data:  # §8.2 step 5
        extra_networks.deactivate(p, p.extra_network_data)
    devices.torch_gc()
    res = Processed(p, output, infotexts)
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res


def create_infotext(p, index):
    """``processing.create_infotext``: callable values of ``extra_generation_params`` are called per image."""
    prompt_text = p.all_prompts[index]
    negative_prompt = p.all_negative_prompts[index]
    params = {"Steps": p.steps, "Seed": p.all_seeds[index], "Size": f"{p.width}x{p.height}"}
    for key, value in p.extra_generation_params.items():
        if callable(value):
            value = value(p=p, index=index, prompt_text=prompt_text, negative_prompt=negative_prompt)
        params[key] = value
    return infotext_utils.create_infotext(prompt_text, negative_prompt, params)
