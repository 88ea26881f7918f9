"""A1111-style model trees at toy sizes (A1111_CONTRACT.md §9.1, FORMATS.md §7–8), weight-compatible with lora_ext.demo.

``a1111_model(family)`` returns an ``nn.Module`` shaped like A1111's ``shared.sd_model`` after the hijack:

- UNet at ``.model.diffusion_model``: the compvis/SGM ``UNetModel`` of ``ldm`` (stable-diffusion-sdkit), runnable.
- sd1: ``.cond_stage_model.wrapped.transformer`` = HF ``CLIPTextModel``.
- sd2: ``.cond_stage_model.wrapped.model`` = an OpenCLIP-shaped text tower (``transformer.resblocks.{i}.attn`` is a
  batch-first ``nn.MultiheadAttention`` with fused q/k/v ``in_proj_weight``).
- sdxl: ``.conditioner.embedders[0].wrapped.transformer`` (HF CLIP), ``.conditioner.embedders[1].wrapped.model``
  (OpenCLIP-shaped, with ``text_projection``), ``embedders[2:]`` size/crop conditioners without ``wrapped``;
  ``.cond_stage_model`` is the conditioner itself, as after A1111's SDXL hijack.
- flags ``is_sd1``, ``is_sd2``, ``is_sdxl``, ``is_ssd``, ``is_sd3``; ``lowvram``; ``tiny_family``.

By default the weights are those of the diffusers tiny models of the same family and seed, moved over with the
name maps below, which are written here from FORMATS.md §7–8 independently of ``lora_ext.keys``. Every call
returns a fresh model, safe to patch.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
from torch import nn

from lora_ext.demo.tiny import (
    HEAD_CHANNELS,
    MAX_TOKENS,
    family_spec,
    tiny_text_encoders,
    tiny_tokenizer,
    tiny_unet,
)

LAYERS_PER_BLOCK = 1  # the tiny UNets have one resnet per down level (two per up level)

# ----------------------------------------------------------------------------------------------------------------
# UNet: diffusers <-> compvis/SGM module paths (FORMATS.md §7)

_RESNET_CHILDREN = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_TOP_LEVEL = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def unet_block_map(family: str, layers_per_block: int = LAYERS_PER_BLOCK) -> dict[str, str]:
    """diffusers block prefix -> compvis block prefix for the tiny UNet of ``family``.

    Keys are ``down_blocks.i.resnets.j``, ``down_blocks.i.attentions.j``, ``down_blocks.i.downsamplers.0.conv``,
    ``up_blocks.…``, ``mid_block.…`` and the top-level modules; values the compvis module paths
    (``input_blocks.1.0``, ``input_blocks.1.1``, ``input_blocks.2.0.op``, …). Resnet children are renamed separately.
    """
    attention = family_spec(family).attention
    levels = len(attention)
    step = layers_per_block + 1
    out = dict(_TOP_LEVEL)
    for i, attn in enumerate(attention):
        for j in range(layers_per_block):
            n = step * i + j + 1
            out[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{n}.0"
            if attn:
                out[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
        if i < levels - 1:
            out[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{step * (i + 1)}.0.op"
    for i, attn in enumerate(reversed(attention)):
        for j in range(layers_per_block + 1):
            n = step * i + j
            out[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{n}.0"
            if attn:
                out[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{n}.1"
        if i < levels - 1:
            out[f"up_blocks.{i}.upsamplers.0.conv"] = (
                f"output_blocks.{step * i + layers_per_block}.{2 if attn else 1}.conv"
            )
    out["mid_block.resnets.0"] = "middle_block.0"
    out["mid_block.attentions.0"] = "middle_block.1"
    out["mid_block.resnets.1"] = "middle_block.2"
    return out


def diffusers_to_compvis_path(path: str, family: str) -> str:
    """Map a diffusers UNet module path (``down_blocks.0.resnets.0.conv1``) to its compvis path (``input_blocks.1.0.in_layers.2``).

    Raises KeyError for a path outside the map.
    """
    blocks = unet_block_map(family)
    for prefix in sorted(blocks, key=len, reverse=True):
        if path == prefix or path.startswith(prefix + "."):
            rest = path[len(prefix) + 1 :]
            if ".resnets." in prefix and rest:
                head, _, tail = rest.partition(".")
                rest = _RESNET_CHILDREN[head] + ("." + tail if tail else "")
            return blocks[prefix] + ("." + rest if rest else "")
    raise KeyError(path)


def compvis_path_map(family: str, diffusers_unet: nn.Module | None = None) -> dict[str, str]:
    """Every parameterised diffusers UNet module path -> compvis path, for the tiny UNet of ``family``."""
    unet = diffusers_unet if diffusers_unet is not None else tiny_unet(family)
    out = {}
    for name, module in unet.named_modules():
        if name and any(True for _ in module.parameters(recurse=False)):
            out[name] = diffusers_to_compvis_path(name, family)
    return out


def _sgm_unet_class():
    """ldm's ``UNetModel`` whose forward feeds every block of a depth-N SpatialTransformer the same context.

    (sdkit's ldm indexes ``context[i]`` per transformer block and so fails for depth > 1 with a tensor; SGM reuses
    ``context[0]``.) Named ``UNetModel`` like SGM's class.
    """
    from ldm.modules.diffusionmodules.openaimodel import UNetModel as LdmUNetModel

    class UNetModel(LdmUNetModel):
        def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
            if isinstance(context, torch.Tensor):
                context = [context] * self.tiny_depth
            return super().forward(x, timesteps=timesteps, context=context, y=y, **kwargs)

    return UNetModel


def compvis_unet(family: str) -> nn.Module:
    """An ``ldm`` ``UNetModel`` with the tiny layout of ``family`` (random weights; see ``load_unet_from_diffusers``).

    sd1: 4 heads, 1x1-conv proj. sd2: 8 channels per head, Linear proj, context 64. sdxl: SGM layout, levels (1, 2, 2),
    no attention at level 0, transformer depth 2, ``label_emb.0.{0,2}`` fed by ``y`` of width 80.
    """
    spec = family_spec(family)
    if spec.depth > 1:
        UNetModel = _sgm_unet_class()
    else:
        from ldm.modules.diffusionmodules.openaimodel import UNetModel
    base = spec.channels[0]
    heads = dict(num_heads=spec.heads[0]) if family == "sd1" else dict(num_head_channels=HEAD_CHANNELS)
    unet = UNetModel(
        image_size=32,
        in_channels=4,
        out_channels=4,
        model_channels=base,
        attention_resolutions=[2**i for i, a in enumerate(spec.attention) if a],
        num_res_blocks=LAYERS_PER_BLOCK,
        channel_mult=[c // base for c in spec.channels],
        use_spatial_transformer=True,
        transformer_depth=spec.depth,
        context_dim=[spec.context_dim] * spec.depth,  # ldm's SpatialTransformer indexes it per block
        use_linear_in_transformer=spec.linear_proj,
        legacy=False,
        **heads,
    )
    unet.tiny_depth = spec.depth
    if spec.time_embed_dim is not None:
        # SGM's num_classes="sequential": label_emb = Sequential(Sequential(Linear, SiLU, Linear))
        emb = 4 * base
        adm_in = 6 * spec.time_embed_dim + spec.encoders["te2"].projection
        unet.label_emb = nn.Sequential(nn.Sequential(nn.Linear(adm_in, emb), nn.SiLU(), nn.Linear(emb, emb)))
        unet.num_classes = "sequential"
    return unet.eval()


def unet_state_to_compvis(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """Rename a diffusers UNet state dict to compvis names (parameter names keep their last component)."""
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        out[diffusers_to_compvis_path(module, family) + "." + param] = value
    return out


def load_unet_from_diffusers(compvis: nn.Module, diffusers_unet: nn.Module, family: str) -> nn.Module:
    """Copy every weight of ``diffusers_unet`` into ``compvis`` by the name map; strict (all keys, same shapes)."""
    state = unet_state_to_compvis(diffusers_unet.state_dict(), family)
    compvis.load_state_dict(state, strict=True)
    return compvis


# ----------------------------------------------------------------------------------------------------------------
# Text encoders: OpenCLIP-shaped tower and HF CLIP <-> OpenCLIP state conversion (FORMATS.md §8)


class ResidualAttentionBlock(nn.Module):
    """OpenCLIP's text resblock: pre-LN attention and MLP, ``attn`` a batch-first ``nn.MultiheadAttention``."""

    def __init__(self, width: int, heads: int, mlp_width: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ls_1 = nn.Identity()
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, mlp_width), gelu=nn.GELU(), c_proj=nn.Linear(mlp_width, width))
        )
        self.ls_2 = nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``[B, L, width]`` float -> same shape."""
        h = self.ln_1(x)
        x = x + self.ls_1(self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0])
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    """OpenCLIP's ``Transformer``: ``resblocks`` list, ``batch_first`` True."""

    def __init__(self, width: int, layers: int, heads: int, mlp_width: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.batch_first = True
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_width) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        return x


