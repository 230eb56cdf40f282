"""SSR / LSSR: exact against independent references; affine maps never lower LSSR, LN can."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from lnlab.analysis.lnnet import construct, random_problem
from lnlab.analysis.ssr import (
    lssr,
    lssr_binary,
    lssr_per_layer,
    random_linear_check,
    random_ln_layer_check,
    scatter_matrices,
    ssr,
    xor_example,
)
from lnlab.errors import LnlabError


def _data(seed: int, m: int = 30, d: int = 4, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, d)), np.arange(m) % k


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 6), k=st.integers(2, 4))
def test_lssr_matches_generalized_eigenproblem(seed: int, d: int, k: int) -> None:
    """Reference: scipy's generalized symmetric eigensolver on (S_B, S_W), S_W invertible."""
    X, y = _data(seed, 30, d, k)
    Sw, Sb = scatter_matrices(X, y)
    lam = scipy.linalg.eigh(Sb, Sw, eigvals_only=True).max()
    assert lssr(X, y) == pytest.approx(1.0 / lam, rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 8))
def test_binary_closed_form(seed: int, d: int) -> None:
    X, y = _data(seed, 25, d, 2)
    assert lssr(X, y) == pytest.approx(lssr_binary(X, y), rel=1e-9)


def test_lssr_is_the_minimum_of_ssr() -> None:
    X, y = _data(1)
    L = lssr(X, y)
    rng = np.random.default_rng(0)
    vals = [ssr(X, y, rng.standard_normal(4)) for _ in range(500)]
    assert min(vals) >= L * (1 - 1e-12)
    Sw, Sb = scatter_matrices(X, y)
    _w, V = scipy.linalg.eigh(Sb, Sw)
    assert ssr(X, y, V[:, -1]) == pytest.approx(L, rel=1e-9)


def test_scatter_decomposition() -> None:
    """S_W + S_B is the total scatter (an identity the formulas must satisfy)."""
    X, y = _data(2)
    Sw, Sb = scatter_matrices(X, y)
    C = X - X.mean(axis=0)
    np.testing.assert_allclose(Sw + Sb, C.T @ C, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_invertible_affine_maps_keep_lssr(seed: int) -> None:
    X, y = _data(seed)
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((4, 4)) + 3 * np.eye(4)
    assert lssr(X @ A.T + rng.standard_normal(4), y) == pytest.approx(lssr(X, y), rel=1e-7)


def test_random_affine_maps_never_lower_lssr() -> None:
    X, y = _data(3, 40, 6, 3)
    r = random_linear_check(X, y, trials=300, seed=0)
    assert r.trials == 300 and r.violations == 0 and r.min_ratio >= 1 - 1e-8


def test_edge_cases() -> None:
    X = np.array([[0.0], [1.0], [5.0], [6.0]])
    assert lssr(X, np.zeros(4)) == math.inf  # one class: S_B = 0
    assert lssr(np.array([[0.0], [0.0], [1.0], [1.0]]), np.array([0, 0, 1, 1])) == 0.0
    assert lssr(np.array([[1.0, 1], [-1, -1], [1, -1], [-1, 1]]), np.array([0, 0, 1, 1])) \
        == math.inf
    with pytest.raises(LnlabError):
        lssr(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(LnlabError):
        lssr_binary(X, np.array([0, 1, 2, 0]))


def test_xor_example() -> None:
    r = xor_example()
    assert r["input"] == math.inf and r["linear_image"] == math.inf
    # independent recomputation of the same LN output with numpy
    H = np.array([[1, 1, 0.5], [-1, -1, 0.5], [1, -1, 0.5], [-1, 1, 0.5]])
    C = H - H.mean(axis=1, keepdims=True)
    Z = C / np.sqrt((C**2).mean(axis=1, keepdims=True))
    assert r["after_ln"] == pytest.approx(lssr(Z, np.array([0, 0, 1, 1])), rel=1e-12)
    assert r["after_ln"] == pytest.approx(26.0, rel=1e-9)  # value in ni_nonlinearity.md §1.3


def test_random_ln_layers_can_lower_lssr() -> None:
    X, y = _data(4, 40, 3, 3)
    r = random_ln_layer_check(X, y, trials=100, seed=0)
    assert 0 < r.below < r.trials and r.min_lssr < r.input_lssr


def test_constructed_net_collapses_lssr_to_zero() -> None:
    X, y = random_problem(16, 2, 2, 0)
    c = construct(X, y)
    vals = lssr_per_layer(c.model, X, y)
    assert len(vals) == c.num_ln_layers + 1
    assert vals[0] > 0.1 and vals[-1] < 1e-10
