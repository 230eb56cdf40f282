"""Xu et al. (2019) backward-gradient facts A1-A4 as exact float64 tests (eps = 0).

See ../shared/research/xu_adanorm_and_weight_decay.md sections 1.4, 1.5 and 7. Notation per row:
y = (x - mu) / sigma (biased sigma), g the upstream gradient, g_bar its mean, D_g its (biased)
variance, m = mean(g * y). Closed forms of the input gradient:
    nothing detached  b = (g - g_bar - m y) / sigma
    mean detached     c = (g - m y) / sigma
    std detached      d = (g - g_bar) / sigma
    both detached     a = g / sigma
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnlab.norms import normalize

ROWS, H = 6, 16
DETACH = {
    "none": {},
    "mean": {"detach_mean": True},
    "std": {"detach_std": True},
    "both": {"detach_mean": True, "detach_std": True},
}


def _data(rows: int = ROWS, h: int = H, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, h, generator=gen, dtype=torch.float64) * 2.0 + 1.5
    g = torch.randn(rows, h, generator=gen, dtype=torch.float64) + 0.4  # nonzero mean on purpose
    return x, g


def _row_stats(x: torch.Tensor, g: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-row quantities of section 1.4, computed in numpy from the raw inputs."""
    X, Gr = x.numpy(), g.numpy()
    mu = X.mean(1, keepdims=True)
    sigma = np.sqrt(((X - mu) ** 2).mean(1, keepdims=True))
    y = (X - mu) / sigma
    gbar = Gr.mean(1, keepdims=True)
    return {"mu": mu, "sigma": sigma, "y": y, "g": Gr, "gbar": gbar,
            "Dg": ((Gr - gbar) ** 2).mean(1, keepdims=True),
            "m": (Gr * y).mean(1, keepdims=True)}


def _dx(x: torch.Tensor, g: torch.Tensor, impl: str, w: torch.Tensor | None = None,
        **kw) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    out = normalize(xr, x.shape[-1], w, None, 0.0, impl=impl, **kw)
    (dx,) = torch.autograd.grad(out, xr, g)
    return dx.clone()


@pytest.mark.parametrize("which", DETACH)
def test_a1_gradient_mean_and_variance_closed_forms(which: str, impl: str) -> None:
    x, g = _data()
    s = _row_stats(x, g)
    dx = _dx(x, g, impl, **DETACH[which]).numpy()
    sig, gbar, Dg, m, y = s["sigma"], s["gbar"], s["Dg"], s["m"], s["y"]
    mean_detached = which in ("mean", "both")
    std_detached = which in ("std", "both")
    exp_mean = gbar / sig if mean_detached else np.zeros_like(gbar)
    exp_var = Dg / sig**2 if std_detached else (Dg - m**2) / sig**2
    got_mean = dx.mean(1, keepdims=True)
    got_var = ((dx - got_mean) ** 2).mean(1, keepdims=True)
    np.testing.assert_allclose(got_mean, exp_mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got_var, exp_var, rtol=0, atol=1e-10)
    assert (got_var <= Dg / sig**2 + 1e-12).all()  # never more spread than g / sigma
    # the vectors themselves, not just their moments
    exp = s["g"] - (0 if mean_detached else gbar) - (0 if std_detached else m * y)
    np.testing.assert_allclose(dx, exp / sig, rtol=0, atol=1e-10)
    # the data is generic: the four settings really give different moments
    assert np.abs(gbar / sig).min() > 1e-3 and np.abs(m / sig).min() > 1e-3


def test_a1_detaching_changes_the_gradient(impl: str) -> None:
    """Guards against a kernel that ignores the detach flags (all four would then agree)."""
    x, g = _data(seed=4)
    grads = {k: _dx(x, g, impl, **kw) for k, kw in DETACH.items()}
    keys = list(grads)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert (grads[a] - grads[b]).abs().max() > 1e-3, (a, b)


