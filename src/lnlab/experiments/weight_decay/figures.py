"""The weight-decay results and audit tables and the figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lnlab.experiments.framework import Results, Run, fmt_mean_std
from lnlab.experiments.weight_decay.measures import _acc, _static, function_distance
from lnlab.experiments.weight_decay.sweep import ARCHS, LR

__all__ = ["audit_rows", "figures", "table"]


def _col(runs: Sequence[Run], f: Any) -> str:
    xs = [v for v in (f(r) for r in runs) if isinstance(v, int | float) and math.isfinite(v)]
    return fmt_mean_std(xs)


def _last(metric: str) -> Any:
    return lambda r: r.epochs[-1].get(metric) if r.epochs else None


def table(results: Results) -> tuple[list[str], list[list[str]]]:
    """One row per (dataset, arch, λ or control): accuracy, distance from λ = 0, norms."""
    header = ["dataset", "arch", "run", "runs", "test acc (%)", "train acc (%)",
              "disagree vs λ=0 (%)", "hidden ‖w‖", "readout ‖w‖", "η_eff hidden",
              "angle/step", "unconstrained share"]
    rows = []
    for dataset in results.select(kind="train").values("dataset"):
        for arch in ARCHS:
            share = _static(results, arch, "static/unconstrained_share")
            for kind, exact in (("train", None), ("control", True), ("control", False)):
                where = {"kind": kind} if exact is None else {"kind": kind, "exact": exact}
                for wd in results.select(where, dataset=dataset, arch=arch).values("wd"):
                    sel = results.select(where, dataset=dataset, arch=arch, wd=wd)
                    done = [r for r in sel.runs if r.status == "finished"]
                    dist = function_distance(results, dataset, arch, wd, kind,
                                             **({} if exact is None else {"exact": exact}))
                    label = (f"λ={wd:g}" if kind == "train" else
                             f"control (λ={wd:g}, {'exact' if exact else 'real eps'})")
                    div = sum(r.status == "diverged" for r in sel.runs)
                    rows.append([
                        dataset, arch, label,
                        f"{len(done)}/{len(sel.runs)}" + (f", {div} diverged" if div else ""),
                        _col(done, _acc),
                        _col(done, lambda r: 100 * r.summary.get("final_train_acc", math.nan)),
                        fmt_mean_std(dist.finite) if wd or kind == "control" else "0",
                        _col(done, _last("hidden_norm")),
                        _col(done, _last("norm/readout")),
                        _col(done, _last("eta_eff_hidden")),
                        _col(done, _last("angle_hidden")),
                        fmt_mean_std(share.finite) if wd == 0 and kind == "train"
                        and dataset == "mnist1d" else "",
                    ])
    return header, rows


def _wd_label(wd: float) -> str:
    return "0" if wd == 0 else f"{wd:g}"


def figures(results: Results, out_dir: Path) -> list[Path]:
    """Accuracy vs λ, norms / η_eff / angles over training, and the audit table."""
    out_dir = Path(out_dir)
    paths = [_fig_accuracy(results, out_dir)]
    p = _fig_training(results, out_dir)
    if p is not None:
        paths.append(p)
    p = _fig_audit(results, out_dir)
    if p is not None:
        paths.append(p)
    return paths


def _fig_accuracy(results: Results, out_dir: Path) -> Path:
    from lnlab.plotting import COLORS, figure, legend_outside, save

    datasets = results.select(kind="train").values("dataset")
    with figure(ncols=max(1, len(datasets)), nrows=2, width=3.6, height=2.6) as (fig, axes):
        axes = axes.reshape(2, -1) if hasattr(axes, "reshape") else [[axes], [axes]]
        for j, dataset in enumerate(datasets):
            wds = sorted(results.select(kind="train", dataset=dataset).values("wd"))
            xs = list(range(len(wds)))
            for i, arch in enumerate(ARCHS):
                if not results.select(kind="train", dataset=dataset, arch=arch).runs:
                    continue  # no legend entry for a form this sweep did not train
                for row, metric in enumerate(("acc", "dist")):
                    ax = axes[row][j]
                    means, stds = [], []
                    for wd in wds:
                        if metric == "acc":
                            m = results.per_seed(_acc, kind="train", dataset=dataset,
                                                 arch=arch, wd=wd)
                        else:
                            m = function_distance(results, dataset, arch, wd)
                        means.append(m.mean)
                        stds.append(m.std)
                    ax.errorbar([x + 0.04 * (i - 2.5) for x in xs], means, yerr=stds,
                                marker="o", ms=3, color=COLORS[i], label=arch)
                    ctrl = results.select(kind="control", dataset=dataset, arch=arch,
                                          exact=True)
                    for wd in ctrl.values("wd"):
                        if wd not in wds:
                            continue
                        if metric == "acc":
                            m = ctrl.per_seed(_acc, wd=wd)
                        else:
                            m = function_distance(results, dataset, arch, wd, "control",
                                                  exact=True)
                        ax.errorbar([wds.index(wd) + 0.2 + 0.04 * (i - 2.5)], [m.mean],
                                    yerr=[m.std], marker="s", mfc="white", ms=4,
                                    color=COLORS[i], ls="none")
            for row, ylabel in enumerate(("final test accuracy (%)",
                                          "test disagreement vs λ=0 (%)")):
                ax = axes[row][j]
                ax.set_xticks(xs, [_wd_label(w) for w in wds])
                ax.set_xlabel("hidden weight decay λ")
                ax.set_ylabel(ylabel)
                ax.set_title(f"{dataset}  (□ = norm-matched control, no decay)", fontsize=8)
        legend_outside(fig, [axes[0][0]], ncol=3)
        return save(fig, out_dir / "accuracy_vs_weight_decay.png")


def _fig_training(results: Results, out_dir: Path) -> Path | None:
    from lnlab.plotting import COLORS, curves_with_band, legend_outside, panel_figure, save

    sel = results.select(kind="train", dataset="mnist1d", status="finished")
    if not sel.runs:
        return None
    archs = [a for a in ARCHS if sel.select(arch=a).runs]
    wds = sorted(sel.values("wd"))
    cols = (("hidden_norm", "hidden ‖w‖ (all hidden layers)", True),
            ("norm/readout", "readout ‖w‖", False),
            ("eta_eff_hidden", "η_eff = η/‖w‖² (mean over hidden layers)", True),
            ("angle_hidden", "mean angle per step (rad)", True))
    # two quantities a row (one architecture = two rows): four a row is too wide to read
    with panel_figure(len(archs) * len(cols), max_cols=2, width=2.9,
                      height=2.0) as (fig, axes):
        for i, arch in enumerate(archs):
            for j, (metric, label, log) in enumerate(cols):
                (ax,) = axes[i * len(cols) + j]
                for k, wd in enumerate(wds):
                    runs = sel.select(arch=arch, wd=wd).runs
                    curves = [r.curve(metric) for r in runs]
                    curves_with_band(ax, [c for c in curves if c[0]], label=f"λ={_wd_label(wd)}",
                                     color=COLORS[k])
                    if metric == "angle_hidden" and wd > 0:
                        eta = float(runs[0].get("train.lr")) if runs else LR
                        ax.axhline(math.sqrt(2 * eta * wd), color=COLORS[k], ls=":", lw=1)
                ctrl = results.select(kind="control", dataset="mnist1d", arch=arch,
                                      exact=True, status="finished").runs
                curves = [r.curve(metric) for r in ctrl]
                if any(c[0] for c in curves):
                    curves_with_band(ax, [c for c in curves if c[0]], label="control",
                                     color="black")
                if log:
                    ax.set_yscale("log")
                ax.set_title(f"{arch}: {label}", fontsize=8)
                ax.set_xlabel("epoch")
        legend_outside(fig, axes[0], ncol=4)
        return save(fig, out_dir / "norms_eta_eff_angles.png")


def audit_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """The invariance table per architecture (trained λ = 0 MNIST-1D models, first seed)."""
    header = ["arch", "hidden layers invariant", "readout", "joint stream",
              "unconstrained share", "infimum / current", "hidden decay step Δ",
              "block decay Δ (b2 kept)", "blog's expectation"]
    blog = {"none": "no LN: nothing invariant", "ln": "hidden invariant",
            "pre": "broken by residual", "pre+final": "broken by residual",
            "post": "same problem (invariant)", "branch": "same problem (invariant)"}
    rows = []
    for arch in ARCHS:
        runs = sorted(results.select(kind="train", arch=arch, static=True,
                                     status="finished").runs, key=lambda r: r.seed)
        runs = [r for r in runs if "static/verdicts" in r.summary]
        if not runs:
            continue
        s = runs[0].summary
        verdicts = dict(v.split("=", 1) for v in str(s["static/verdicts"]).split("; "))
        hidden = {g: v for g, v in verdicts.items() if g != "readout"}
        inv = sum(v.startswith("invariant") for v in hidden.values())
        rows.append([arch, f"{inv}/{len(hidden)}", verdicts.get("readout", "?"),
                     str(s.get("static/stream_verdict", "–")),
                     f"{s['static/unconstrained_share']:.1%}",
                     f"{s['static/infimum_ratio']:.1%}",
                     f"{s['static/decay_step']:.1e}",
                     f"{s.get('static/decay_step_keep_b2', math.nan):.1e}", blog[arch]])
    return header, rows


def _fig_audit(results: Results, out_dir: Path) -> Path | None:
    from lnlab.plotting import figure, save

    header, rows = audit_rows(results)
    if not rows:
        return None
    import textwrap

    # ~10 in at DPI: fits the report width; long headers wrap onto two lines
    with figure(width=10.0, height=0.4 * (len(rows) + 3)) as (fig, ax):
        ax.axis("off")
        tab = ax.table(cellText=rows, colLabels=[textwrap.fill(h, 16) for h in header],
                       loc="center", cellLoc="center")
        tab.auto_set_font_size(False)
        tab.set_fontsize(7)
        tab.scale(1.0, 1.3)
        for (r, _c), cell in tab.get_celld().items():
            if r == 0:
                cell.set_height(cell.get_height() * 1.6)
        ax.set_title("scale-invariance audit of the trained λ=0 MNIST-1D models, first seed\n"
                     "(float64, eps=0; decay step: parameters × e^-1, the effect of 1/(ηλ) "
                     "decay steps)", fontsize=8)
        return save(fig, out_dir / "audit_table.png")
