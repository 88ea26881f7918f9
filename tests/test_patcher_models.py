"""Small hand-built models and LoRAs for the patcher tests (used by test_patcher*.py and test_restore*.py).

The models hold one of every layer kind the patcher supports (Linear with and without bias, 3×3 and 1×1 Conv2d,
GroupNorm, LayerNorm, MultiheadAttention with q/k/v slices and out_proj) plus a buffer. LoRAs are ``ResolvedLora``
values built directly from tensors, with ``Target.module`` pointing at the modules, as the resolver would build them.
The tests at the bottom only check that every builder yields adapters ``layer_delta`` accepts.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from lora_ext.adapters import ActiveLora, LayerAdapter, ResolvedLora, Target
from lora_ext.algorithms import layer_delta

D_MHA = 8


class TinyNet(nn.Module):
    """One module of every kind; ``forward`` runs them all so tests can check outputs too."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(12, 10)
        self.lin_nb = nn.Linear(10, 12, bias=False)
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.conv1 = nn.Conv2d(6, 4, 1)
        self.gn = nn.GroupNorm(2, 6)
        self.ln = nn.LayerNorm(10)
        self.mha = nn.MultiheadAttention(D_MHA, 2)
        self.register_buffer("stat", torch.randn(5))

    def forward(self, x: torch.Tensor, img: torch.Tensor, seq: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = self.lin_nb(self.ln(self.lin(x)))
        b = self.conv1(self.gn(self.conv(img)))
        c = self.mha(seq, seq, seq, need_weights=False)[0]
        return a, b, c


def tiny_net(dtype: torch.dtype = torch.float32, seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():  # norm affines away from 1/0 so W-dependent and norm deltas are visible
        for norm in (net.gn, net.ln):
            norm.weight.add_(torch.randn_like(norm.weight) * 0.1)
            norm.bias.add_(torch.randn_like(norm.bias) * 0.1)
    return net.to(dtype)


def snapshot(module: nn.Module) -> dict[str, bytes]:
    """Every parameter and buffer as raw bytes (None-valued parameters are absent from the dict)."""
    items = list(module.named_parameters()) + list(module.named_buffers())
    return {name: t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() for name, t in items}


def targets(net: TinyNet) -> list[tuple[Target, str]]:
    """Every target of ``net`` with its kind: "linear", "conv", "norm" or "slice" (MHA q/k/v rows)."""
    out = [
        (Target("unet", "lin", "lin", module=net.lin), "linear"),
        (Target("unet", "lin_nb", "lin_nb", module=net.lin_nb), "linear"),
        (Target("unet", "conv", "conv", module=net.conv), "conv"),
        (Target("unet", "conv1", "conv1", module=net.conv1), "conv"),
        (Target("unet", "gn", "gn", module=net.gn), "norm"),
        (Target("te1", "ln", "ln", module=net.ln), "norm"),
        (Target("te1", "mha.out_proj", "mha.out_proj", module=net.mha.out_proj), "linear"),
    ]
    for i, name in enumerate("qkv"):
        rows = (i * D_MHA, (i + 1) * D_MHA)
        t = Target("te1", "mha", f"mha.{name}", "in_proj_weight", "in_proj_bias", rows, net.mha)
        out.append((t, "slice"))
    return out


def weight_shape(target: Target) -> torch.Size:
    w = getattr(target.module, target.weight)
    if target.rows is not None:
        return torch.Size((target.rows[1] - target.rows[0], *w.shape[1:]))
    return w.shape


def _r(*shape: int, scale: float = 0.2) -> torch.Tensor:
    return torch.randn(*shape) * scale


def make_adapter(algo: str, shape: torch.Size, rng: random.Random) -> LayerAdapter:
    """A random adapter of ``algo`` for a weight of ``shape`` (2-D, 4-D conv, or 1-D norm affine)."""
    out = shape[0]
    rest = int(torch.Size(shape[1:]).numel()) if len(shape) > 1 else 1
    rank = rng.choice([1, 2, 3])
    alpha = rng.choice([None, 1.0, 2.0, 0.5])
    if algo == "lora":
        return LayerAdapter("lora", {"up": _r(out, rank), "down": _r(rank, *shape[1:])}, alpha)
    if algo == "tucker":  # LoCon Tucker on a k×k conv
        up, mid, down = _r(out, rank, 1, 1), _r(rank, rank, *shape[2:]), _r(rank, shape[1], 1, 1)
        return LayerAdapter("lora", {"up": up, "mid": mid, "down": down}, alpha)
    if algo == "dora":
        parts = {"up": _r(out, rank), "down": _r(rank, *shape[1:]), "dora_scale": 1 + _r(out, 1)}
        return LayerAdapter("lora", parts, alpha)
    if algo == "lora_bias":  # A1111 "bias" part joins ΔW_raw
        parts = {"up": _r(out, rank), "down": _r(rank, *shape[1:]), "bias": _r(*shape, scale=0.05)}
        return LayerAdapter("lora", parts, alpha)
    if algo == "loha":
        parts = {
            "hada_w1_a": _r(out, rank),
            "hada_w1_b": _r(rank, rest),
            "hada_w2_a": _r(out, rank),
            "hada_w2_b": _r(rank, rest),
        }
        return LayerAdapter("loha", parts, alpha)
    if algo == "lokr":
        a = 2 if out % 2 == 0 else 1
        b = 2 if shape[1] % 2 == 0 else 1
        c, d = out // a, rest // b
        parts = {"lokr_w1": _r(a, b), "lokr_w2_a": _r(c, rank), "lokr_w2_b": _r(rank, d)}
        return LayerAdapter("lokr", parts, alpha)
    if algo == "full":
        return LayerAdapter("full", {"diff": _r(*shape, scale=0.05), "diff_b": _r(out, scale=0.05)})
    if algo == "ia3":
        return LayerAdapter("ia3", {"weight": _r(out)})
    if algo == "oft":
        block = 2 if out % 2 == 0 else 1
        return LayerAdapter("oft", {"oft_blocks": _r(out // block, block, block)}, None)
    if algo == "norm":
        return LayerAdapter("norm", {"w_norm": _r(out, scale=0.1), "b_norm": _r(out, scale=0.1)})
    raise ValueError(algo)


#: Algorithms usable per target kind.
ALGOS_BY_KIND = {
    "linear": ("lora", "dora", "lora_bias", "loha", "lokr", "full", "ia3", "oft"),
    "conv": ("lora", "tucker", "dora", "loha", "lokr", "full", "ia3", "oft"),
    "slice": ("lora", "dora", "loha", "lokr", "full", "ia3", "oft"),
    "norm": ("norm",),
}


def random_lora(net: TinyNet, name: str, rng: random.Random, algo: str | None = None) -> ResolvedLora:
    """A LoRA over a random non-empty subset of ``net``'s targets, each with a random (or the given) algorithm."""
    layers: dict[Target, LayerAdapter] = {}
    all_targets = targets(net)
    chosen = [t for t in all_targets if rng.random() < 0.6] or [all_targets[0]]
    for target, kind in chosen:
        options = ALGOS_BY_KIND[kind]
        pick = algo if algo in options else rng.choice(options)
        if pick == "tucker" and weight_shape(target)[-1] == 1:
            pick = "lora"
        layers[target] = make_adapter(pick, weight_shape(target), rng)
    return ResolvedLora(name, f"/loras/{name}.safetensors", layers)


def plain_lora(net: TinyNet, name: str, rank: int = 2, kinds=("linear", "conv", "slice")) -> ResolvedLora:
    """A plain LoRA (up/down only) on every target of the given kinds."""
    layers = {}
    for target, kind in targets(net):
        if kind in kinds:
            shape = weight_shape(target)
            layers[target] = LayerAdapter(
                "lora", {"up": _r(shape[0], rank), "down": _r(rank, *shape[1:])}, 1.0
            )
    return ResolvedLora(name, f"/loras/{name}.safetensors", layers)


def active(*entries: tuple[ResolvedLora, float]) -> list[ActiveLora]:
    """ActiveLora list with the same multiplier for te and unet."""
    return [ActiveLora(lora, te=m, unet=m) for lora, m in entries]


# -- the builders themselves ---------------------------------------------------------------------------------------


def test_every_builder_adapter_is_accepted_by_layer_delta():
    net = tiny_net()
    rng = random.Random(0)
    for target, kind in targets(net):
        shape = weight_shape(target)
        for algo in ALGOS_BY_KIND[kind]:
            if algo == "tucker" and shape[-1] == 1:
                continue
            adapter = make_adapter(algo, shape, rng)
            w0 = torch.randn(shape)
            delta = layer_delta(adapter, w0, 0.7, None, torch.randn(shape[0]))
            assert delta.weight is None or delta.weight.shape == shape, (target.canonical, algo)
            assert delta.weight is None or torch.isfinite(delta.weight).all()
            assert delta.weight is not None and delta.weight.abs().sum() > 0, (target.canonical, algo)


def test_snapshot_sees_single_bit_changes():
    net = tiny_net()
    before = snapshot(net)
    with torch.no_grad():
        w = net.lin.weight.view(-1)
        w[3] = torch.nextafter(w[3], torch.tensor(1e9))
    after = snapshot(net)
    assert before != after and [k for k in before if before[k] != after[k]] == ["lin.weight"]