def test_a1_both_detached_is_upstream_over_sigma_times_gain(impl: str) -> None:
    x, g = _data(seed=1)
    w = torch.linspace(0.5, 2.0, H, dtype=torch.float64)
    s = _row_stats(x, g)
    dx = _dx(x, g, impl, w=w, detach_mean=True, detach_std=True).numpy()
    np.testing.assert_allclose(dx, g.numpy() * w.numpy() / s["sigma"], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kw", [
    {},
    {"detach_std": True},
    {"ada": True, "C": 2.0, "k": 0.1},
    {"groups": 4},
    {"groups": 4, "detach_std": True},
], ids=["ln_simple", "detach_std", "adanorm", "groupln", "groupln_detach_std"])
def test_gradient_sums_to_zero_when_mean_not_detached(kw: dict, impl: str) -> None:
    x, g = _data(seed=2)
    w = torch.linspace(0.5, 2.0, H, dtype=torch.float64)
    groups = kw.get("groups", 1)
    for weight in (None, w):
        dx = _dx(x, g, impl, w=weight, **kw)
        sums = dx.reshape(ROWS, groups, H // groups).sum(-1)  # per row, per group for LN-G
        assert sums.abs().max() < 1e-12 * max(1.0, dx.abs().max().item()) * H
    # and it does not hold once the mean is detached (so the check can fail)
    dx_dm = _dx(x, g, impl, detach_mean=True, **{k: v for k, v in kw.items() if k != "ada"})
    assert dx_dm.sum(-1).abs().max() > 1e-3


@pytest.mark.parametrize("kw", [
    {},
    {"detach_mean": True},
    {"ada": True, "C": 1.5, "k": 0.1},
    {"center": False},  # RMSNorm: <dx, x> = 0
], ids=["ln_simple", "detach_mean", "adanorm", "rmsnorm"])
def test_gradient_orthogonal_to_centred_input_at_eps0(kw: dict, impl: str) -> None:
    """<dx, x - mu> = 0 exactly at eps = 0 when sigma is not detached (scale invariance)."""
    x, g = _data(seed=3)
    dx = _dx(x, g, impl, **kw)
    xc = x - x.mean(-1, keepdim=True) if kw.get("center", True) else x
    dots = (dx * xc).sum(-1)
    assert dots.abs().max() < 1e-11
    # with eps > 0 the identity is broken, with std detached it is broken badly
    xr = x.clone().requires_grad_(True)
    (dx_eps,) = torch.autograd.grad(normalize(xr * 0.01, H, eps=1e-4, impl=impl, **kw), xr, g)
    assert (dx_eps * xc).sum(-1).abs().max() > 1e-6
    dx_ds = _dx(x, g, impl, detach_std=True, **{k: v for k, v in kw.items() if k != "ada"})
    assert (dx_ds * xc).sum(-1).abs().max() > 1e-3


@pytest.mark.parametrize("C,k", [(1.0, 0.1), (2.0, 0.1), (0.8, 0.25), (1.5, 0.0)])
def test_a2_adanorm_mean_scale_is_C_and_mean_output_is_minus_Ck(C: float, k: float,
                                                                  impl: str) -> None:
    x, _ = _data(rows=8, h=33, seed=5)
    z = normalize(x, 33, eps=0.0, ada=True, C=C, k=k, impl=impl)
    y = normalize(x, 33, eps=0.0, impl=impl)
    phi = C * (1 - k * y)
    torch.testing.assert_close(z, phi * y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(phi.mean(-1), torch.full((8,), C, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(z.mean(-1), torch.full((8,), -C * k, dtype=torch.float64),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("C,k", [(1.0, 0.1), (2.0, 0.1), (0.8, 0.25)])
def test_a3_adanorm_backward_is_ln_simple_backward_of_reweighted_grad(C: float, k: float,
                                                                     impl: str) -> None:
    x, g = _data(seed=6)
    dx_ada = _dx(x, g, impl, ada=True, C=C, k=k)
    y = normalize(x, H, eps=0.0, impl=impl)
    dx_simple = _dx(x, C * (1 - k * y) * g, impl)
    torch.testing.assert_close(dx_ada, dx_simple, rtol=1e-12, atol=1e-12)
    assert dx_ada.sum(-1).abs().max() < 1e-12
    assert (dx_ada * (x - x.mean(-1, keepdim=True))).sum(-1).abs().max() < 1e-11
    # without the detach the factor would be C (1 - 2 k y): make sure that is not what we get
    dx_nodetach = _dx(x, C * (1 - 2 * k * y) * g, impl)
    assert (dx_ada - dx_nodetach).abs().max() > 1e-4


def _phi_nonpositive_fraction(x: torch.Tensor, impl: str, k: float = 0.1) -> torch.Tensor:
    y = normalize(x, x.shape[-1], eps=0.0, impl=impl)
    return ((1 - k * y) <= 0).double().mean(-1)


@pytest.mark.parametrize("h", [2, 3, 10, 50, 99, 100])
def test_a4_phi_positive_for_h_up_to_100(h: int, impl: str) -> None:
    """max |y| <= sqrt(H - 1) < 10 for H <= 100, even for the most extreme input, a spike."""
    spikes = torch.zeros(3, h, dtype=torch.float64)
    spikes[0, 0] = 1.0
    spikes[1, 0] = 1e6
    spikes[2, -1] = 5.0
    x, _ = _data(rows=4, h=h, seed=h)
    heavy = torch.randn(2, h, generator=torch.Generator().manual_seed(h), dtype=torch.float64)
    x = torch.cat([spikes, x, heavy.pow(7)])
    assert _phi_nonpositive_fraction(x, impl).max() == 0
    y = normalize(spikes, h, eps=0.0, impl=impl)
    torch.testing.assert_close(y.max(-1).values, torch.full((3,), (h - 1) ** 0.5,
                               dtype=torch.float64), rtol=1e-12, atol=0)


def test_a4_phi_nonpositive_fraction_at_most_one_percent(impl: str) -> None:
    """Chebyshev on the empirical distribution of y (mean 0, variance 1): at most k^2 = 1 %."""
    gen = torch.Generator().manual_seed(8)
    h = 4040
    u = torch.rand(h, generator=gen, dtype=torch.float64)
    # the extremal input: a fraction p = 1/101 of units at 1, the rest at 0, puts those units
    # at y = sqrt((1 - p) / p) = 10 = 1/k exactly, i.e. on the boundary phi = 0
    boundary = torch.zeros(h, dtype=torch.float64)
    boundary[: h // 101] = 1.0
    rows = torch.stack([
        torch.randn(h, generator=gen, dtype=torch.float64),
        torch.randn(h, generator=gen, dtype=torch.float64).pow(9),  # heavy tails
        torch.tan(torch.pi * (u - 0.5)),  # Cauchy
        boundary,
    ])
    frac = _phi_nonpositive_fraction(rows, impl)
    assert (frac <= 0.01).all(), frac
    y = normalize(boundary[None], h, eps=0.0, impl=impl)
    torch.testing.assert_close(y.max(), torch.tensor(10.0, dtype=torch.float64), rtol=1e-12,
                               atol=0)
    # a less sparse spike has more units above the mean but they stay below 1/k
    denser = torch.zeros(h, dtype=torch.float64)
    denser[: h // 50] = 1.0
    assert _phi_nonpositive_fraction(denser[None], impl).item() == 0
