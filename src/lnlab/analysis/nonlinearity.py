"""Hessian-based nonlinearity of LN and LN-G, in closed form and by autograd.

The measure (reconstructed, ``docs/papers/ni_nonlinearity.md`` §3.2) is

    H(f; x) = sum_i ‖∇²_x f_i(x)‖_F²

the squared Frobenius norm of every output's Hessian: zero exactly for affine f. For one LN
group of size n (eps = 0, no affine), with r = ‖x - mean(x)‖ and biased variance s² = r²/n:

    ‖∇²f_i‖_F² = n (2 - 2/n + (n - 4) ẑ_i²) / r⁴,     ẑ = (x - mean) / r
    H          = n (3n - 6) / r⁴ = (3 - 6/n) / s⁴
    ‖J‖_F²     = n (n - 2) / r² = (n - 2) / s²         (the near-linear part)

LN-G with g groups of size n = d/g is block-diagonal, so H and ‖J‖_F² add over groups. If all
groups share the variance of the whole vector, H(LN-G) = g (3 - 6g/d) / s⁴ ≈ g · H(LN) while
‖J‖_F² = (d - 2g) / s² barely moves: group partition amplifies curvature, not slope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lnlab.errors import LnlabError

__all__ = [
    "CurvePoint",
    "autograd_hessian_measure",
    "autograd_per_output",
    "equal_variance_measure",
    "group_curve",
    "hessian_measure",
    "jacobian_measure",
    "ln_g",
    "network_hessian_measure",
    "per_output_measure",
    "random_feature_accuracy",
]


def _groups(x: Tensor, groups: int) -> Tensor:
    d = x.shape[-1]
    if groups < 1 or d % groups:
        raise LnlabError(f"groups={groups} must divide the feature size {d}")
    n = d // groups
    if n < 2:
        raise LnlabError("groups of size 1 are constant (LN of one number is 0)")
    return x.reshape(*x.shape[:-1], groups, n)


def ln_g(x: Tensor, groups: int = 1) -> Tensor:
    """LN-G with eps = 0 and no affine, via lnlab's composite (twice-differentiable) path."""
    from lnlab.norms import group_layer_norm

    _groups(x, groups)
    return group_layer_norm(x, x.shape[-1], groups, None, None, 0.0, impl="composite")


def hessian_measure(x: Tensor, groups: int = 1) -> Tensor:
    """Closed-form H(LN-G; x) per row of x (..., d): sum_k (3 - 6/n) / s_k⁴."""
    xg = _groups(x, groups)
    n = xg.shape[-1]
    var = xg.var(dim=-1, unbiased=False)
    return ((3.0 - 6.0 / n) / var**2).sum(dim=-1)


def jacobian_measure(x: Tensor, groups: int = 1) -> Tensor:
    """Closed-form ‖J‖_F² of LN-G per row: sum_k (n - 2) / s_k²."""
    xg = _groups(x, groups)
    n = xg.shape[-1]
    var = xg.var(dim=-1, unbiased=False)
    return ((n - 2.0) / var).sum(dim=-1)


def per_output_measure(x: Tensor, groups: int = 1) -> Tensor:
    """Closed-form ‖∇²f_i‖_F² for every output i of LN-G at one point x (d,) -> (d,)."""
    if x.ndim != 1:
        raise LnlabError("per_output_measure takes one point x of shape (d,)")
    xg = _groups(x, groups)
    n = xg.shape[-1]
    c = xg - xg.mean(dim=-1, keepdim=True)
    r = c.norm(dim=-1, keepdim=True)
    zh = c / r
    return (n * (2.0 - 2.0 / n + (n - 4.0) * zh**2) / r**4).reshape(-1)


def equal_variance_measure(dim: int, groups: int, var: float = 1.0) -> float:
    """H(LN-G) under the mild assumption that every group has variance ``var``."""
    if groups < 1 or dim % groups:
        raise LnlabError(f"groups={groups} must divide dim={dim}")
    return groups * (3.0 - 6.0 * groups / dim) / var**2


def autograd_per_output(f, x: Tensor) -> Tensor:
    """‖∇²f_i(x)‖_F² for each output of f at one point x (d,), by autograd (use float64)."""
    if x.ndim != 1:
        raise LnlabError("autograd_per_output takes one point x of shape (d,)")

    def jac(z: Tensor) -> Tensor:
        return torch.autograd.functional.jacobian(f, z, create_graph=True)

    H = torch.autograd.functional.jacobian(jac, x)  # (out, d, d)
    return (H**2).sum(dim=(-1, -2)).reshape(-1)


