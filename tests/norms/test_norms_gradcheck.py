"""torch.autograd.gradcheck of every variant through both code paths (float64).

gradcheck compares the analytic backward with finite differences of the *forward*. The detached
variants (DetachNorm, partial detaches, AdaNorm) have, by design, a backward that is not the
derivative of their forward: the forward equals LayerNorm-simple, the backward drops the mu /
sigma / phi terms. gradcheck on x would (correctly) fail for them, so:

- the undetached variants (LN, LN-simple, LN-G, RMSNorm) are gradchecked in x, gain and bias;
- the detached variants are gradchecked in gain and bias only (the detach touches only the path
  to x, so those derivatives are still exact), and their x-Jacobian is compared with finite
  differences of a *surrogate* forward in which the detached statistics are frozen at the
  evaluation point (e.g. (x - mu(x0)) / sigma(x0) for DetachNorm). That surrogate's derivative
  at x0 is precisely what the detached backward claims to compute. The closed forms of Xu et al.
  are checked separately in test_norms_xu.py.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from lnlab.norms import normalize

from ._reference import VARIANTS, Variant, dim_ok, make_params, require

DIM, SHAPE, EPS = 12, (2, 3, 12), 1e-5


def _x(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=gen, dtype=torch.float64) * 1.5 + 0.7


# detached variants without gain/bias have nothing exact to gradcheck: see the surrogate test
GRADCHECKED = [v for v in VARIANTS if dim_ok(v, DIM) and (v.undetached or v.affine)]


@pytest.mark.parametrize("v", GRADCHECKED, ids=lambda v: v.id)
def test_gradcheck(v: Variant, impl: str) -> None:
    kw = v.normalize_kwargs(DIM)
    w, b = make_params(v, (DIM,), torch.float64, seed=1)
    x = _x(0).requires_grad_(v.undetached)
    params = [p.requires_grad_(True) for p in (w, b) if p is not None]
    inputs = (x, w, b)
    assert v.undetached or params

    def f(x, w, b):
        return normalize(x, DIM, w, b, EPS, impl=impl, **kw)

    assert gradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


def _surrogate(x: torch.Tensor, x0: torch.Tensor, kw: dict) -> torch.Tensor:
    """The forward with the detached quantities frozen at x0 (plain differentiable torch ops)."""
    g = kw.get("groups", 1)
    xs = x.reshape(*x.shape[:-1], g, DIM // g)
    x0s = x0.reshape(*x0.shape[:-1], g, DIM // g)

    def stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = t.mean(-1, keepdim=True)
        return mu, ((t - mu) ** 2).mean(-1, keepdim=True).add(EPS).sqrt()

    mu, sigma = stats(xs)
    mu0, sigma0 = stats(x0s)
    y = (xs - (mu0 if kw.get("detach_mean") else mu)) / (sigma0 if kw.get("detach_std") else sigma)
    if kw.get("ada"):
        y0 = (x0s - mu0) / sigma0
        y = kw["C"] * (1 - kw["k"] * y0) * y
    return y.reshape(x.shape)


@pytest.mark.parametrize("v", [v for v in VARIANTS if not v.undetached and not v.affine],
                         ids=lambda v: v.id)
def test_detached_jacobian_matches_frozen_surrogate(v: Variant, impl: str) -> None:
    kw = v.normalize_kwargs(DIM)
    x0 = _x(3)
    jac = torch.autograd.functional.jacobian(
        lambda x: normalize(x, DIM, None, None, EPS, impl=impl, **kw), x0
    )
    # central differences of the frozen-statistics surrogate, one input coordinate at a time
    h = 1e-6
    num = torch.empty_like(jac)
    flat = x0.reshape(-1)
    for j in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[j] = h
        fp = _surrogate((flat + e).reshape(SHAPE), x0, kw)
        fm = _surrogate((flat - e).reshape(SHAPE), x0, kw)
        num.reshape(*SHAPE, -1)[..., j] = (fp - fm) / (2 * h)
    torch.testing.assert_close(jac, num, rtol=1e-6, atol=1e-7)
    # and the surrogate really differs from the undetached derivative (the test can fail)
    full = torch.autograd.functional.jacobian(
        lambda x: normalize(x, DIM, None, None, EPS, impl=impl), x0
    )
    assert (jac - full).abs().max() > 1e-3


@pytest.mark.parametrize("v", [v for v in GRADCHECKED if v.undetached], ids=lambda v: v.id)
def test_double_backward(v: Variant, impl: str) -> None:
    """Second derivatives (gradient penalties, HVPs, Hessians) work on both paths: the fused
    kernel's backward switches to the differentiable composite formula under create_graph."""
    kw = v.normalize_kwargs(DIM)
    w, b = make_params(v, (DIM,), torch.float64, seed=2)
    x = _x(1)[:1, :2].clone().requires_grad_(True)
    params = tuple(p.requires_grad_(True) for p in (w, b) if p is not None)

    def f(x, *p):
        ws = p[0] if w is not None else None
        bs = p[-1] if b is not None else None
        return normalize(x, DIM, ws, bs, EPS, impl=impl, **kw)

    assert gradgradcheck(f, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("v", [v for v in VARIANTS if dim_ok(v, DIM)], ids=lambda v: v.id)
def test_kernel_hessian_equals_composite(v: Variant) -> None:
    """Regression: Hessians through the fused kernel once came out as silent zeros."""
    require("kernel")
    kw = v.normalize_kwargs(DIM)
    w, b = make_params(v, (DIM,), torch.float64, seed=3)
    x0 = _x(4)[:2].clone()

    def f(x, impl):
        return normalize(x, DIM, w, b, EPS, impl=impl, **kw).pow(3).sum()

    hk = torch.autograd.functional.hessian(lambda x: f(x, "kernel"), x0)
    hc = torch.autograd.functional.hessian(lambda x: f(x, "composite"), x0)
    assert hc.abs().max() > 1e-3 or v.groups == "dim"  # one feature per group: y == 0
    torch.testing.assert_close(hk, hc, rtol=1e-9, atol=1e-10)
