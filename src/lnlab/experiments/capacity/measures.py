"""What the capacity claims test: fitted accuracy on random labels, and the theory numbers."""

from __future__ import annotations

import math
import statistics
from typing import Any

from lnlab.experiments.capacity.sweep import PRACTICAL
from lnlab.experiments.claims import Measurement
from lnlab.experiments.framework import Results, Run, paired_values, spearman

__all__ = ["analyze", "fit_table", "theory_measures"]


def _acc_pct(key: str) -> Any:
    def f(run: Run) -> float | None:
        v = run.summary.get(key)
        return None if v is None else 100.0 * float(v)

    return f


def _best_over_grid(sel: Results) -> dict[int, float]:
    """Per seed, the best final training accuracy (%) over an arm's (lr, batch) grid: the
    fitted capacity of that model class (the same grid for every arm compared)."""
    best: dict[int, float] = {}
    for r in sel.select(status="finished").runs:
        v = r.summary.get("final_train_acc")
        if isinstance(v, int | float) and math.isfinite(v):
            best[r.seed] = max(best.get(r.seed, -math.inf), 100.0 * float(v))
    return best


def fit_table(results: Results, dataset: str) -> dict[str, dict[int, float]]:
    """Per-seed training accuracy (%) of the fit runs: "linear", "lnnet" (LN, g = 1) and
    "w2" (width 2) — each the best over the same (lr, batch) grid — and "g{g}" for each LN-Net
    group number at the common lr 1e-2, batch 100 (LN vs LN-G comparisons)."""
    fit = results.select(kind="fit", dataset=dataset)
    out: dict[str, dict[int, float]] = {"linear": _best_over_grid(fit.select(arm="linear"))}
    for g in sorted(x for x in fit.values("groups") if isinstance(x, int) and x > 0):
        out[f"g{g}"] = fit.by_seed(_acc_pct("final_train_acc"), arm="lnnet", groups=g,
                                train__lr=1e-2, train__batch_size=100)
    grid = {(r.get("train.lr"), r.get("train.batch_size"))
            for r in fit.select(arm="linear").runs}

    def on_grid(sel: Results) -> Results:
        return Results([r for r in sel.runs
                        if (r.get("train.lr"), r.get("train.batch_size")) in grid])

    lnnet = _best_over_grid(on_grid(fit.select(arm="lnnet", groups=1)))
    if lnnet:
        out["lnnet"] = lnnet
    w2 = _best_over_grid(on_grid(fit.select(arm="lnnet-w2")))
    if w2:
        out["w2"] = w2
    return out


def theory_measures(results: Results) -> dict[str, Measurement]:
    """Claims 1–5 and 7: the numbers the theory runs measured directly."""
    out: dict[str, Measurement] = {}
    th = results.select(kind="theory")

    def t(key: str, unit: str = "") -> Measurement:
        return th.per_seed(key, unit=unit)

    out["max |LN(x + c1) − LN(x)|, |LN(αx) − LN(x)| over Gaussian draws"] = t("invariance_err")
    out["median ‖LN(x+y) − LN(x) − LN(y)‖ / ‖LN(x) + LN(y)‖"] = t("nonadditivity")
    out["violations among 200 random affine maps"] = t("linear_violations")
    out["LSSR of XOR after Linear(2→3)+LN"] = t("xor_after_ln")
    out["LSSR of the last LN layer of the construction (m = 20, d = 2, K = 2)"] = t(
        "constructed_lssr_last")
    out["share of 200 random layers with LSSR(out) < LSSR(in)"] = t("random_ln_below_share")
    out["share of constructions with width 3, m − K (+1) layers and 100% accuracy"] = t(
        "construct_ok_share")
    out["share of L (2..5; full 2..6) whose every labelling of L+2 points is fitted"] = t(
        "vc_shattered_share")

    def min_step(r: Run) -> float | None:
        hs = [r.summary.get(f"h_median_g{g}") for g in (1, 2, 4, 8)]
        if any(h is None for h in hs):
            return None
        return min(hs[i + 1] / hs[i] for i in range(3))

    out["min over g ∈ {1,2,4} of median H(2g) / median H(g)"] = th.per_seed(min_step)
    out["(median H ratio g=8/g=1) / (median ‖J‖² ratio g=8/g=1)"] = th.per_seed(
        lambda r: r.summary["h_ratio_g8"] / r.summary["jac_ratio_g8"]
        if "h_ratio_g8" in r.summary else None)
    return out


