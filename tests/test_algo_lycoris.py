"""Patched-layer outputs against lycoris-lora's own module forward (FORMATS.md §9, §11).

Each test builds a LyCORIS module around a tiny real layer, randomises its parameters, takes its state-dict tensors as
our ``LayerAdapter`` (part names as the resolver normalizes them), and compares F.linear / F.conv2d / F.layer_norm with
W₀ + ΔW (and b₀ + Δb) against ``module(x)``. LyCORIS's merge (``merge_to`` / ``get_merged_weight``) applies α/r twice
for LoHa/LoKr and is never used as the reference; its forward applies it once.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lycoris.modules.boft import ButterflyOFTModule
from lycoris.modules.diag_oft import DiagOFTModule
from lycoris.modules.full import FullModule
from lycoris.modules.glora import GLoRAModule
from lycoris.modules.ia3 import IA3Module
from lycoris.modules.locon import LoConModule
from lycoris.modules.loha import LohaModule
from lycoris.modules.lokr import LokrModule
from lycoris.modules.norms import NormModule
from torch import nn

from lora_ext.adapters import LayerAdapter
from lora_ext.algorithms import layer_delta

torch.set_num_threads(1)

#: LyCORIS state-dict key -> normalized part name (what the resolver hands us).
RENAME = {
    "lora_up.weight": "up",
    "lora_down.weight": "down",
    "lora_mid.weight": "mid",
    "a1.weight": "a1",
    "a2.weight": "a2",
    "b1.weight": "b1",
    "b2.weight": "b2",
    "bm.weight": "bm",
}
ALGO = {
    LoConModule: "lora",
    LohaModule: "loha",
    LokrModule: "lokr",
    IA3Module: "ia3",
    GLoRAModule: "glora",
    DiagOFTModule: "oft",
    ButterflyOFTModule: "boft",
    FullModule: "full",
    NormModule: "norm",
}


def layer(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return {
        "linear": lambda: nn.Linear(6, 8),
        "linear16": lambda: nn.Linear(16, 32),
        "conv1x1": lambda: nn.Conv2d(6, 8, 1),
        "conv3x3": lambda: nn.Conv2d(6, 8, 3, padding=1),
        "layernorm": lambda: nn.LayerNorm(8),
        "groupnorm": lambda: nn.GroupNorm(2, 8),
    }[kind]()


def sample_input(org: nn.Module, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 100)
    if isinstance(org, nn.Linear):
        return torch.randn(3, org.in_features, generator=g)
    if isinstance(org, nn.Conv2d):
        return torch.randn(2, org.in_channels, 5, 5, generator=g)
    if isinstance(org, nn.LayerNorm):
        return torch.randn(3, 4, 8, generator=g)
    return torch.randn(2, 8, 3, 3, generator=g)


def randomise(module: nn.Module, seed: int, std: float) -> None:
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            p.copy_(1 + noise if name in ("rescale", "dora_scale") else noise)


def adapter_from(module: nn.Module) -> LayerAdapter:
    sd = {k: v.detach().clone() for k, v in module.state_dict().items()}
    alpha = sd.pop("alpha", None)
    tensors = {RENAME.get(k, k): v for k, v in sd.items()}
    return LayerAdapter(ALGO[type(module)], tensors, alpha=None if alpha is None else float(alpha))


def run_layer(org: nn.Module, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``org``'s functional op with the given weight and bias."""
    if isinstance(org, nn.Linear):
        return F.linear(x, w, b)
    if isinstance(org, nn.Conv2d):
        return F.conv2d(x, w, b, padding=org.padding)
    if isinstance(org, nn.LayerNorm):
        return F.layer_norm(x, org.normalized_shape, w, b, org.eps)
    return F.group_norm(x, org.num_groups, w, b, org.eps)


