"""Explicit width-3 LN-Nets: every labelling fitted with m - K LN layers (Ni et al. 2024)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lnlab.analysis.lnnet import (
    LNNet,
    construct,
    evaluate_accuracy,
    plane_basis,
    plot_construction,
    random_problem,
    vc_demo,
)
from lnlab.cli import main
from lnlab.errors import LnlabError
from lnlab.norms import norm_form


def _fit(X: np.ndarray, y: np.ndarray, **kw) -> tuple[int, float]:
    c = construct(X, y, **kw)
    acc, _ = evaluate_accuracy(c.model, X, y)
    return c.num_ln_layers, acc


@pytest.mark.slow
@pytest.mark.parametrize("dim", [2, 10])
@pytest.mark.parametrize("classes", [2, 4])
def test_acceptance_100_labellings_m40(dim: int, classes: int) -> None:
    """The issue's acceptance: 100 random labellings of 40 points, width 3, m - K layers."""
    X = np.random.default_rng(1000 + dim).standard_normal((40, dim))
    rng = np.random.default_rng(classes)
    for _ in range(100):
        y = rng.permutation(np.concatenate([np.arange(classes),
                                            rng.integers(0, classes, 40 - classes)]))
        c = construct(X, y)
        acc, margin = evaluate_accuracy(c.model, X, y)
        assert c.width == 3 and all(b.linear.out_features == 3 for b in c.model.blocks)
        assert c.num_ln_layers == 40 - classes
        assert acc == 1.0 and margin > 0


@pytest.mark.slow
def test_m100_projection_holds_where_the_fold_breaks() -> None:
    """The notes' fold is chaotic in float64 beyond ~60 points; the error-aware projection
    still fits 100 points exactly."""
    X, y = random_problem(100, 2, 2, 0)
    assert _fit(X, y) == (98, 1.0)
    layers, acc = _fit(X, y, strategy="fold")
    assert layers == 98 and acc < 0.9


@pytest.mark.parametrize("dim,classes", [(2, 2), (10, 4)])
def test_m40_quick(dim: int, classes: int) -> None:
    """One labelling per setting in the fast suite; the 100-labelling run is marked slow."""
    X, y = random_problem(40, dim, classes, dim)
    assert _fit(X, y) == (40 - classes, 1.0)


def test_model_is_a_plain_lnlab_ln_net() -> None:
    X, y = random_problem(12, 3, 3, 0)
    c = construct(X, y)
    m = c.model
    assert isinstance(m, LNNet) and m.num_ln_layers == 9
    names = {n for n, _ in m.named_modules()}
    assert {"blocks.0.linear", "blocks.0.norm", "blocks.8.norm", "head"} <= names
    assert all(norm_form(b.norm).source == "lnlab" for b in m.blocks)
    assert m.blocks[0].linear.in_features == 3 and m.head.out_features == 3
    # no activation anywhere: only Linear and norm modules with parameters or none at all
    kinds = {type(mod).__name__ for mod in m.modules()}
    assert kinds <= {"LNNet", "ModuleList", "LNBlock", "Linear", "LayerNormSimple"}


def test_ln_outputs_lie_on_the_width3_circle() -> None:
    """Independent check of the geometry the construction relies on (eps = 0)."""
    X, y = random_problem(15, 2, 2, 3)
    outs = construct(X, y).model.trace(torch.as_tensor(X))
    for z in outs[1:]:
        torch.testing.assert_close(z.sum(dim=1), torch.zeros(15, dtype=z.dtype), atol=1e-12,
                                   rtol=0)
        torch.testing.assert_close(z.norm(dim=1), torch.full((15,), math.sqrt(3.0),
                                                              dtype=z.dtype))
    E = plane_basis()
    assert np.allclose(E.T @ E, np.eye(2)) and np.allclose(E.sum(axis=0), 0)


def test_one_dimensional_input_needs_one_more_layer() -> None:
    X, y = random_problem(25, 1, 3, 4)
    assert _fit(X, y) == (25 - 3 + 1, 1.0)


def test_collinear_points_in_2d_still_fit() -> None:
    t = np.random.default_rng(0).standard_normal(12)
    X = np.stack([t, 2 * t + 1], axis=1)
    y = np.arange(12) % 2
    layers, acc = _fit(X, y)
    assert acc == 1.0 and layers in (10, 11)