class OpenCLIPTextModel(nn.Module):
    """The text half of an OpenCLIP ``CLIP`` (what A1111 keeps at ``wrapped.model``), at tiny size.

    ``forward(tokens [B, L] long) -> [B, L, width]`` after ``ln_final`` with a causal mask, equal to HF
    ``CLIPTextModel(...).last_hidden_state`` for converted weights. ``pooled`` takes the first EOS position and
    applies ``text_projection`` (``[width, proj]``).
    """

    def __init__(
        self,
        vocab: int,
        width: int,
        layers: int,
        heads: int,
        mlp_width: int,
        proj: int,
        ctx: int = MAX_TOKENS,
    ):
        super().__init__()
        self.context_length = ctx
        self.vocab_size = vocab
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.zeros(ctx, width))
        self.transformer = Transformer(width, layers, heads, mlp_width)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.zeros(width, proj))
        mask = torch.full((ctx, ctx), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:n]
        x = self.transformer(x, attn_mask=self.attn_mask[:n, :n])
        return self.ln_final(x)

    def pooled(self, tokens: torch.Tensor, eos_id: int = 1) -> torch.Tensor:
        """``[B, proj]``: the hidden state at each row's first ``eos_id`` token, times ``text_projection``."""
        x = self.forward(tokens)
        idx = (tokens == eos_id).int().argmax(dim=-1)
        return x[torch.arange(x.shape[0]), idx] @ self.text_projection


