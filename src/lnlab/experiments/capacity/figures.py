"""The capacity results table and figures."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from lnlab.experiments.capacity.measures import _acc_pct, fit_table
from lnlab.experiments.capacity.sweep import PRACTICAL
from lnlab.experiments.framework import Results, fmt_mean_std

__all__ = ["figures", "table"]


def table(results: Results) -> tuple[list[str], list[list[str]]]:
    """One row per setting: what was measured and its mean ± std over seeds."""
    header = ["part", "setting", "runs", "value"]
    rows: list[list[str]] = []
    for ds in ("mnist1d", "digits"):
        tab = fit_table(results, ds)
        n = results.select(kind="fit", dataset=ds).runs
        size = n[0].config["n"] if n else "?"
        names = {"linear": "linear (best lr)", "lnnet": "LN-Net (LN, best lr)",
                 "w2": "LN-Net width 2 (LN, best lr)", "g1": "LN-Net (LN, lr 1e-2)"}
        for k, vals in tab.items():
            name = names.get(k, f"LN-Net (LN-G, g={k[1:]}, lr 1e-2)")
            rows.append(["fit: train acc (%)", f"{ds}[{size}] {name}", str(len(vals)),
                         fmt_mean_std(list(vals.values()))])
    px = results.select(kind="proxy", status="finished")
    if px.runs:
        keys = ["acc_linear", *[f"acc_g{g}" for g in px.runs[0].config["groups"]]]
        for k in keys:
            vals = [100 * float(r.summary[k]) for r in px.runs if k in r.summary]
            rows.append(["proxy: train acc (%)", "linear" if k == "acc_linear" else
                         f"LN-G g={k[5:]}", str(len(vals)), fmt_mean_std(vals)])
    for fam, (_, g) in PRACTICAL.items():
        for groups in (1, g):
            sel = results.select(kind="practical", family=fam, groups=groups)
            vals = list(sel.per_seed(_acc_pct("final_test_acc")).values.values())
            norm = "LN" if groups == 1 else f"LN-G g={groups}"
            rows.append(["practical: test acc (%)", f"{fam} {norm}", str(len(vals)),
                         fmt_mean_std(vals)])
    th = results.select(kind="theory", status="finished")
    if th.runs:
        keys = [k for k in th.runs[0].summary if k.startswith(("construct_", "vc_", "h_ratio",
                                                               "jac_ratio", "xor", "random_ln",
                                                               "constructed", "linear_v",
                                                               "invariance", "nonadd"))]
        for k in keys:
            vals = [float(r.summary[k]) for r in th.runs if k in r.summary]
            rows.append(["theory", k, str(len(vals)), fmt_mean_std(vals)])
    return header, rows


def figures(results: Results, out_dir: Path) -> list[Path]:
    import numpy as np

    from lnlab.analysis.lnnet import plot_construction, random_problem
    from lnlab.plotting import COLORS, figure, legend_outside, save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    datasets = [d for d in ("mnist1d", "digits") if results.select(kind="fit", dataset=d).runs]
    if datasets:
        with figure(ncols=len(datasets), width=3.3, height=2.7) as (fig, axes):
            axes = axes if len(datasets) > 1 else [axes]
            for ax, ds in zip(axes, datasets, strict=True):
                tab = fit_table(results, ds)
                gs = sorted(int(k[1:]) for k in tab if k.startswith("g"))
                means = [statistics.fmean(tab[f"g{g}"].values()) if tab[f"g{g}"] else math.nan
                         for g in gs]
                for g in gs:
                    ax.scatter([g] * len(tab[f"g{g}"]), list(tab[f"g{g}"].values()), s=10,
                               color=COLORS[0], alpha=0.5)
                ax.plot(gs, means, "o-", color=COLORS[0], label="LN-Net (g=1: LN, g>1: LN-G)")
                if tab["linear"]:
                    ax.axhline(statistics.fmean(tab["linear"].values()), color=COLORS[3],
                               ls="--", label="linear classifier (best lr)")
                ax.set_xscale("log", base=2)
                ax.set_xticks(gs, [str(g) for g in gs])
                ax.set_xlabel("group number g")
                ax.set_ylabel("training accuracy, random labels (%)")
                ax.set_title(f"{ds} subset")
            legend_outside(fig, axes[:1], ncol=2)
            paths.append(save(fig, out_dir / "capacity_vs_groups.png"))
    px = results.select(kind="proxy", status="finished")
    if px.runs:
        groups = px.runs[0].config["groups"]
        with figure(width=3.4, height=2.6) as (fig, ax):
            ys = [[100 * r.summary[f"acc_g{g}"] for r in px.runs] for g in groups]
            ax.errorbar(groups, [statistics.fmean(v) for v in ys],
                        yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in ys],
                        fmt="o-", color=COLORS[0], label="random features + LN-G")
            ax.axhline(statistics.fmean(100 * r.summary["acc_linear"] for r in px.runs),
                       color=COLORS[3], ls="--", label="linear readout")
            ax.set_xscale("log", base=2)
            ax.set_xticks(groups, [str(g) for g in groups])
            ax.set_xlabel("group number g (width 256)")
            ax.set_ylabel("training accuracy (%)")
            ax.set_title("random-feature proxy (Gaussian, d=32)")
            legend_outside(fig, ncol=2)
            paths.append(save(fig, out_dir / "proxy_vs_groups.png"))
    th = results.select(kind="theory", status="finished")
    if th.runs:
        gs = th.runs[0].config["curve_groups"]
        dim = th.runs[0].config["curve_dim"]
        with figure(width=3.4, height=2.6) as (fig, ax):
            h = [statistics.fmean(r.summary[f"h_ratio_g{g}"] for r in th.runs) for g in gs]
            j = [statistics.fmean(r.summary[f"jac_ratio_g{g}"] for r in th.runs) for g in gs]
            ev = [th.runs[0].summary[f"h_equal_var_g{g}"] / th.runs[0].summary["h_equal_var_g1"]
                  for g in gs]
            ax.plot(gs, h, "o-", color=COLORS[0], label="H (median) / H(LN)")
            ax.plot(gs, ev, "s--", color=COLORS[1], label="equal-variance formula")
            ax.plot(gs, j, "^-", color=COLORS[2], label="‖J‖² (median) / ‖J‖²(LN)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(gs, [str(g) for g in gs])
            ax.set_xlabel(f"group number g (d = {dim})")
            ax.set_ylabel("ratio to plain LN")
            ax.set_title("Hessian nonlinearity of LN-G")
            legend_outside(fig, ncol=2)
            paths.append(save(fig, out_dir / "nonlinearity_vs_groups.png"))
        X, y = random_problem(10, 2, 2, 0)
        paths.append(Path(plot_construction(
            np.asarray(X), np.asarray(y), out_dir / "construction_2d.png",
            title="width-3 LN-Net construction, 10 points, 2 classes")))
    return paths
