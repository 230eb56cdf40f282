"""Hessian nonlinearity of LN / LN-G: closed forms against float64 autograd Hessians."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lnlab.analysis.lnnet import construct, random_problem
from lnlab.analysis.nonlinearity import (
    autograd_hessian_measure,
    autograd_per_output,
    equal_variance_measure,
    group_curve,
    hessian_measure,
    jacobian_measure,
    ln_g,
    network_hessian_measure,
    per_output_measure,
)
from lnlab.errors import LnlabError


def _manual_ln_g(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Independent LN-G: reshape, standardise with the biased variance, eps = 0."""
    xg = x.reshape(groups, -1)
    c = xg - xg.mean(dim=1, keepdim=True)
    return (c / c.pow(2).mean(dim=1, keepdim=True).sqrt()).reshape(-1)


@settings(max_examples=15, deadline=None)
@given(size=st.integers(3, 7), groups=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_closed_form_matches_autograd(size: int, groups: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size * groups, generator=g, dtype=torch.float64) * 2 + 0.5

    def f(z: torch.Tensor) -> torch.Tensor:
        return _manual_ln_g(z, groups)

    ref = autograd_per_output(f, x)
    torch.testing.assert_close(per_output_measure(x, groups), ref, rtol=1e-9, atol=1e-12)
    assert float(hessian_measure(x, groups)) == pytest.approx(float(ref.sum()), rel=1e-9)
    J = torch.autograd.functional.jacobian(f, x)
    assert float(jacobian_measure(x, groups)) == pytest.approx(float((J**2).sum()), rel=1e-9)


def test_hessian_per_output_with_torch_hessian() -> None:
    """The measure through torch.autograd.functional.hessian, one output at a time."""
    x = torch.randn(10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for groups in (1, 2):
        assert autograd_hessian_measure(lambda z, g=groups: _manual_ln_g(z, g), x) == \
            pytest.approx(float(hessian_measure(x, groups)), rel=1e-9)


def test_lnlab_ln_g_is_the_manual_one_and_twice_differentiable() -> None:
    x = torch.randn(12, dtype=torch.float64)
    torch.testing.assert_close(ln_g(x, 3), _manual_ln_g(x, 3))
    assert autograd_hessian_measure(lambda z: ln_g(z, 3), x) == pytest.approx(
        float(hessian_measure(x, 3)), rel=1e-9)


def test_measure_is_zero_for_affine_maps_and_size_two_groups() -> None:
    A = torch.randn(3, 5, dtype=torch.float64)
    x = torch.randn(5, dtype=torch.float64)
    assert autograd_hessian_measure(lambda z: A @ z + 1.0, x) == 0.0
    x4 = torch.randn(8, dtype=torch.float64)
    assert float(hessian_measure(x4, 4)) == 0.0  # groups of 2: LN is a sign function
    assert autograd_hessian_measure(lambda z: _manual_ln_g(z, 4), x4) < 1e-20


def test_scale_and_shift_invariance_of_ln() -> None:
    x = torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(ln_g(3.0 * x + 2.0, 1), ln_g(x, 1))
    y = torch.randn(6, dtype=torch.float64)
    assert not torch.allclose(ln_g(x + y, 1), ln_g(x, 1) + ln_g(y, 1))


def test_equal_variance_formula() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, dtype=torch.float64)
    # make every group of 8 have variance 1 exactly
    xg = x.reshape(8, 8)
    xg = (xg - xg.mean(1, keepdim=True)) / xg.var(1, unbiased=False, keepdim=True).sqrt()
    assert float(hessian_measure(xg.reshape(-1), 8)) == pytest.approx(
        equal_variance_measure(64, 8), rel=1e-12)
    assert equal_variance_measure(64, 1) == pytest.approx(3 - 6 / 64)


def test_group_curve_grows_with_g() -> None:
    pts = group_curve(64, (1, 2, 4, 8, 16), samples=1000, seed=0)
    med = [p.median_h for p in pts]
    assert all(b > a for a, b in itertools.pairwise(med))
    assert pts[0].ratio_to_ln == 1.0 and pts[3].ratio_to_ln > 4
    # the slope barely moves while the curvature grows
    assert pts[3].median_jac / pts[0].median_jac < 1.3
    ev = [p.equal_variance_h for p in pts]
    assert all(b > a for a, b in itertools.pairwise(ev))


def test_network_measure() -> None:
    lin = torch.nn.Linear(4, 3)
    X = torch.randn(5, 4)
    assert network_hessian_measure(lin, X) == 0.0
    Xp, y = random_problem(8, 2, 2, 0)
    net = construct(Xp, y).model
    assert network_hessian_measure(net, torch.as_tensor(Xp), max_points=4) > 0


def test_bad_groups() -> None:
    with pytest.raises(LnlabError):
        hessian_measure(torch.randn(10, dtype=torch.float64), 3)
    with pytest.raises(LnlabError):
        equal_variance_measure(10, 4)
    with pytest.raises(LnlabError):
        per_output_measure(torch.randn(2, 6, dtype=torch.float64))


def test_random_feature_proxy_prefers_groups() -> None:
    """Claim 8 of the notes at small scale: LN-G features fit random labels better than LN."""
    from lnlab.analysis.nonlinearity import random_feature_accuracy

    g = torch.Generator().manual_seed(0)
    X = torch.randn(1000, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (1000,), generator=g)
    lin = random_feature_accuracy(X, y, None)
    ln = random_feature_accuracy(X, y, 1, width=128)
    lng = random_feature_accuracy(X, y, 8, width=128)
    assert abs(ln - lin) < 0.03  # one wide LN group is nearly linear on this data
    assert lng > ln + 0.05
    with pytest.raises(LnlabError):
        random_feature_accuracy(X, y[:10], 1)


def test_network_measure_through_lnlab_group_norm() -> None:
    """Fused kernels are once-differentiable; the measure must not come out as a silent 0."""
    from lnlab.norms import make_norm

    torch.manual_seed(0)
    lin1, lin2 = torch.nn.Linear(6, 8), torch.nn.Linear(8, 3)
    model = torch.nn.Sequential(lin1, make_norm("groupln:groups=2,affine=false,eps=0", 8), lin2)
    X = torch.randn(3, 6)

    def ref(z: torch.Tensor) -> torch.Tensor:
        return lin2.double()(_manual_ln_g(lin1.double()(z), 2))

    want = sum(autograd_per_output(ref, x.double()).sum().item() for x in X) / 3
    assert network_hessian_measure(model, X) == pytest.approx(want, rel=1e-8)
    assert want > 0