def hf_clip_to_openclip_state(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``CLIPTextModel``/``WithProjection`` state dict -> ``OpenCLIPTextModel`` state dict.

    q/k/v weights and biases are concatenated in that order into ``attn.in_proj_weight`` ``[3d, d]`` / ``in_proj_bias``;
    ``text_projection.weight`` ``[proj, d]`` becomes the ``[d, proj]`` parameter (identity when absent).
    """
    s = {k.removeprefix("text_model."): v for k, v in hf_state.items()}
    out = {
        "token_embedding.weight": s["embeddings.token_embedding.weight"],
        "positional_embedding": s["embeddings.position_embedding.weight"],
        "ln_final.weight": s["final_layer_norm.weight"],
        "ln_final.bias": s["final_layer_norm.bias"],
    }
    width = out["ln_final.weight"].shape[0]
    proj = s.get("text_projection.weight")
    out["text_projection"] = proj.T.contiguous() if proj is not None else torch.eye(width)
    layers = {int(m.group(1)) for k in s if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    for i in sorted(layers):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[dst + f"attn.in_proj_{part}"] = torch.cat(
                [s[src + f"self_attn.{p}_proj.{part}"] for p in "qkv"]
            )
            out[dst + f"attn.out_proj.{part}"] = s[src + f"self_attn.out_proj.{part}"]
            out[dst + f"ln_1.{part}"] = s[src + f"layer_norm1.{part}"]
            out[dst + f"ln_2.{part}"] = s[src + f"layer_norm2.{part}"]
            out[dst + f"mlp.c_fc.{part}"] = s[src + f"mlp.fc1.{part}"]
            out[dst + f"mlp.c_proj.{part}"] = s[src + f"mlp.fc2.{part}"]
    return out


def openclip_to_hf_state(
    oc_state: dict[str, torch.Tensor], with_projection: bool = False
) -> dict[str, torch.Tensor]:
    """Inverse of ``hf_clip_to_openclip_state`` (``in_proj_weight`` split into q, k, v by ``chunk(3)``)."""
    s = oc_state
    out = {
        "text_model.embeddings.token_embedding.weight": s["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": s["positional_embedding"],
        "text_model.final_layer_norm.weight": s["ln_final.weight"],
        "text_model.final_layer_norm.bias": s["ln_final.bias"],
    }
    if with_projection:
        out["text_projection.weight"] = s["text_projection"].T.contiguous()
    layers = {int(m.group(1)) for k in s if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))}
    for i in sorted(layers):
        src, dst = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for part in ("weight", "bias"):
            for p, chunk in zip("qkv", s[src + f"attn.in_proj_{part}"].chunk(3), strict=True):
                out[dst + f"self_attn.{p}_proj.{part}"] = chunk
            out[dst + f"self_attn.out_proj.{part}"] = s[src + f"attn.out_proj.{part}"]
            out[dst + f"layer_norm1.{part}"] = s[src + f"ln_1.{part}"]
            out[dst + f"layer_norm2.{part}"] = s[src + f"ln_2.{part}"]
            out[dst + f"mlp.fc1.{part}"] = s[src + f"mlp.c_fc.{part}"]
            out[dst + f"mlp.fc2.{part}"] = s[src + f"mlp.c_proj.{part}"]
    return out


def openclip_from_hf(hf_model: nn.Module) -> OpenCLIPTextModel:
    """A new ``OpenCLIPTextModel`` holding the weights of an HF CLIP text model (gelu activation expected)."""
    cfg = hf_model.config
    proj = getattr(hf_model, "text_projection", None)
    model = OpenCLIPTextModel(
        vocab=cfg.vocab_size,
        width=cfg.hidden_size,
        layers=cfg.num_hidden_layers,
        heads=cfg.num_attention_heads,
        mlp_width=cfg.intermediate_size,
        proj=proj.out_features if proj is not None else cfg.hidden_size,
        ctx=cfg.max_position_embeddings,
    )
    model.load_state_dict(hf_clip_to_openclip_state(hf_model.state_dict()), strict=True)
    return model.eval()


def openclip_path(hf_path: str) -> tuple[str, int | None]:
    """HF CLIP module path -> (OpenCLIP module path, q/k/v slot 0|1|2 of ``attn.in_proj_weight`` or None).

    ``text_model.encoder.layers.3.self_attn.k_proj`` -> (``transformer.resblocks.3.attn``, 1);
    ``….mlp.fc1`` -> (``transformer.resblocks.3.mlp.c_fc``, None).
    """
    m = re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", hf_path)
    if not m:
        raise KeyError(hf_path)
    i, rest = m.groups()
    base = f"transformer.resblocks.{i}."
    qkv = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}
    if rest in qkv:
        return base + "attn", qkv[rest]
    names = {
        "self_attn.out_proj": "attn.out_proj",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
    }
    return base + names[rest], None


# ----------------------------------------------------------------------------------------------------------------
# A1111 wrappers (class names as in ldm/sgm and A1111's sd_hijack_*; only what tests use)


class FrozenCLIPEmbedder(nn.Module):
    """ldm's HF CLIP wrapper: ``.transformer`` (``CLIPTextModel``) and ``.tokenizer``."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer
        self.tokenizer = tiny_tokenizer()

    def forward(self, texts: list[str]) -> torch.Tensor:
        """``[B, 77, hidden]`` last hidden state."""
        ids = self.tokenizer(
            texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
        )
        return self.transformer(input_ids=ids.input_ids).last_hidden_state


class FrozenOpenCLIPEmbedder(nn.Module):
    """ldm's OpenCLIP wrapper: ``.model`` (OpenCLIP text tower)."""

    def __init__(self, model: OpenCLIPTextModel):
        super().__init__()
        self.model = model
        self.tokenizer = tiny_tokenizer()

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
        )
        return self.model(ids.input_ids)