def compare(cls, kind: str, m: float, seed: int = 0, std: float = 1.0, **kwargs) -> None:
    """Patched output within 1e-5 relative of LyCORIS's forward; the output change likewise (when the op is linear
    in the weight, i.e. not for norms, the change is taken as the op applied to ΔW alone, free of W₀ + ΔW rounding)."""
    org = layer(kind, seed)
    w0 = org.weight.detach().float().clone()
    b0 = None if org.bias is None else org.bias.detach().float().clone()
    module = cls("lora_test", org, multiplier=m, **kwargs)
    randomise(module, seed, std)
    if getattr(module, "constraint", 0) > 0:  # the OFT clamp must really act for the test to cover it
        q = module.oft_blocks.detach() - module.oft_blocks.detach().transpose(-1, -2)
        assert float(q.norm()) > module.constraint
    if isinstance(module, FullModule):
        module.apply_to()  # turns the trained weight into W₀ + diff, as after training; state_dict() gives diff
    x = sample_input(org, seed)
    with torch.no_grad():
        base = run_layer(org, x, w0, b0)
        want = module(x)
        delta = layer_delta(adapter_from(module), w0, m, b0=b0)
        dw = delta.weight if delta.weight is not None else torch.zeros_like(w0)
        db = delta.bias
        got = run_layer(org, x, w0 + dw, b0 if db is None else (db if b0 is None else b0 + db))
        if isinstance(org, (nn.Linear, nn.Conv2d)):
            got_change = run_layer(org, x, dw, db)
        else:
            got_change = got - base
    change = want - base
    assert change.abs().max() > 1e-3, "the adapter must change the output for the test to mean anything"
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5
    assert float((got_change - change).abs().max() / change.abs().max()) <= 1e-5


LINEAR_M = [1.0, -1.5, 0.3]


@pytest.mark.parametrize("m", LINEAR_M)
@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("linear", {}),
        ("conv1x1", {}),
        ("conv3x3", {}),
        ("conv3x3", {"use_tucker": True}),
    ],
)
def test_loha_matches_lycoris_forward(kind, kwargs, m):
    compare(LohaModule, kind, m, lora_dim=2, alpha=1.0, **kwargs)


@pytest.mark.parametrize("m", LINEAR_M)
@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("linear", {"lora_dim": 1, "alpha": 0.5}),
        ("conv3x3", {"lora_dim": 1, "alpha": 0.5}),
        ("conv3x3", {"lora_dim": 1, "alpha": 0.5, "use_tucker": True}),
        ("linear", {"full_matrix": True, "lora_dim": 2, "alpha": 7.0}),
        ("linear16", {"lora_dim": 1, "alpha": 0.25, "decompose_both": True}),
    ],
)
def test_lokr_matches_lycoris_forward(kind, kwargs, m):
    compare(LokrModule, kind, m, std=0.5, **kwargs)


@pytest.mark.parametrize("m", LINEAR_M)
@pytest.mark.parametrize("kind", ["linear", "conv3x3"])
@pytest.mark.parametrize("on_input", [False, True])
def test_ia3_matches_lycoris_forward(kind, on_input, m):
    compare(IA3Module, kind, m, train_on_input=on_input)


@pytest.mark.parametrize("m", LINEAR_M)
@pytest.mark.parametrize("kind", ["linear", "conv1x1", "conv3x3"])
def test_glora_new_layout_matches_lycoris_forward(kind, m):
    """LyCORIS ≥3.0 layout; its conv GLoRA never builds the ``bm`` Tucker core (that path is oracle-tested only)."""
    compare(GLoRAModule, kind, m, std=0.5, lora_dim=2, alpha=3.0)


@pytest.mark.parametrize("m", LINEAR_M)
@pytest.mark.parametrize("kind", ["linear", "conv3x3"])
@pytest.mark.parametrize("constraint", [0.0, 0.05])
def test_diag_oft_matches_lycoris_forward(kind, constraint, m):
    """Without ``rescale`` LyCORIS's W + m(R − I)W is linear in m like ours, so every m compares. The constraint
    (c = α·out) is chosen so that the clamp acts but R − I stays large enough for LyCORIS's float32 (I+Q)(I−Q)⁻¹ − I
    to be accurate to 1e-5 (tiny rotations lose digits to cancellation there, not in our 2Q(I−Q)⁻¹)."""
    compare(DiagOFTModule, kind, m, std=0.3, lora_dim=4, constraint=constraint)