def analyze(results: Results) -> dict[str, Measurement]:
    """The per-seed numbers every claim tests (see CLAIMS for the names)."""
    out = theory_measures(results)
    px = results.select(kind="proxy")
    groups = [int(g) for g in (px.runs[0].config["groups"] if px.runs else [])]

    def proxy_best(r: Run) -> tuple[int, float]:
        accs = {g: float(r.summary[f"acc_g{g}"]) for g in groups if f"acc_g{g}" in r.summary}
        g = max(accs, key=lambda k: accs[k])
        return g, accs[g]

    out["proxy acc[g=1] − acc[linear] (points)"] = px.per_seed(
        lambda r: 100 * (r.summary["acc_g1"] - r.summary["acc_linear"]), unit="points")
    def proxy_matched(r: Run) -> float | None:
        g = int(r.config["width"]) // int(r.config["dim"])  # group size = input dimension
        v = r.summary.get(f"acc_g{g}")
        return None if v is None else 100 * (float(v) - r.summary["acc_g1"])

    out["proxy acc[g=width/dim] − acc[g=1] (points)"] = px.per_seed(proxy_matched,
                                                                    unit="points")
    out["log2(best group size / 32)"] = px.per_seed(
        lambda r: math.log2(r.config["width"] / proxy_best(r)[0] / r.config["dim"])
        if groups else None)

    for ds in ("mnist1d", "digits"):
        if not results.select(kind="fit", dataset=ds).runs:  # quick fits MNIST-1D only
            for k in (f"{ds}: train_acc[LN-Net] − best train_acc[linear] (points)",
                      f"{ds}: train_acc[width-2 LN-Net] − best train_acc[linear] (points)",
                      f"{ds}: mean over g≥2 of train_acc[LN-G] − train_acc[LN] (points)",
                      f"{ds}: Spearman ρ(g, train_acc)"):
                out[k] = Measurement({}, not_run=f"the {ds} fits run at --scale full")
            continue
        tab = fit_table(results, ds)
        gs = sorted(int(k[1:]) for k in tab if k.startswith("g"))
        lin = tab.get("linear", {})
        ln = tab.get("g1", {})
        # LN-Net vs linear: both the best over the same (lr, batch) grid
        out[f"{ds}: train_acc[LN-Net] − best train_acc[linear] (points)"] = paired_values(
            tab.get("lnnet", {}), lin, unit="points")
        out[f"{ds}: train_acc[width-2 LN-Net] − best train_acc[linear] (points)"] = \
            paired_values(tab.get("w2", {}), lin, unit="points")
        # the mean over g ≥ 2 (seeds that have every g), not the best g: no selection bias
        many = [g for g in gs if g > 1]
        mean_g = {s: statistics.fmean(tab[f"g{g}"][s] for g in many)
                  for s in (set.intersection(*[set(tab[f"g{g}"]) for g in many]) if many
                            else set())}
        out[f"{ds}: mean over g≥2 of train_acc[LN-G] − train_acc[LN] (points)"] = paired_values(
            mean_g, ln, unit="points")
        rhos: dict[int, float] = {}
        for s in sorted(set.intersection(*[set(tab[f"g{g}"]) for g in gs])) if gs else []:
            rho = spearman([float(g) for g in gs], [tab[f"g{g}"][s] for g in gs])
            if math.isfinite(rho):
                rhos[s] = rho
        out[f"{ds}: Spearman ρ(g, train_acc)"] = Measurement(rhos)

    for fam, (_, g) in PRACTICAL.items():
        pr = results.select(kind="practical", family=fam)
        if not pr.runs:
            out[f"{fam}: test_acc[LN-G] − test_acc[LN] (points)"] = Measurement(
                {}, not_run=f"the {fam} comparison runs at --scale full")
            continue
        a = pr.by_seed(_acc_pct("final_test_acc"), groups=g)
        b = pr.by_seed(_acc_pct("final_test_acc"), groups=1)
        out[f"{fam}: test_acc[LN-G] − test_acc[LN] (points)"] = paired_values(a, b, unit="points")
    return out
