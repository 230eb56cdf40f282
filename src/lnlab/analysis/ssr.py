"""SSR and its linear-invariant lower bound LSSR: a test that a layer is *not* linear.

Definitions (Fisher-type reconstruction of Ni et al. 2024, ``docs/papers/ni_nonlinearity.md``
§1.3):
for labelled points x_i with class means mu_c, global mean mu and class sizes n_c,

    S_W = sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T        within-class scatter
    S_B = sum_c n_c (mu_c - mu)(mu_c - mu)^T                    between-class scatter
    SSR(a)  = a^T S_W a / a^T S_B a                              (small = separable along a)
    LSSR    = min_a SSR(a) = 1 / lambda_max(S_W^+ S_B)

with LSSR = 0 when some a has a^T S_W a = 0 < a^T S_B a, and LSSR = inf when S_B = 0.
A projection a of an affine image Wx + b is the projection W^T a of x plus a constant, so no
affine map of any shape can lower LSSR; a Linear+LN layer can, which is the point of the demo
functions below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lnlab.errors import LnlabError

__all__ = [
    "LinearCheck",
    "RandomLNCheck",
    "lssr",
    "lssr_binary",
    "lssr_per_layer",
    "random_linear_check",
    "random_ln_layer_check",
    "scatter_matrices",
    "ssr",
    "xor_example",
]

_REL_TOL = 1e-10


def _np(a: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _check(X: np.ndarray | Tensor, y: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    Xn = _np(X)
    if Xn.ndim == 1:
        Xn = Xn[:, None]
    yn = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y).reshape(-1)
    if Xn.ndim != 2 or len(Xn) != len(yn) or len(yn) == 0:
        raise LnlabError(f"X (m, d) and y (m,) must match: got {Xn.shape} and {yn.shape}")
    return Xn, yn


def scatter_matrices(X: np.ndarray | Tensor, y: np.ndarray | Tensor) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """(S_W, S_B) of the labelled points, float64."""
    Xn, yn = _check(X, y)
    mu = Xn.mean(axis=0)
    d = Xn.shape[1]
    Sw = np.zeros((d, d))
    Sb = np.zeros((d, d))
    for c in np.unique(yn):
        Xc = Xn[yn == c]
        mc = Xc.mean(axis=0)
        D = Xc - mc
        Sw += D.T @ D
        Sb += len(Xc) * np.outer(mc - mu, mc - mu)
    return Sw, Sb


def ssr(X: np.ndarray | Tensor, y: np.ndarray | Tensor, a: np.ndarray | Tensor) -> float:
    """SSR along the direction a (inf when the class means do not differ along a)."""
    Sw, Sb = scatter_matrices(X, y)
    av = _np(a).reshape(-1)
    if av.shape[0] != Sw.shape[0]:
        raise LnlabError(f"direction has {av.shape[0]} entries, the points have {Sw.shape[0]}")
    num = float(av @ Sw @ av)
    den = float(av @ Sb @ av)
    scale = float(np.trace(Sw) + np.trace(Sb)) * float(av @ av)
    if den <= _REL_TOL * scale:
        return math.inf if num > 0 or den <= 0 else 0.0
    return num / den


def lssr(X: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """min_a SSR(a) = 1 / lambda_max(S_W^+ S_B), with the 0 and inf cases made exact.

    S_B is positive semi-definite, so if its quadratic form vanishes on null(S_W) it vanishes
    there as a map too, and the problem reduces to range(S_W), where S_W is invertible.
    """
    Sw, Sb = scatter_matrices(X, y)
    scale = float(np.trace(Sw) + np.trace(Sb))
    if scale == 0.0 or np.abs(Sb).max() <= _REL_TOL * scale:
        return math.inf
    w, V = np.linalg.eigh(Sw)
    null = w <= _REL_TOL * scale
    Vn = V[:, null]
    if Vn.shape[1] and np.abs(Vn.T @ Sb @ Vn).max() > _REL_TOL * scale:
        return 0.0
    Vr = V[:, ~null]
    wr = w[~null]
    B = (Vr.T @ Sb @ Vr) / np.sqrt(np.outer(wr, wr))
    lam = float(np.linalg.eigvalsh(B).max())
    return math.inf if lam <= 0 else 1.0 / lam


def lssr_binary(X: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """Two-class closed form 1 / ((n1 n2 / n) Δ^T S_W^+ Δ): an independent check of ``lssr``."""
    Xn, yn = _check(X, y)
    cls = np.unique(yn)
    if len(cls) != 2:
        raise LnlabError(f"lssr_binary needs exactly two classes, got {len(cls)}")
    A, B = Xn[yn == cls[0]], Xn[yn == cls[1]]
    Sw, _ = scatter_matrices(Xn, yn)
    delta = A.mean(axis=0) - B.mean(axis=0)
    q = float(delta @ np.linalg.pinv(Sw, rcond=1e-12, hermitian=True) @ delta)
    k = len(A) * len(B) / len(Xn)
    return math.inf if q <= 0 else 1.0 / (k * q)


# --------------------------------------------------------------------------------------------
# Demonstrations
# --------------------------------------------------------------------------------------------


def xor_example() -> dict[str, float]:
    """XOR: LSSR = inf for the input and every affine image; one Linear(2→3)+LN makes it finite.

    The layer is W = [[1,0],[0,1],[0,0]], b = (0, 0, 0.5) followed by an lnlab LayerNorm
    (no affine, eps = 0); the numbers come from running that module in float64.
    """
    from lnlab.norms import make_norm

    X = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    y = np.array([0, 0, 1, 1])
    lin = torch.nn.Linear(2, 3, dtype=torch.float64)
    norm = make_norm("layernorm_simple:eps=0", 3, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        lin.bias.copy_(torch.tensor([0.0, 0.0, 0.5]))
        H = lin(X)
        Z = norm(H)
    return {"input": lssr(X, y), "linear_image": lssr(H, y), "after_ln": lssr(Z, y)}


@dataclass(frozen=True)
class LinearCheck:
    """Random affine maps T: how often LSSR(T X) < LSSR(X) (never, up to rounding)."""

    trials: int
    violations: int
    min_ratio: float  # min over maps of LSSR(T X) / LSSR(X)


def random_linear_check(
    X: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    trials: int = 200,
    out_dims: tuple[int, ...] = (1, 2, 3, 5, 10),
    seed: int = 0,
    rel_tol: float = 1e-8,
) -> LinearCheck:
    """Apply random affine maps of each output size (random rank too) and compare LSSR."""
    Xn, yn = _check(X, y)
    rng = np.random.default_rng(seed)
    base = lssr(Xn, yn)
    viol = 0
    ratio = math.inf
    d = Xn.shape[1]
    for t in range(trials):
        k = out_dims[t % len(out_dims)]
        rank = int(rng.integers(1, min(k, d) + 1))
        W = rng.standard_normal((k, rank)) @ rng.standard_normal((rank, d))
        b = rng.standard_normal(k)
        val = lssr(Xn @ W.T + b, yn)
        if val < base * (1 - rel_tol):
            viol += 1
        if base > 0 and math.isfinite(base):
            ratio = min(ratio, val / base)
    return LinearCheck(trials, viol, ratio)


@dataclass(frozen=True)
class RandomLNCheck:
    """Random Linear(d→width)+LN layers: how often they *lower* LSSR below the input's."""

    trials: int
    below: int
    input_lssr: float
    min_lssr: float

    @property
    def fraction_below(self) -> float:
        return self.below / self.trials if self.trials else 0.0


