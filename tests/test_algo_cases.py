"""Shared fixtures, no tests: random adapters for every algorithm and target shape, each paired with its oracle.

``CASES[name](seed)`` returns ``(adapter, w0, want)`` where ``want(m)`` is the oracle's float64 ΔW at multiplier m.
Shapes are tiny: out = 8, in = 6, kernels 1×1 or 3×3, ranks 2–4.
"""

from __future__ import annotations

import torch

from lora_ext.adapters import LayerAdapter
from tests import oracles

OUT, IN = 8, 6
SHAPES = {"linear": (OUT, IN), "conv1x1": (OUT, IN, 1, 1), "conv3x3": (OUT, IN, 3, 3)}


def randn(g: torch.Generator, *shape: int, scale: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


def _loha(shape_name: str, tucker: bool, alpha):
    def build(seed: int):
        g = torch.Generator().manual_seed(seed)
        w_shape = SHAPES[shape_name]
        r = 2
        if tucker:
            t = {
                "hada_w1_a": randn(g, r, OUT),
                "hada_w1_b": randn(g, r, IN),
                "hada_w2_a": randn(g, r, OUT),
                "hada_w2_b": randn(g, r, IN),
                "hada_t1": randn(g, r, r, 3, 3),
                "hada_t2": randn(g, r, r, 3, 3),
            }
        else:
            cols = IN * (9 if shape_name == "conv3x3" else 1)
            t = {
                "hada_w1_a": randn(g, OUT, r, dtype=torch.float16),
                "hada_w1_b": randn(g, r, cols, dtype=torch.float16),
                "hada_w2_a": randn(g, OUT, r, dtype=torch.bfloat16),
                "hada_w2_b": randn(g, r, cols, dtype=torch.bfloat16),
            }
        w0 = randn(g, *w_shape)
        adapter = LayerAdapter("loha", t, alpha=alpha)
        return adapter, w0, lambda m: oracles.loha(
            t["hada_w1_a"], t["hada_w1_b"], t["hada_w2_a"], t["hada_w2_b"], alpha, m, w_shape,
            t1=t.get("hada_t1"), t2=t.get("hada_t2"),
        )  # fmt: skip

    return build


def _lokr(shape_name: str, variant: str, alpha):
    def build(seed: int):
        g = torch.Generator().manual_seed(seed)
        w_shape = SHAPES[shape_name]
        kk = 9 if shape_name == "conv3x3" else 1
        t: dict[str, torch.Tensor] = {}
        if variant == "w1_factored":
            t["lokr_w1_a"], t["lokr_w1_b"] = randn(g, 2, 1), randn(g, 1, 2)
        else:
            t["lokr_w1"] = randn(g, 2, 2)
        if variant == "tucker":
            t.update(lokr_w2_a=randn(g, 2, 4), lokr_w2_b=randn(g, 2, 3), lokr_t2=randn(g, 2, 2, 3, 3))
        elif variant in ("both_full", "w1_factored"):
            t["lokr_w2"] = randn(g, 4, 3, 3, 3) if shape_name == "conv3x3" else randn(g, 4, 3)
        else:
            t.update(lokr_w2_a=randn(g, 4, 2), lokr_w2_b=randn(g, 2, 3 * kk))
        w0 = randn(g, *w_shape)
        adapter = LayerAdapter("lokr", t, alpha=alpha)
        return adapter, w0, lambda m: oracles.lokr(
            alpha, m, w_shape, w1=t.get("lokr_w1"), w1a=t.get("lokr_w1_a"), w1b=t.get("lokr_w1_b"),
            w2=t.get("lokr_w2"), w2a=t.get("lokr_w2_a"), w2b=t.get("lokr_w2_b"), t2=t.get("lokr_t2"),
        )  # fmt: skip

    return build


def _lora(shape_name: str, tucker: bool, alpha):
    def build(seed: int):
        g = torch.Generator().manual_seed(seed)
        w_shape = SHAPES[shape_name]
        r = 3
        conv = len(w_shape) == 4
        up = randn(g, OUT, r, 1, 1) if conv else randn(g, OUT, r)
        if tucker:
            t = {"up": up, "mid": randn(g, r, r, 3, 3), "down": randn(g, r, IN, 1, 1)}
        else:
            t = {"up": up, "down": randn(g, r, IN, *w_shape[2:])}
        return (
            LayerAdapter("lora", t, alpha=alpha),
            randn(g, *w_shape),
            lambda m: oracles.lora(t["up"], t["down"], alpha, m, w_shape, mid=t.get("mid")),
        )

    return build


def _norm():
    def build(seed: int):
        g = torch.Generator().manual_seed(seed)
        t = {"w_norm": randn(g, OUT), "b_norm": randn(g, OUT)}
        return LayerAdapter("norm", t), 1 + randn(g, OUT, scale=0.1), lambda m: oracles.full(t["w_norm"], m)

    return build


def _full(shape_name: str):
    def build(seed: int):
        g = torch.Generator().manual_seed(seed)
        w_shape = SHAPES[shape_name]
        t = {"diff": randn(g, *w_shape, dtype=torch.float16)}
        return LayerAdapter("full", t), randn(g, *w_shape), lambda m: oracles.full(t["diff"], m)

    return build


def _ia3(shape_name: str, on_input: bool):
    def build(seed: int):
        g = torch.Generator().manual_seed(seed)
        w_shape = SHAPES[shape_name]
        dim = IN if on_input else OUT
        vec = randn(g, 1, dim, 1, 1) if len(w_shape) == 4 else randn(g, dim)
        t = {"weight": vec, "on_input": torch.tensor(int(on_input))}
        w0 = randn(g, *w_shape)
        return LayerAdapter("ia3", t), w0, lambda m: oracles.ia3(w0, vec, on_input, m)

    return build


def _glora(shape_name: str, layout: str, alpha):
    def build(seed: int):
        g = torch.Generator().manual_seed(seed)
        w_shape = SHAPES[shape_name]
        r = 2
        w0 = randn(g, *w_shape)
        if layout == "old":
            t = {"a1": randn(g, r, IN), "a2": randn(g, IN, r), "b1": randn(g, r, IN), "b2": randn(g, OUT, r)}
            return (
                LayerAdapter("glora", t, alpha=alpha),
                w0,
                lambda m: oracles.glora_old(w0, t["a1"], t["a2"], t["b1"], t["b2"], alpha, m),
            )
        conv = len(w_shape) == 4
        one = (1, 1) if conv else ()
        t = {"a1": randn(g, IN, r, *one), "a2": randn(g, r, IN, *one), "b1": randn(g, OUT, r, *one)}
        if layout == "tucker":
            t["b2"], t["bm"] = randn(g, r, IN, 1, 1), randn(g, r, r, 3, 3)
        else:
            t["b2"] = randn(g, r, IN, *w_shape[2:])
        return (
            LayerAdapter("glora", t, alpha=alpha),
            w0,
            lambda m: oracles.glora_new(w0, t["a1"], t["a2"], t["b1"], t["b2"], alpha, m, bm=t.get("bm")),
        )

    return build


def _oft(shape_name: str, kind: str, alpha, rescaled: bool):
    def build(seed: int):
        g = torch.Generator().manual_seed(seed)
        w_shape = SHAPES[shape_name]
        w0 = randn(g, *w_shape)
        t: dict[str, torch.Tensor] = {}
        if kind == "boft":
            t["oft_blocks"] = randn(g, 3, 4, 2, 2, scale=0.3)
        elif kind == "oft_diag":
            t["oft_diag"] = randn(g, 2, 4, 4)
        else:
            t["oft_blocks"] = randn(g, 2, 4, 4, scale=0.3)
        if rescaled:
            t["rescale"] = 1 + randn(g, OUT, *[1] * (len(w_shape) - 1), scale=0.2)
        rescale = t.get("rescale")
        if kind == "boft":
            want = lambda m: oracles.boft(w0, t["oft_blocks"], alpha, m, rescale)  # noqa: E731
        elif kind == "oft_diag":
            want = lambda m: oracles.diag_oft(w0, t["oft_diag"], None, m, rescale, is_r=True)  # noqa: E731
        else:
            want = lambda m: oracles.diag_oft(w0, t["oft_blocks"], alpha, m, rescale)  # noqa: E731
        return LayerAdapter(kind, t, alpha=alpha), w0, want

    return build


CASES = {}
for _s in SHAPES:
    CASES[f"loha-{_s}"] = _loha(_s, False, 1.0)
    CASES[f"lokr-{_s}"] = _lokr(_s, "w2_factored", 1.5)
    CASES[f"lokr-both-full-{_s}"] = _lokr(_s, "both_full", 5.0)
    CASES[f"lokr-w1-factored-{_s}"] = _lokr(_s, "w1_factored", 0.5)
    CASES[f"full-{_s}"] = _full(_s)
    CASES[f"ia3-out-{_s}"] = _ia3(_s, False)
    CASES[f"ia3-in-{_s}"] = _ia3(_s, True)
    CASES[f"glora-new-{_s}"] = _glora(_s, "new", 3.0)
    CASES[f"oft-{_s}"] = _oft(_s, "oft", None, False)
    CASES[f"oft-constrained-rescaled-{_s}"] = _oft(_s, "oft", 1e-3, True)
    CASES[f"boft-{_s}"] = _oft(_s, "boft", None, True)
    CASES[f"boft-constrained-{_s}"] = _oft(_s, "boft", 1e-3, False)
    CASES[f"oft_diag-{_s}"] = _oft(_s, "oft_diag", None, _s == "conv3x3")
for _s in ("linear", "conv1x1"):
    CASES[f"glora-old-{_s}"] = _glora(_s, "old", 2.0)
    CASES[f"lora-{_s}"] = _lora(_s, False, 2.0)
CASES["lora-tucker"] = _lora("conv3x3", True, 1.0)
CASES["norm"] = _norm()
CASES["loha-tucker"] = _loha("conv3x3", True, 0.5)
CASES["loha-no-alpha"] = _loha("linear", False, None)
CASES["lokr-tucker"] = _lokr("conv3x3", "tucker", 1.0)
CASES["glora-tucker"] = _glora("conv3x3", "tucker", 1.0)
CASES["glora-alpha-zero"] = _glora("linear", "new", 0.0)
