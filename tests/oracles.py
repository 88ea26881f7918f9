"""Independent test oracle: every delta written plainly from FORMATS.md §9–§10 with einsum and explicit loops.

Nothing here imports ``lora_ext.algorithms``; each function takes plain float64 tensors and returns ΔW (float64) so
that its rounding differs from the code under test. Shapes follow FORMATS.md §1 notation.
"""

from __future__ import annotations

import torch


def f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64)


def scale_of(alpha: float | None, rank: int) -> float:
    """s = α/r; 1 when α is missing or zero (§10.3)."""
    return 1.0 if alpha is None or alpha == 0 else alpha / rank


# --- §9.1 / §9.2 LoRA, LoCon, Tucker, DyLoRA ------------------------------------------------------------------------


def lora(up, down, alpha, m, w_shape, mid=None, dyn=None):
    """ΔW = m·s·U·D (with Tucker core when ``mid``); dyn keeps the first ranks with s = α/r_max."""
    up, down = f64(up), f64(down)
    r = down.shape[0]
    s = scale_of(alpha, r)
    if dyn is not None:
        up, down = up[:, :dyn], down[:dyn]
        mid = None if mid is None else mid[:dyn, :dyn]
    u = up.reshape(up.shape[0], up.shape[1])  # [out, r] (drops trailing 1×1)
    if mid is not None:
        mid = f64(mid)
        d = down.reshape(down.shape[0], down.shape[1])
        delta = torch.einsum("oa,abyx,bi->oiyx", u, mid, d)
    else:
        rank = down.shape[0]
        d = down.reshape(rank, -1)
        delta = torch.zeros(u.shape[0], d.shape[1], dtype=torch.float64)
        for a in range(rank):
            delta += torch.outer(u[:, a], d[a])
    return (m * s * delta).reshape(w_shape)


def _mat(t: torch.Tensor) -> torch.Tensor:
    t = f64(t)
    return t.reshape(t.shape[0], -1)


def _tucker(core, a, b):
    """M[p,q,y,x] = Σ_{i,j} core[i,j,y,x]·a[i,p]·b[j,q] (§9.3), written as explicit sums over i, j."""
    core, a, b = f64(core), _mat(a), _mat(b)
    out = torch.zeros(a.shape[1], b.shape[1], *core.shape[2:], dtype=torch.float64)
    for i in range(core.shape[0]):
        for j in range(core.shape[1]):
            out += core[i, j][None, None] * torch.outer(a[i], b[j]).reshape(
                a.shape[1], b.shape[1], *[1] * (core.dim() - 2)
            )
    return out


# --- §9.3 LoHa ---------------------------------------------------------------------------------------------------------


def loha(w1a, w1b, w2a, w2b, alpha, m, w_shape, t1=None, t2=None):
    """ΔW = m·s·(W1a·W1b) ⊙ (W2a·W2b), or the Tucker form; r = hada_w1_b.shape[0]."""
    s = scale_of(alpha, w1b.shape[0])
    if t1 is not None:
        prod = _tucker(t1, w1a, w1b) * _tucker(t2, w2a, w2b)
    else:
        prod = (_mat(w1a) @ _mat(w1b)) * (_mat(w2a) @ _mat(w2b))
    return (m * s * prod).reshape(w_shape)


# --- §9.4 LoKr ---------------------------------------------------------------------------------------------------------