def random_ln_layer_check(
    X: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    trials: int = 200,
    width: int = 3,
    seed: int = 0,
    eps: float = 0.0,
) -> RandomLNCheck:
    """Draw Gaussian Linear(d→width) layers with Gaussian bias, apply an lnlab LayerNorm."""
    from lnlab.norms import make_norm

    Xn, yn = _check(X, y)
    Xt = torch.from_numpy(Xn)
    g = torch.Generator().manual_seed(seed)
    norm = make_norm(f"layernorm_simple:eps={eps!r}", width, dtype=torch.float64)
    base = lssr(Xn, yn)
    below = 0
    best = math.inf
    for _ in range(trials):
        W = torch.randn(width, Xn.shape[1], generator=g, dtype=torch.float64)
        b = torch.randn(width, generator=g, dtype=torch.float64)
        with torch.no_grad():
            Z = norm(Xt @ W.T + b)
        val = lssr(Z, yn)
        below += val < base
        best = min(best, val)
    return RandomLNCheck(trials, below, base, best)


def lssr_per_layer(model: torch.nn.Module, X: np.ndarray | Tensor,
                   y: np.ndarray | Tensor) -> list[float]:
    """LSSR of the input and of every block output of a model with a ``trace`` method
    (``lnlab.analysis.lnnet.LNNet``): a linear net could never make this go down."""
    if not hasattr(model, "trace"):
        raise LnlabError("lssr_per_layer needs a model with .trace(x) (e.g. an LNNet)")
    p = next(model.parameters())
    Xt = torch.as_tensor(_np(X), dtype=p.dtype)
    return [lssr(h, y) for h in model.trace(Xt)]