class FrozenOpenCLIPEmbedder2(FrozenOpenCLIPEmbedder):
    """sgm's bigG wrapper (SDXL te2)."""


class _CustomWords(nn.Module):
    """A1111's ``…WithCustomWords`` hijack wrapper: the original embedder at ``.wrapped``."""

    def __init__(self, wrapped: nn.Module):
        super().__init__()
        self.wrapped = wrapped

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.wrapped(texts)


class FrozenCLIPEmbedderWithCustomWords(_CustomWords):
    pass


class FrozenOpenCLIPEmbedderWithCustomWords(_CustomWords):
    pass


class FrozenCLIPEmbedderForSDXLWithCustomWords(_CustomWords):
    pass


class FrozenOpenCLIPEmbedder2WithCustomWords(_CustomWords):
    pass


class ConcatTimestepEmbedderND(nn.Module):
    """sgm's size/crop conditioner: no parameters, no ``wrapped``."""

    def __init__(self, outdim: int):
        super().__init__()
        self.outdim = outdim


class GeneralConditioner(nn.Module):
    """sgm's SDXL conditioner: ``.embedders`` list."""

    def __init__(self, embedders: list[nn.Module]):
        super().__init__()
        self.embedders = nn.ModuleList(embedders)


class DiffusionWrapper(nn.Module):
    """ldm's wrapper holding the UNet at ``.diffusion_model``."""

    def __init__(self, diffusion_model: nn.Module):
        super().__init__()
        self.diffusion_model = diffusion_model

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None):
        return self.diffusion_model(x, timesteps=t, context=context, y=y)


