"""Tests for the ``capacity`` experiment (Ni et al.): sweep, analysis on synthetic results,
claim wiring, and one tiny end-to-end run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from lnlab.errors import LnlabError
from lnlab.experiments import Results, Run, evaluate, get_experiment
from lnlab.experiments import capacity as cap


def _run(config: dict, summary: dict, status: str = "finished") -> Run:
    return Run(key=str(id(config)), config=config, status=status, summary=summary, epochs=[])


def _fit(ds: str, arm: str, g: int, seed: int, acc: float, lr: float = 1e-2) -> Run:
    return _run({"kind": "fit", "dataset": ds, "n": 100, "arm": arm, "groups": g,
                 "train": {"seed": seed, "lr": lr, "batch_size": 100}},
                {"final_train_acc": acc})


def _synthetic(seeds: tuple[int, ...] = (0, 1, 2)) -> Results:
    """A complete fake sweep: numbers chosen so each claim's verdict is known by hand."""
    runs = []
    for s in seeds:
        runs.append(_run({"kind": "theory", "seed": s}, {
            "invariance_err": 1e-15, "nonadditivity": 0.3, "linear_violations": 0.0,
            "xor_after_ln": 26.0, "constructed_lssr_last": 0.0, "random_ln_below_share": 0.3,
            "construct_ok_share": 1.0, "vc_shattered_share": 1.0,
            **{f"h_median_g{g}": float(g) for g in (1, 2, 4, 8, 16)},
            "h_ratio_g8": 8.0, "jac_ratio_g8": 1.1}))
        runs.append(_run({"kind": "proxy", "seed": s, "width": 256, "dim": 32,
                          "groups": [1, 2, 8, 32]},
                         {"acc_linear": 0.16, "acc_g1": 0.16, "acc_g2": 0.19, "acc_g8": 0.33,
                          "acc_g32": 0.30}))
        for ds in ("mnist1d", "digits"):
            runs += [_fit(ds, "linear", 0, s, 0.20, 1e-3), _fit(ds, "linear", 0, s, 0.25 + s / 100),
                     _fit(ds, "linear", 0, s, 0.19, 1e-1)]
            runs += [_fit(ds, "lnnet", g, s, 0.3 + g / 50) for g in (1, 2, 4)]
            # LN at the other lrs of the grid: the comparison with linear takes the best
            runs += [_fit(ds, "lnnet", 1, s, 0.31, 1e-3), _fit(ds, "lnnet", 1, s, 0.33, 1e-1)]
            runs.append(_fit(ds, "lnnet-w2", 1, s, 0.15))
        for fam, (_, g) in cap.PRACTICAL.items():
            runs.append(_run({"kind": "practical", "family": fam, "groups": 1,
                              "train": {"seed": s}}, {"final_test_acc": 0.80}))
            runs.append(_run({"kind": "practical", "family": fam, "groups": g,
                              "train": {"seed": s}}, {"final_test_acc": 0.795 - s / 1000}))
    return Results(runs, "capacity", "quick", list(seeds))


def test_sweep_builds_and_counts() -> None:
    exp = get_experiment("capacity")
    quick, _ = exp.configs("quick")
    full = cap.sweep("full", list(range(5)))  # unvalidated: counting only
    kinds = [c["kind"] for c in quick]
    # per seed: theory + proxy + MNIST-1D × (3 linear lrs + 5 groups + width 2 + the other
    # 2 lrs for LN and width 2) + the CNN × 2 norms (quick leaves the digits fits and the
    # Transformer comparison to full)
    assert len(quick) == 5 * (2 + 13 + 2)
    assert {c["family"] for c in quick if c["kind"] == "practical"} == {"cnn"}
    assert {c["dataset"] for c in quick if c["kind"] == "fit"} == {"mnist1d"}
    grid = {(c["arm"], c["train"]["lr"]) for c in quick if c["kind"] == "fit"
            and c["groups"] <= 1}
    for arm in ("lnnet", "lnnet-w2"):  # the same lr grid as the linear baseline
        assert {lr for a, lr in grid if a == arm} == set(cap.LINEAR_LRS)
    assert kinds.count("theory") == kinds.count("proxy") == 5
    # full: linear 3 lrs × 2 batches; LN and width 2 also get those 6 (beside lr 1e-2, batch
    # 100 for the LN-G comparisons)
    assert len(full) == 5 * (2 + 2 * (6 + 5 + 1 + 12) + 4)
    keys = {c["train"]["model"] for c in quick if c["kind"] == "fit"}
    assert "lnnet:depth=4,width=64,norm=groupln;groups=16" in keys
    for c in quick:
        if c["kind"] == "fit":
            assert c["train"]["random_labels"] is True


def test_bad_kind_raises(tmp_path: Path) -> None:
    with pytest.raises(LnlabError):
        cap.run({"kind": "nope"}, tmp_path)
    with pytest.raises(LnlabError):
        cap.subset_arrays("mnist1d", 10**6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=3, max_size=12),
       st.lists(st.integers(-5, 5), min_size=3, max_size=12))
