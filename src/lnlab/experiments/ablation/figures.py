"""The ablation's results table (variants × task and depth) and its three figures."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from lnlab.experiments.ablation.measures import _cells, _gstat_sites, score
from lnlab.experiments.ablation.sweep import ADANORM, LM_TASK, TASK_LABELS, TASKS, VARIANTS
from lnlab.experiments.framework import Results, Run, fmt_mean_std

__all__ = ["cell", "figures", "table"]


def _variants(results: Results) -> list[str]:
    present = set(results.values("variant"))
    return [v for v in VARIANTS if v in present]


def _columns(results: Results) -> list[tuple[str, int]]:
    return _cells(results, TASKS)


def cell(runs: list[Run]) -> str:
    """mean ± std of the score over finished runs; diverged runs marked, as in the paper."""
    if not runs:
        return "–"
    div = sum(r.status == "diverged" for r in runs)
    failed = sum(r.status not in ("finished", "diverged") for r in runs)
    xs = [score(r) for r in runs if r.status == "finished"]
    xs = [x for x in xs if math.isfinite(x)]
    if div == len(runs):
        return "diverged"
    lm = runs[0].get("task") == LM_TASK
    text = fmt_mean_std(xs, digits=3 if lm else 4)
    notes = []
    if div:
        notes.append(f"{div}/{len(runs)} diverged")
    if failed:
        notes.append(f"{failed} failed")
    return text + (f" ({', '.join(notes)})" if notes else "")


def table(results: Results) -> tuple[list[str], list[list[str]]]:
    """Variants × (task, depth): test accuracy (%) or validation bpc, mean ± std over seeds."""
    cols = _columns(results)
    header = ["variant", *(f"{TASK_LABELS.get(t, t)} d={d}" for t, d in cols)]
    rows = []
    for v in _variants(results):
        row = [VARIANTS[v][1]]
        for t, d in cols:
            row.append(cell(results.select(task=t, depth=d, variant=v).runs))
        rows.append(row)
    return header, rows


def figures(results: Results, out_dir: Path) -> list[Path]:
    """Score against depth, convergence curves, and A1's gradient statistics on real batches."""
    from lnlab.plotting import COLORS

    out_dir = Path(out_dir)
    variants = _variants(results)
    color = {v: COLORS[i % len(COLORS)] for i, v in enumerate(variants)}
    tasks = [t for t in TASKS if len(results.select(task=t))]
    depths = sorted(results.values("depth"))
    if not tasks:
        return []
    made = [_by_depth(results, out_dir, variants, color, tasks, depths),
            _convergence(results, out_dir, variants, color, tasks, depths),
            _gradient_stats(results, out_dir, variants, color)]
    return [p for p in made if p is not None]


def _by_depth(results: Results, out_dir: Path, variants: list[str], color: dict[str, str],
              tasks: list[str], depths: list[int]) -> Path | None:
    """Score against depth per task; diverged runs as crosses at the chance level."""
    from lnlab.plotting import legend_outside, panel_figure, save

    with panel_figure(len(tasks), width=2.9, height=2.4) as (fig, axes):
        for (ax,), task in zip(axes, tasks, strict=True):
            for v in variants:
                xs, ms, ss = [], [], []
                for d in depths:
                    runs = results.select(task=task, depth=d, variant=v).runs
                    vals = [score(r) for r in runs if r.status == "finished"]
                    vals = [x for x in vals if math.isfinite(x)]
                    if vals:
                        xs.append(d)
                        ms.append(statistics.fmean(vals))
                        ss.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
                    div = [score(r) for r in runs if r.status == "diverged"]
                    if div:
                        ax.scatter([d] * len(div), div, marker="x", color=color[v], zorder=3)
                if xs:
                    ax.errorbar(xs, ms, yerr=ss, marker="o", ms=3, color=color[v],
                                label=VARIANTS[v][1])
            ax.set_xticks(depths)
            ax.set_xlabel("blocks")
            ax.set_ylabel("validation bpc (lower is better)" if task == LM_TASK
                          else "test accuracy (%)")
            ax.set_title(TASK_LABELS.get(task, task))
        legend_outside(fig)
        return save(fig, out_dir / "ablation_by_depth.png")


def _convergence(results: Results, out_dir: Path, variants: list[str],
                 color: dict[str, str], tasks: list[str], depths: list[int]) -> Path | None:
    """Training (dashed) vs validation (solid) loss per variant at the shallowest depth."""
    from lnlab.plotting import legend_outside, panel_figure, save

    shown = [v for v in ("layernorm", "layernorm_simple", ADANORM, "detach_both", "none")
             if v in variants]
    with panel_figure(len(tasks), width=2.9, height=2.4) as (fig, axes):
        for (ax,), task in zip(axes, tasks, strict=True):
            for v in shown:
                runs = results.select(task=task, depth=depths[0], variant=v,
                                      status="finished").runs
                for key, ls in (("train_loss", "--"), ("test_loss", "-")):
                    curves = [r.curve(key) for r in runs]
                    curves = [c for c in curves if c[0]]
                    if not curves:
                        continue
                    n = min(len(c[1]) for c in curves)
                    mean = [statistics.fmean(c[1][i] for c in curves) for i in range(n)]
                    ax.plot(curves[0][0][:n], mean, ls=ls, color=color[v],
                            label=f"{VARIANTS[v][1]} ({'train' if key == 'train_loss' else 'val'})")
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss (nats)")
            ax.set_title(f"{TASK_LABELS.get(task, task).removesuffix(' (bpc)')}, "
                         f"d={depths[0]}")
        legend_outside(fig, ncol=2)
        return save(fig, out_dir / "ablation_convergence.png")


def _gradient_stats(results: Results, out_dir: Path, variants: list[str],
                    color: dict[str, str]) -> Path | None:
    """A1 on real batches: measured variance and mean of ∂ℓ/∂x against D_g/σ² and ḡ/σ."""
    from lnlab.plotting import figure, legend_outside, save, sparse_symlog

    pts: dict[str, list[tuple[float, float, float, float]]] = {}
    for r in results.select(status="finished").runs:
        for st in _gstat_sites(r):
            for site, var in st["var"].items():
                pts.setdefault(r.get("variant"), []).append(
                    (st["g_var_over_sigma2"][site], var, st["g_mean_over_sigma"][site],
                     st["mean"][site]))
    if not pts:
        return None
    with figure(ncols=2, width=3.4, height=3.0) as (fig, (ax1, ax2)):
        for v in variants:
            if v not in pts:
                continue
            p = pts[v]
            ax1.scatter([a[0] for a in p], [a[1] for a in p], s=6, color=color[v],
                        label=VARIANTS[v][1], alpha=0.7)
            ax2.scatter([a[2] for a in p], [a[3] for a in p], s=6, color=color[v],
                        alpha=0.7)
        for ax in (ax1, ax2):
            lo, hi = ax.get_xlim()
            ax.plot([lo, hi], [lo, hi], color="black", lw=0.7, ls=":")
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        ax1.set_xlabel("D_g/σ² (upstream variance / σ²)")
        ax1.set_ylabel("measured var(∂ℓ/∂x)")
        ax1.set_title("re-scaling: below the diagonal iff σ path kept")
        sparse_symlog(ax2, linthresh=1e-6)
        ax2.set_xlabel("ḡ/σ")
        ax2.set_ylabel("measured mean(∂ℓ/∂x)")
        ax2.set_title("re-centring: 0 iff μ path kept")
        legend_outside(fig, [ax1])
        return save(fig, out_dir / "ablation_gradient_stats.png")