class A1111Model(nn.Module):
    """``shared.sd_model`` stand-in: ``.model.diffusion_model``, the family's text encoder tree, the five flags."""

    def __init__(self, family: str, unet: nn.Module, cond: nn.Module):
        super().__init__()
        self.tiny_family = family
        self.model = DiffusionWrapper(unet)
        if family == "sdxl":
            self.conditioner = cond
        self.cond_stage_model = cond
        self.is_sd1 = family == "sd1"
        self.is_sd2 = family == "sd2"
        self.is_sdxl = family == "sdxl"
        self.is_ssd = False
        self.is_sd3 = False
        self.lowvram = False


def a1111_model(family: str = "sd1", seed: int = 0, unet=None, text_encoders=None) -> A1111Model:
    """A fresh A1111-shaped tiny model of ``family`` ("sd1" | "sd2" | "sdxl").

    Weights come from ``unet`` (a diffusers tiny UNet) and ``text_encoders`` (``{"te1": …, "te2": …}`` HF models),
    or by default from ``lora_ext.demo.tiny_unet(family, seed)`` / ``tiny_text_encoders(family, seed)``; the
    objects passed in are never reused, so the diffusers and the A1111 model can be patched independently.
    """
    import copy

    unet = unet if unet is not None else tiny_unet(family, seed)
    tes = text_encoders if text_encoders is not None else tiny_text_encoders(family, seed)
    compvis = load_unet_from_diffusers(compvis_unet(family), unet, family)
    if family == "sd1":
        cond = FrozenCLIPEmbedderWithCustomWords(FrozenCLIPEmbedder(copy.deepcopy(tes["te1"])))
    elif family == "sd2":
        cond = FrozenOpenCLIPEmbedderWithCustomWords(FrozenOpenCLIPEmbedder(openclip_from_hf(tes["te1"])))
    elif family == "sdxl":
        size_dim = family_spec(family).time_embed_dim
        cond = GeneralConditioner(
            [
                FrozenCLIPEmbedderForSDXLWithCustomWords(FrozenCLIPEmbedder(copy.deepcopy(tes["te1"]))),
                FrozenOpenCLIPEmbedder2WithCustomWords(FrozenOpenCLIPEmbedder2(openclip_from_hf(tes["te2"]))),
                ConcatTimestepEmbedderND(size_dim),
                ConcatTimestepEmbedderND(size_dim),
                ConcatTimestepEmbedderND(size_dim),
            ]
        )
    else:
        raise ValueError(family)
    return A1111Model(family, compvis, cond).eval()