def autograd_hessian_measure(f, x: Tensor) -> float:
    """H(f; x) = sum_i ‖∇²f_i(x)‖_F² by autograd; the independent reference for the closed
    form (torch.autograd.functional.hessian on each output, float64 recommended)."""
    if x.ndim != 1:
        raise LnlabError("autograd_hessian_measure takes one point x of shape (d,)")
    out = f(x)
    total = 0.0
    for i in range(out.numel()):
        Hi = torch.autograd.functional.hessian(lambda z, i=i: f(z).reshape(-1)[i], x)
        total += float((Hi**2).sum())
    return total


def network_hessian_measure(model: torch.nn.Module, X: Tensor, max_points: int = 64) -> float:
    """Mean of H(f; x) over up to ``max_points`` rows of X for any model (logits as outputs).

    Cost is one Hessian per output and point: keep the input dimension modest (<= a few
    hundred). The model runs in float64 on a copy so the measure is not rounding noise, with
    lnlab norms switched to their composite path (same second derivatives, computed directly).
    """
    import copy

    m = copy.deepcopy(model).double().eval()
    for mod in m.modules():
        # second derivatives through the fused ops are exact, but they come from re-running
        # the composite formula inside the op's double backward: the composite path gives
        # the same Hessian without that detour
        if hasattr(mod, "impl"):
            mod.impl = "composite"
    xs = X[:max_points].detach().double()
    vals = []
    for x in xs:
        H = torch.autograd.functional.jacobian(
            lambda z: torch.autograd.functional.jacobian(
                lambda w: m(w[None])[0], z, create_graph=True), x)
        vals.append(float((H**2).sum()))
    return sum(vals) / len(vals)


@dataclass(frozen=True)
class CurvePoint:
    """H and ‖J‖² of LN-G at one group number, over Gaussian inputs."""

    groups: int
    group_size: int
    median_h: float
    mean_h: float
    equal_variance_h: float
    ratio_to_ln: float  # median_h / median_h at groups = 1
    median_jac: float


def group_curve(
    dim: int = 64,
    groups: tuple[int, ...] = (1, 2, 4, 8, 16),
    samples: int = 4000,
    seed: int = 0,
) -> list[CurvePoint]:
    """Growth of H(LN-G; x) with g for x ~ N(0, I_dim): medians (means have heavy tails for
    groups of <= 5 features: E[1/s⁴] diverges), plus the equal-variance formula."""
    g0 = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, dim, generator=g0, dtype=torch.float64)
    pts = []
    base = None
    for g in groups:
        h = hessian_measure(x, g)
        j = jacobian_measure(x, g)
        med = float(h.median())
        if base is None:
            base = med if g == 1 else float(hessian_measure(x, 1).median())
        pts.append(CurvePoint(g, dim // g, med, float(h.mean()),
                              equal_variance_measure(dim, g, 1.0), med / base,
                              float(j.median())))
    if not all(math.isfinite(p.median_h) for p in pts):
        raise AssertionError("non-finite H: inputs with a constant group")
    return pts


def _lstsq_accuracy(F: Tensor, y: Tensor, num_classes: int) -> float:
    """Training accuracy of the least-squares one-hot readout (with bias) on features F."""
    A = torch.cat([F, torch.ones(len(F), 1, dtype=F.dtype)], dim=1)
    T = torch.nn.functional.one_hot(y, num_classes).to(F.dtype)
    W = torch.linalg.lstsq(A, T, driver="gelsd").solution
    return float(((A @ W).argmax(dim=1) == y).double().mean())


def random_feature_accuracy(
    X: Tensor,
    y: Tensor,
    groups: int | None,
    width: int = 256,
    seed: int = 0,
) -> float:
    """Random-feature capacity proxy (notes, claim 8): a random Linear(d→width) without bias,
    then LN-G with ``groups`` groups (``None``: no norm, i.e. the linear readout baseline),
    then a least-squares readout; returns its training accuracy on (X, y).

    A fixed random layer isolates what the normalisation adds: without it the features are a
    linear image of X and the readout can do no better than a linear classifier on X.
    """
    X = torch.as_tensor(X, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.long)
    if X.ndim != 2 or len(X) != len(y):
        raise LnlabError(f"X (N, d) and y (N,) must match: {tuple(X.shape)} vs {tuple(y.shape)}")
    k = int(y.max()) + 1
    if groups is None:
        return _lstsq_accuracy(X, y, k)
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(X.shape[1], width, generator=g, dtype=torch.float64) / math.sqrt(X.shape[1])
    F = ln_g(X @ W, groups)
    return _lstsq_accuracy(F, y, k)