@pytest.mark.parametrize("kind", ["linear", "conv3x3"])
def test_rescaled_diag_oft_matches_lycoris_forward_at_one(kind):
    """With ``rescale`` LyCORIS gives rescale ⊙ (W + m(R − I)W): the rescale does not fade with m. Ours is
    W + m·(rescale ⊙ RᵀW − W) (FORMATS §10.7, linear in m), so the two agree only at m = 1."""
    compare(DiagOFTModule, kind, 1.0, std=0.3, lora_dim=4, constraint=0.0, rescaled=True)


@pytest.mark.parametrize("kind", ["linear", "conv3x3"])
@pytest.mark.parametrize(
    "kwargs", [{"constraint": 0.0}, {"constraint": 0.05}, {"constraint": 0.0, "rescaled": True}]
)
def test_boft_matches_lycoris_forward_at_one(kind, kwargs):
    """LyCORIS lerps every stage toward I (R_i ← mR_i + (1 − m)I), which is not linear in m; we compose the unscaled
    stages and apply m once to the difference (FORMATS §9.10, §10.7). Both agree at m = 1."""
    compare(ButterflyOFTModule, kind, 1.0, std=0.3, lora_dim=2, **kwargs)


def test_boft_differs_from_lycoris_per_stage_lerp_away_from_one():
    """The deliberate difference: at m = 0.5 LyCORIS's per-stage lerp is not half of its m = 1 change."""
    with pytest.raises(AssertionError):
        compare(ButterflyOFTModule, "linear", 0.5, std=0.3, lora_dim=2)


@pytest.mark.parametrize("m", LINEAR_M)
@pytest.mark.parametrize("kind", ["linear", "conv3x3"])
def test_full_matches_lycoris_forward(kind, m):
    compare(FullModule, kind, m)


@pytest.mark.parametrize("m", LINEAR_M)
@pytest.mark.parametrize("kind", ["layernorm", "groupnorm"])
def test_norm_matches_lycoris_forward(kind, m):
    compare(NormModule, kind, m)


@pytest.mark.parametrize("m", LINEAR_M)
@pytest.mark.parametrize("kind, kwargs", [("linear", {}), ("conv3x3", {}), ("conv3x3", {"use_tucker": True})])
def test_locon_matches_lycoris_forward(kind, kwargs, m):
    compare(LoConModule, kind, m, lora_dim=2, alpha=1.0, **kwargs)


@pytest.mark.parametrize("wd_on_out", [True, False])
@pytest.mark.parametrize(
    "cls, kind, kwargs",
    [
        (LoConModule, "linear", {}),
        (LoConModule, "conv3x3", {}),
        (LoConModule, "conv3x3", {"use_tucker": True}),
        (LohaModule, "linear", {}),
        (LokrModule, "conv3x3", {"lora_dim": 1, "alpha": 0.5}),
    ],
)
def test_dora_matches_lycoris_forward_at_one(cls, kind, kwargs, wd_on_out):
    """LyCORIS DoRA (``dora_scale`` [out,1,…] when ``wd_on_out``, else [1,in,…]); the axis is read from the shape.
    LyCORIS blends W_c·(1 + m(g/‖W_c‖ − 1)) (m = 0 gives W + sΔW); we blend W + m(W_d − W) (FORMATS §10.8), so the
    two agree at m = 1 only."""
    kwargs = {"lora_dim": 2, "alpha": 1.0} | kwargs
    compare(cls, kind, 1.0, std=0.5, weight_decompose=True, wd_on_out=wd_on_out, **kwargs)