def test_eps_of_the_default_layernorm() -> None:
    """With PyTorch's eps = 1e-5 the construction rescales pre-activations and still fits."""
    X, y = random_problem(30, 4, 3, 5)
    assert _fit(X, y, eps=1e-5) == (27, 1.0)


def test_fold_strategy_of_the_notes() -> None:
    X, y = random_problem(30, 3, 2, 6)
    assert _fit(X, y, strategy="fold") == (28, 1.0)


def test_duplicates() -> None:
    X, y = random_problem(10, 2, 2, 7)
    X2, y2 = np.concatenate([X, X[:3]]), np.concatenate([y, y[:3]])
    assert _fit(X2, y2) == (8, 1.0)
    bad = y2.copy()
    bad[-1] = 1 - bad[-1]
    with pytest.raises(LnlabError, match="identical points"):
        construct(X2, bad)


def test_single_class_and_one_point_per_class() -> None:
    X = np.random.default_rng(0).standard_normal((5, 2))
    assert _fit(X, np.zeros(5, dtype=int), num_classes=3)[1] == 1.0
    layers, acc = _fit(X, np.arange(5))
    assert acc == 1.0 and layers == 1  # nothing to merge: one embedding layer


def test_bad_input() -> None:
    X = np.zeros((4, 2))
    with pytest.raises(LnlabError):
        construct(X, np.array([0, 1]))
    with pytest.raises(LnlabError):
        construct(np.random.default_rng(0).standard_normal((4, 2)), np.array([0, 1, 0, 1]),
                  strategy="magic")
    with pytest.raises(LnlabError):
        construct(np.random.default_rng(0).standard_normal((4, 2)), np.array([0, 1, 0, 1]),
                  num_layers=1)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(2, 14), dim=st.integers(1, 5), classes=st.integers(2, 4),
       seed=st.integers(0, 10_000))
def test_any_small_problem(m: int, dim: int, classes: int, seed: int) -> None:
    classes = min(classes, m)
    X, y = random_problem(m, dim, classes, seed)
    layers, acc = _fit(X, y)
    assert acc == 1.0
    assert layers == max(m - classes + (dim == 1), 1)


@pytest.mark.parametrize("layers", [2, 3, 4, 5, 6])
def test_vc_demo_shatters(layers: int) -> None:
    r = vc_demo(layers, seed=layers)
    assert r.labellings == 2 ** (layers + 2)
    assert r.shattered and r.fitted == r.labellings and r.min_margin > 0


def test_cli_construct_and_vc(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lnnet", "construct", "--points", "14", "--num-classes", "3", "--dim", "5",
                 "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["ln_layers"] == 11 and row["width"] == 3 and row["train_accuracy"] == 1.0
    assert main(["lnnet", "vc", "--layers", "2"]) == 0
    assert "16/16" in capsys.readouterr().out
    assert main(["lnnet", "construct", "--points", "3", "--num-classes", "5"]) == 2
    assert "cannot all appear" in capsys.readouterr().err


def test_plot_construction(tmp_path) -> None:
    X, y = random_problem(6, 2, 2, 1)
    p = plot_construction(X, y, tmp_path / "fig" / "construction.png")
    assert p.exists() and p.stat().st_size > 10_000
    q = plot_construction(X, y, tmp_path / "fold.png", strategy="fold")
    assert q.exists() and q.stat().st_size > 10_000
    with pytest.raises(LnlabError):
        plot_construction(np.zeros((3, 3)), np.zeros(3, dtype=int), tmp_path / "x.png")


def test_cli_ssr_and_curvature(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lnnet", "ssr", "--points", "12", "--trials", "20", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["linear_maps"]["violations"] == 0 and row["xor"]["input"] == "inf"
    assert row["constructed_net"]["output"] < 1e-10
    assert main(["lnnet", "curvature", "--samples", "200", "--groups", "1,4", "--json"]) == 0
    pts = json.loads(capsys.readouterr().out)
    assert [p["groups"] for p in pts] == [1, 4] and pts[1]["median_h"] > pts[0]["median_h"]
    assert main(["lnnet", "curvature", "--groups", "1,x"]) == 2