def _kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kronecker product of a 2-D ``a`` with a 2-D or 4-D ``b`` by explicit block placement."""
    rows, cols = b.shape[0], b.shape[1]
    out = torch.zeros(a.shape[0] * rows, a.shape[1] * cols, *b.shape[2:], dtype=torch.float64)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i * rows : (i + 1) * rows, j * cols : (j + 1) * cols] = a[i, j] * b
    return out


def lokr(alpha, m, w_shape, w1=None, w1a=None, w1b=None, w2=None, w2a=None, w2b=None, t2=None):
    """ΔW = m·s·reshape(W1 ⊗ W2); r from w2_b if W2 factored else w1_b; both full → s = 1."""
    W1 = f64(w1) if w1 is not None else _mat(w1a) @ _mat(w1b)
    if w2 is not None:
        W2 = f64(w2)
    elif t2 is not None:
        W2 = _tucker(t2, w2a, w2b)
    else:
        W2 = _mat(w2a) @ _mat(w2b)
    if w2b is not None:
        s = scale_of(alpha, w2b.shape[0])
    elif w1b is not None:
        s = scale_of(alpha, w1b.shape[0])
    else:
        s = 1.0
    return (m * s * _kron(W1, W2)).reshape(w_shape)


# --- §9.5 / §9.6 full and norm -----------------------------------------------------------------------------------------


def full(diff, m):
    """ΔW = m·diff (also Δb = m·diff_b, Δγ = m·w_norm, Δβ = m·b_norm)."""
    return m * f64(diff)


# --- §9.7 IA3 ----------------------------------------------------------------------------------------------------------


def ia3(w0, vec, on_input, m):
    """ΔW = m·W ⊙ B(w), B along the input axis when on_input, else the output axis; loop over that axis."""
    w0, vec = f64(w0), f64(vec).reshape(-1)
    out = torch.zeros_like(w0)
    for c in range(vec.numel()):
        if on_input:
            out[:, c] = m * w0[:, c] * vec[c]
        else:
            out[c] = m * w0[c] * vec[c]
    return out


# --- §9.8 GLoRA --------------------------------------------------------------------------------------------------------


def glora_old(w0, a1, a2, b1, b2, alpha, m):
    """Old layout: ΔW = m·s·(b2·b1 + flat(W)·a2·a1), r = a1.shape[0]."""
    w = f64(w0)
    s = scale_of(alpha, a1.shape[0])
    d = _mat(b2) @ _mat(b1) + (w.reshape(w.shape[0], -1) @ _mat(a2)) @ _mat(a1)
    return (m * s * d).reshape(w.shape)


def glora_new(w0, a1, a2, b1, b2, alpha, m, bm=None):
    """New layout: ΔW = m·s·(W·a1·a2 + B), W·a1 contracting the input axis; B = b1·b2 or the bm Tucker form."""
    w = f64(w0)
    s = scale_of(alpha, a2.shape[0])
    wa = torch.einsum("oi...,ir,rj->oj...", w, _mat(a1), _mat(a2))
    if bm is not None:
        b = torch.einsum("pq...,ip,qj->ij...", f64(bm), _mat(b1), _mat(b2))
    else:
        b = (_mat(b1) @ _mat(b2)).reshape(w.shape)
    return m * s * (wa + b)


# --- §9.9 – §9.11 OFT family -------------------------------------------------------------------------------------------


def cayley(blocks, alpha, out):
    """R = (I + Q)(I − Q)⁻¹, Q = B − Bᵀ scaled down to ‖Q‖_F = α·out (all blocks) when α > 0 and it is larger."""
    b = f64(blocks)
    q = b - b.transpose(-1, -2)
    c = 0.0 if alpha is None else alpha * out
    norm = float(torch.sqrt((q * q).sum()))
    if c > 0 and norm > c:
        q = q * (c / norm)
    eye = torch.eye(b.shape[-1], dtype=torch.float64)
    return (eye + q) @ torch.linalg.inv(eye - q)


def _rescaled(wp, rescale):
    if rescale is None:
        return wp
    return f64(rescale).reshape(wp.shape[0], *[1] * (wp.dim() - 1)) * wp


def diag_oft(w0, blocks, alpha, m, rescale=None, is_r=False):
    """ΔW = m·(rescale ⊙ W' − W) with W'_k = R_kᵀ·W_k over row blocks (oft_diag: R stored as is)."""
    w = f64(w0)
    R = f64(blocks) if is_r else cayley(blocks, alpha, w.shape[0])
    b = R.shape[-1]
    flat = w.reshape(w.shape[0], -1)
    wp = torch.zeros_like(flat)
    for k in range(R.shape[0]):
        wp[k * b : (k + 1) * b] = R[k].T @ flat[k * b : (k + 1) * b]
    return m * (_rescaled(wp.reshape(w.shape), rescale) - w)


def boft(w0, blocks, alpha, m, rescale=None):
    """ΔW = m·(rescale ⊙ W' − W); W' from M butterfly stages with explicit row permutations and R (not Rᵀ)."""
    w = f64(w0)
    R = cayley(blocks, alpha, w.shape[0])
    stages, n, b = R.shape[0], R.shape[1], R.shape[2]
    x = w.reshape(w.shape[0], -1).clone()
    for i in range(stages):
        k = 2**i * (b // 2)
        # row (c, g, kk) of the (c, 2, k) view moves to position (c, kk, g)
        perm = [0] * x.shape[0]
        for row in range(x.shape[0]):
            c, rem = divmod(row, 2 * k)
            g, kk = divmod(rem, k)
            perm[c * 2 * k + kk * 2 + g] = row
        y = x[perm]
        for j in range(n):
            y[j * b : (j + 1) * b] = R[i, j] @ y[j * b : (j + 1) * b]
        x = torch.empty_like(y)
        x[perm] = y
    return m * (_rescaled(x.reshape(w.shape), rescale) - w)


# --- §9.12 DoRA --------------------------------------------------------------------------------------------------------


def dora(w0, scaled_delta, g, axis, m):
    """ΔW = m·(W_d − W), W_d = g ⊙ W_c/‖W_c‖_axis, W_c = W + s·ΔW_raw; norms by explicit loops (ε ignored)."""
    w = f64(w0)
    wc = w + f64(scaled_delta)
    g = f64(g).reshape(-1)
    wd = torch.zeros_like(wc)
    for c in range(g.numel()):
        if axis == "out":
            wd[c] = g[c] * wc[c] / torch.sqrt((wc[c] ** 2).sum())
        else:
            wd[:, c] = g[c] * wc[:, c] / torch.sqrt((wc[:, c] ** 2).sum())
    return m * (wd - w)