def diffusers_to_a1111_state(
    family: str, unet: nn.Module, text_encoders: dict[str, nn.Module]
) -> dict[str, torch.Tensor]:
    """The state dict an ``a1111_model(family)`` gets from diffusers/HF weights, keyed by A1111 module paths
    (``model.diffusion_model.input_blocks.1.1.proj_in.weight``, ``cond_stage_model.wrapped.model.transformer.…``).

    For loading other weights into an existing tree in place (a checkpoint switch): ``model.load_state_dict(state)``.
    """
    out = {
        "model.diffusion_model." + k: v for k, v in unet_state_to_compvis(unet.state_dict(), family).items()
    }
    if family == "sd1":
        roots = {"te1": ("cond_stage_model.wrapped.transformer.", False)}
    elif family == "sd2":
        roots = {"te1": ("cond_stage_model.wrapped.model.", True)}
    else:
        roots = {
            "te1": ("conditioner.embedders.0.wrapped.transformer.", False),
            "te2": ("conditioner.embedders.1.wrapped.model.", True),
        }
    for component, (prefix, openclip) in roots.items():
        state = text_encoders[component].state_dict()
        if openclip:
            state = hf_clip_to_openclip_state(state)
        out.update({prefix + k: v for k, v in state.items()})
        if prefix.startswith("conditioner."):  # SDXL: cond_stage_model is the conditioner, listed twice
            out.update(
                {"cond_stage_model." + prefix.removeprefix("conditioner.") + k: v for k, v in state.items()}
            )
    return out


def a1111_text_roots(model: A1111Model) -> dict[str, nn.Module]:
    """Component -> the module whose ``named_modules()`` paths are A1111's TE layer paths (HF model or OpenCLIP tower)."""
    if model.is_sdxl:
        e = model.conditioner.embedders
        return {"te1": e[0].wrapped.transformer, "te2": e[1].wrapped.model}
    wrapped = model.cond_stage_model.wrapped
    return {"te1": wrapped.transformer if model.is_sd1 else wrapped.model}


def a1111_target_path(family: str, component: str, canonical: str) -> tuple[str, tuple[int, int] | None]:
    """Canonical (diffusers UNet / HF CLIP) module path -> (path in the A1111 tree's component root, rows or None).

    UNet paths are relative to ``diffusion_model``; TE paths to ``a1111_text_roots(model)[component]``. Rows are the
    ``in_proj_weight`` slice of an OpenCLIP q/k/v target.
    """
    if component == "unet":
        return diffusers_to_compvis_path(canonical, family), None
    openclip = (family == "sd2") or (family == "sdxl" and component == "te2")
    if not openclip:
        return canonical, None
    path, slot = openclip_path(canonical)
    if slot is None:
        return path, None
    width = family_spec(family).encoders[component].hidden
    return path, (slot * width, (slot + 1) * width)
