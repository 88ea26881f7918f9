"""Core data types shared by the readers, the key resolver, the algorithms and the patcher.

Flow: a file is read (``lora_ext.formats``) into a ``LoraFile``; the key resolver (``lora_ext.keys``) maps its keys
onto a loaded model's ``Target``s and groups the tensors of each target into one ``LayerAdapter``, giving a
``ResolvedLora``; the algorithms (``lora_ext.algorithms``) turn one ``LayerAdapter`` plus the pristine weight into a
float32 delta; the ``Patcher`` (``lora_ext.patcher``) sums the deltas of all active LoRAs per target, adds once,
rounds once, and restores from its pristine backups.

Nothing in this module holds state; every type is a plain value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lora_ext.blocks import BlockWeights
    from lora_ext.errors import Problem
    from lora_ext.schedules import LoraSchedule

#: Model parts a LoRA can target. SD1/SD2 have one text encoder ("te1"); SDXL has "te1" (CLIP-L) and "te2" (bigG).
Component = Literal["unet", "te1", "te2"]

#: Algorithm names used in ``LayerAdapter.algo`` (FORMATS.md §9).
ALGORITHMS = (
    "lora",  # LoRA / LoCon / Tucker (parts: up, down, optional mid); also DyLoRA files
    "loha",  # parts: hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b, optional hada_t1, hada_t2
    "lokr",  # parts: lokr_w1 | lokr_w1_a + lokr_w1_b; lokr_w2 | lokr_w2_a + lokr_w2_b; optional lokr_t2
    "full",  # parts: diff, optional diff_b
    "norm",  # parts: w_norm, optional b_norm
    "ia3",  # parts: weight, optional on_input (bool tensor or 0-d)
    "glora",  # parts: a1, a2, b1, b2, optional bm
    "oft",  # Diag-OFT / COFT: parts oft_blocks [n, b, b], optional rescale
    "boft",  # BOFT: parts oft_blocks [M, n, b, b], optional rescale
    "oft_diag",  # old LyCORIS OFT: parts oft_diag
)

#: Parts every algorithm may carry in addition to its own (A1111 semantics, FORMATS.md §10):
#: "scale" replaces alpha/r; "bias" joins the raw delta before scaling (LoRA-family); "dora_scale" is a DoRA magnitude.
COMMON_PARTS = ("scale", "bias", "dora_scale")


@dataclass(frozen=True)
class Target:
    """One patchable weight of a loaded model, or a row slice of one.

    component: which model part the module lives in.
    path: dotted module path relative to the component's root module, exactly as ``named_modules()`` yields it
        (e.g. ``input_blocks.1.1.transformer_blocks.0.attn1.to_q`` or ``transformer.resblocks.0.attn``).
    canonical: the convention-independent name used in reports and for block weights: diffusers UNet path
        (``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``) or HF CLIP path
        (``text_model.encoder.layers.0.self_attn.q_proj``), whatever the model's own layout.
    weight: attribute name of the weight parameter on the module (``weight``; ``in_proj_weight`` for MHA q/k/v).
    bias: attribute name of the bias parameter (``bias``; ``in_proj_bias`` for MHA q/k/v).
    rows: ``(start, stop)`` rows of ``weight``/``bias`` when the target is a q/k/v slice of a fused
        ``nn.MultiheadAttention`` ``in_proj_weight`` (FORMATS.md §10.9); ``None`` for whole tensors.
    module: the module object itself (not part of equality or hashing).
    block: the block-weight label of LoRA Block Weight (USERS §7.1): ``BASE`` for text-encoder targets,
        ``IN00``…``IN11`` / ``MID`` / ``OUT00``…``OUT11`` for UNet targets by their compvis block index, ``""`` for
        UNet layers outside those blocks (time embedding, ``out``). Derived from ``path``; not part of equality.
    """

    component: Component
    path: str
    canonical: str
    weight: str = "weight"
    bias: str = "bias"
    rows: tuple[int, int] | None = None
    module: nn.Module | None = field(default=None, compare=False, hash=False, repr=False)
    block: str = field(default="", compare=False, hash=False, repr=False)


@dataclass
class LayerAdapter:
    """One file's update for one Target, as stored (any dtype, possibly memory-mapped); math upcasts to float32.

    algo: one of ``ALGORITHMS``.
    tensors: normalized part name -> tensor. Part names are the algorithm's own (see ``ALGORITHMS``) plus
        ``COMMON_PARTS``; format variants are normalized by the resolver (PEFT ``lora_A``/``lora_B``, diffusers
        ``lora.down``/``lora_linear_layer.up``, attn-procs ``to_q_lora.down``, ... all become ``down``/``up``).
    alpha: the module's alpha scalar, or None when absent (then s = 1; FORMATS.md §10.3). For OFT/BOFT it is the
        constraint, not a scale.
    dora_axis: for ``dora_scale`` from PEFT (``lora_magnitude_vector``) always "out"; else None, and the algorithm
        decides from the tensor shape (FORMATS.md §10.8).
    keys: the file keys this adapter was built from (for reports).
    """

    algo: str
    tensors: dict[str, torch.Tensor]
    alpha: float | None = None
    dora_axis: Literal["out", "in"] | None = None
    keys: tuple[str, ...] = ()


@dataclass
class LoraFile:
    """A LoRA file as read from disk, before any model is known.

    path: absolute path of the file.
    tensors: key -> CPU tensor in the stored dtype (safetensors: views of one private buffer read from the file,
        never a mapping of it, so a file changed on disk cannot change them). A cloneofsimo ``.pt`` list is stored
        under keys ``"0"``, ``"1"``, ... in list order.
    metadata: safetensors ``__metadata__`` (string -> string), possibly merged with ``adapter_config.json`` found
        beside the file under the key ``"adapter_config.json"`` (its JSON text).
    """

    path: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class ResolvedLora:
    """A LoraFile mapped onto one loaded model.

    name: the name the user asked for (tag name), used in messages and infotext.
    layers: target -> adapter. Every target belongs to the model the resolver was given.
    unmatched: file keys that map to no layer of the model (reported, never silently dropped).
    embeddings: bundled textual-inversion embeddings, token -> {"clip_l": tensor, "clip_g": tensor} or
        {"string_to_param": tensor}; handed to the host.
    problems: warnings and errors found while resolving (alpha = 0, NaN tensors, wrong architecture, ...).
    report: the coverage report (``lora_ext.coverage.CoverageReport``) for hosts to show.
    """

    name: str
    path: str
    layers: dict[Target, LayerAdapter]
    unmatched: list[str] = field(default_factory=list)
    embeddings: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    report: object | None = None


@dataclass(frozen=True)
class ActiveLora:
    """One entry of the active set handed to the patcher.

    te, unet: multipliers for text-encoder targets and UNet targets (any sign, any magnitude).
    dyn: DyLoRA rank truncation (keep the first ``dyn`` ranks, s unchanged), or None for full rank.
    blocks: block weights (``lbw=``, ``lora_ext.blocks.BlockWeights``) scaling each target by its block's factor, or
        None for factor 1 everywhere.
    schedule: how ``te`` / ``unet`` follow the sampling steps (``lora_ext.schedules.LoraSchedule``), or None for
        constant multipliers; ``te`` / ``unet`` hold the multipliers of the step the model is patched for (hosts
        replace them per step with ``lora_ext.activation.at_step``). The patcher reads only ``te`` / ``unet``.
    """

    lora: ResolvedLora
    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None
    blocks: BlockWeights | None = None
    schedule: LoraSchedule | None = None

    def multiplier(self, target: Target) -> float:
        """The multiplier that applies to ``target``: ``unet`` for UNet targets, ``te`` otherwise, times the block
        factor of ``target`` when block weights are set."""
        base = self.unet if target.component == "unet" else self.te
        return base if self.blocks is None else base * self.blocks.factor(target)