def test_spearman_matches_scipy(xs: list[int], ys: list[int]) -> None:
    n = min(len(xs), len(ys))
    a, b = [float(v) for v in xs[:n]], [float(v) for v in ys[:n]]
    ours = cap.spearman(a, b)
    if len(set(a)) < 2 or len(set(b)) < 2:
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(float(spearmanr(a, b).statistic), abs=1e-12)


def test_fit_table_takes_best_linear_per_seed() -> None:
    tab = cap.fit_table(_synthetic(), "mnist1d")
    assert tab["linear"] == {0: 25.0, 1: 26.0, 2: 27.0}
    assert tab["g4"] == pytest.approx({0: 38.0, 1: 38.0, 2: 38.0})


def test_analyze_feeds_every_claim_with_known_verdicts() -> None:
    res = _synthetic()
    ms = cap.analyze(res)
    for c in cap.CLAIMS:
        assert c.metric in ms, c.id
    verdicts = {c.id: c.rule.verdict(ms[c.metric])[0] for c in cap.CLAIMS}
    m = ms["mnist1d: train_acc[LN-Net] − best train_acc[linear] (points)"]
    assert m.values == pytest.approx({0: 8.0, 1: 7.0, 2: 6.0})  # LN's best lr: 33%
    # LN-G: the mean over g ∈ {2, 4} (34, 38), not the best g, against g = 1 (32)
    assert ms["mnist1d: mean over g≥2 of train_acc[LN-G] − train_acc[LN] (points)"].values == \
        pytest.approx({0: 4.0, 1: 4.0, 2: 4.0})
    # the proxy's pre-registered arm: group size = input dimension (g = 256/32 = 8)
    assert ms["proxy acc[g=width/dim] − acc[g=1] (points)"].mean == pytest.approx(17.0)
    assert ms["log2(best group size / 32)"].values == {0: 0.0, 1: 0.0, 2: 0.0}
    assert ms["min over g ∈ {1,2,4} of median H(2g) / median H(g)"].mean == pytest.approx(2.0)
    assert verdicts["ni.9a.mnist1d"] == verdicts["ni.9c.digits"] == "supported"
    assert ms["digits: train_acc[width-2 LN-Net] − best train_acc[linear] (points)"].values \
        == pytest.approx({0: -10.0, 1: -11.0, 2: -12.0})
    # practical: LN-G 0.5–0.7 points worse on every seed → "improves" contradicted, "no harm"
    # holds
    assert verdicts["ni.10b.cnn"] == "contradicted"
    assert verdicts["ni.10a.cnn"] == "supported"
    assert all(v in ("supported", "pass") for k, v in verdicts.items()
               if not k.startswith("ni.10b")), verdicts


def test_analyze_counts_a_diverged_run_as_missing() -> None:
    res = _synthetic()
    runs = [r if not (r.config.get("kind") == "fit" and r.config["groups"] == 1
                      and r.seed == 0 and r.config["dataset"] == "digits")
            else Run(r.key, r.config, "diverged", {}, []) for r in res.runs]
    ms = cap.analyze(Results(runs))
    assert sorted(ms["digits: train_acc[LN-Net] − best train_acc[linear] (points)"].values) \
        == [1, 2]


@pytest.mark.slow
def test_tiny_end_to_end(tmp_path: Path) -> None:
    from lnlab.experiments import run_experiment

    out = tmp_path / "cap"
    sweep = run_experiment("capacity", out, scale="tiny", seeds=2, workers=1,
                           progress=False)
    assert sweep is not None
    exp = get_experiment("capacity")
    from lnlab.runner.store import Store

    with Store.open(out) as store:
        res = Results.from_store(store, [r.key for r in store.runs()], experiment="capacity")
    assert all(r.status == "finished" for r in res.runs), [r.error for r in res.runs]
    th = res.select(kind="theory").runs[0].summary
    assert th["construct_ok_share"] == 1.0 and th["linear_violations"] == 0.0
    assert th["construct_m10_d2_K2_width"] == 3.0 and th["construct_m10_d2_K2_layers"] == 8.0
    assert th["xor_input_finite"] == 0.0 and math.isclose(th["xor_after_ln"], 26.0, rel_tol=1e-9)
    ms = exp.analyze(res)
    verdicts = {c.id: evaluate(c, ms).verdict for c in exp.claims}
    assert verdicts["ni.4"] == verdicts["ni.5"] == verdicts["ni.2"] == "pass"
    figs = exp.figures(res, tmp_path / "figs")
    assert {p.name for p in figs} == {"capacity_vs_groups.png", "proxy_vs_groups.png",
                                      "nonlinearity_vs_groups.png", "construction_2d.png"}
    assert all(p.stat().st_size > 1000 for p in figs)


def test_subset_file_is_the_first_n_examples(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from lnlab.data import load_dataset

    monkeypatch.setenv("LNLAB_CACHE_DIR", str(tmp_path))
    path = cap.subset_file("digits", 50)
    assert path.is_relative_to(tmp_path)
    ds = load_dataset("digits")
    with np.load(path) as a:
        assert a["x_train"].shape == (50, 64)
        np.testing.assert_array_equal(a["x_train"], ds.x_train[:50].reshape(50, -1).numpy())
        np.testing.assert_array_equal(a["y_train"], ds.y_train[:50].numpy())
    assert cap.subset_file("digits", 50) == path  # cached, not rewritten
