"""The memorization results table and figures in the style of the paper's Figs. 1–4."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lnlab.experiments.framework import Results, Run, fmt_mean_std
from lnlab.experiments.memorization.measures import _gap, _pct, _share, _sites
from lnlab.experiments.memorization.sweep import GROUP_ARMS

__all__ = ["figures", "table"]


def table(results: Results) -> tuple[list[str], list[list[str]]]:
    """One row per (setting, regime, family, arm): accuracy, gap and noisy-sample shares."""
    header = ["setting", "regime", "LN", "model", "arm", "runs", "epochs", "train acc (%)",
              "test acc (%)", "gap (points)", "mem (%)", "rec (%)", "rand (%)"]
    rows = []
    keys = dict.fromkeys((r.get("setting"), r.get("regime"), r.get("family"), r.get("model"),
                          tuple(r.get("arms") or [])) for r in results.runs)
    for setting, regime, fam, model, arms in keys:
        sel = results.select(setting=setting, regime=regime, family=fam, model=model)
        done = sel.select(status="finished").runs
        for arm in ("intact", *arms):
            def col(f: Any, done: list[Run] = done) -> str:
                return fmt_mean_std([v for r in done if (v := f(r)) is not None])
            rows.append([setting, regime, fam, model.split(",")[0], arm,
                         f"{len(done)}/{len(sel)}",
                         col(lambda r, a=arm: r.summary.get(f"{a}/epochs_run")),
                         col(_pct(arm, "final_train_acc")), col(_pct(arm, "final_test_acc")),
                         col(_gap(arm)), col(_share(arm, "mem")), col(_share(arm, "rec")),
                         col(_share(arm, "rand"))])
    return header, rows


def extra_tables(results: Results) -> list[tuple[str, list[str], list[list[str]]]]:
    """The real-pretrained setting's table (paper scale): per arm, mean [95% t-interval] over
    seeds, then every seed, with the memorization delay (epochs to 50/90/100%); and the fold
    control of own pretraining (Pre-LN)."""
    from lnlab.experiments.memorization.pretrained import pretrained_table

    out = []
    if results.select(setting="pretrained", status="finished").runs:
        header, rows = pretrained_table(results)
        h2, per = pretrained_table(results, per_seed=True)
        out += [("Real pretrained checkpoint: mean [95% CI] over seeds", header, rows),
                ("Real pretrained checkpoint: per seed", h2, per)]
    fold = fold_table(results)
    if fold[1]:
        out.append(("Own pretraining, Pre-LN: reset vs folded (mean [95% CI] over seeds)",
                    *fold))
    return out


def fold_table(results: Results) -> tuple[list[str], list[list[str]]]:
    """Per arm of own pretraining's Pre-LN runs: what the removal does at step 0 and after
    fine-tuning. ``all`` discards the pretrained LN values (the function changes), ``folded``
    removes the same parameters keeping the function: if both hurt alike, the parameters
    explain the effect; if only ``all`` does, the changed function does."""
    from lnlab.experiments.claims import interval

    runs = results.select(regime="own-pretrained", family="pre", status="finished").runs
    runs = [r for r in runs if "folded" in r.get("arms", [])]
    header = ["arm", "seeds", "Δtest acc vs intact (points)", "mem (%)", "rec (%)",
              "step-0 KL", "step-0 argmax agreement"]
    rows: list[list[str]] = []
    if not runs:
        return header, rows

    def cell(xs: list[float]) -> str:
        if not xs:
            return "–"
        m, (lo, hi) = sum(xs) / len(xs), interval(xs, 0.95, "t")
        return f"{m:.3g}" + (f" [{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) else "")

    for arm in ("all", "folded"):
        d = [100 * (r.summary[f"{arm}/final_test_acc"] - r.summary["intact/final_test_acc"])
             for r in runs if f"{arm}/final_test_acc" in r.summary]
        rows.append([arm, str(len(runs)), cell(d),
                     cell([v for r in runs if (v := _share(arm, "mem")(r)) is not None]),
                     cell([v for r in runs if (v := _share(arm, "rec")(r)) is not None]),
                     cell([float(r.summary[f"{arm}/step0_kl"]) for r in runs
                           if f"{arm}/step0_kl" in r.summary]),
                     cell([float(r.summary[f"{arm}/step0_agree"]) for r in runs
                           if f"{arm}/step0_agree" in r.summary])])
    return header, rows


@dataclass
class _Panels:
    """The finished runs and one panel per (setting, LN placement, model) to draw."""

    done: Results
    panels: list[tuple[str, str, str]]

    def title_of(self, s: str, f: str, m: str) -> str:
        return {"pre": "Pre-LN", "post": "Post-LN"}[f] + (
            f" {m.split(':')[1]}" if m.startswith("hf:") else "")

    def regime(self, s: str) -> str:
        return str(self.done.select(setting=s).runs[0].get("regime"))


def figures(results: Results, out_dir: Path) -> list[Path]:
    """Figures in the style of the paper's Figs. 1–4 (one panel per setting / family)."""
    out_dir = Path(out_dir)
    done = results.select(status="finished")
    settings = [s for s in done.values("setting") if s]
    if not settings:
        return []
    # one panel per (setting, LN placement, model): a user may pass two Pre-LN models
    panels = [(s, f, m) for s in settings for f in ("pre", "post")
              for m in done.select(setting=s, family=f).values("model")]
    p = _Panels(done, panels)
    made = [draw(p, out_dir) for draw in (_fig_accuracy, _fig_shares, _fig_curves, _fig_groups,
                                          _fig_gradients)]
    return [path for path in made if path is not None]


def _fig_accuracy(p: _Panels, out_dir: Path) -> Path | None:
    """Fig. 1 style: test accuracy intact vs LN removed (all)."""
    from lnlab.plotting import COLORS, bars_with_seeds, panel_figure, save

    done, panels, title_of, regime = p.done, p.panels, p.title_of, p.regime
    with panel_figure(len(panels), width=2.4, height=2.6) as (fig, axes):
        for (ax,), (s, f, m) in zip(axes, panels, strict=True):
            sel = done.select(setting=s, family=f, model=m)
            vals = [list(sel.per_seed(_pct(a, "final_test_acc")).values.values())
                    for a in ("intact", "all")]
            bars_with_seeds(ax, ["intact", "LN removed"], vals, ylabel="test accuracy (%)",
                            colors=[COLORS[0], COLORS[3]], fmt="{:.1f}")
            ax.set_title(f"{s} ({regime(s)})\n{title_of(s, f, m)}", fontsize=8)
            ax.set_ylim(0, 105)
        return save(fig, out_dir / "memorization_test_accuracy.png")


def _fig_shares(p: _Panels, out_dir: Path) -> Path | None:
    """Fig. 1b/d style: stacked memorization / recovery / random bars."""
    from lnlab.plotting import COLORS, legend_outside, panel_figure, save

    done, panels, title_of, regime = p.done, p.panels, p.title_of, p.regime
    with panel_figure(len(panels), width=2.4, height=2.6) as (fig, axes):
        for (ax,), (s, f, m) in zip(axes, panels, strict=True):
            sel = done.select(setting=s, family=f, model=m)
            arms = ["intact", *(sel.runs[0].get("arms") or [])]
            bottom = [0.0] * len(arms)
            for i, kind in enumerate(("mem", "rec", "rand")):
                h = [statistics.fmean(v) if (v := list(sel.per_seed(
                    _share(a, kind)).values.values())) else 0.0 for a in arms]
                ax.bar(arms, h, bottom=bottom, color=(COLORS[3], COLORS[2], "#999999")[i],
                       label={"mem": "memorization", "rec": "recovery",
                              "rand": "random"}[kind])
                bottom = [b + x for b, x in zip(bottom, h, strict=True)]
            ax.set_ylim(0, 100)
            ax.set_ylabel("share of noisy samples (%)")
            ax.set_title(f"{s} ({regime(s)})\n{title_of(s, f, m)}", fontsize=8)
            ax.tick_params(axis="x", labelrotation=30)
        legend_outside(fig, axes[0])
        return save(fig, out_dir / "memorization_shares.png")


def _fig_curves(p: _Panels, out_dir: Path) -> Path | None:
    """Fig. 2 style: test accuracy and memorization over epochs, intact vs removed."""
    from lnlab.plotting import COLORS, curves_with_band, legend_outside, panel_figure, save

    done, panels, title_of = p.done, p.panels, p.title_of
    with panel_figure(len(panels), rows_per_panel=2, width=2.6, height=2.0) as (fig, axes):
        for j, (s, f, m) in enumerate(panels):
            sel = done.select(setting=s, family=f, model=m).runs
            for i, (metric, lab) in enumerate((("test_acc", "test accuracy (%)"),
                                                ("mem", "memorization (%)"))):
                ax = axes[j][i]
                for k, arm in enumerate(("intact", "all")):
                    curves = [r.curve(f"{arm}/{metric}") for r in sel]
                    curves = [(x, [100 * v for v in y]) for x, y in curves if x]
                    curves_with_band(ax, curves, label=arm, color=COLORS[(0, 3)[k]])
                ax.set_xlabel("epoch")
                ax.set_ylabel(lab)
                if i == 0:
                    ax.set_title(f"{s}: {title_of(s, f, m)}", fontsize=8)
        legend_outside(fig, axes[0][:1])
        return save(fig, out_dir / "memorization_curves.png")


def _fig_groups(p: _Panels, out_dir: Path) -> Path | None:
    """Fig. 3 style: early / middle / later removal."""
    from lnlab.plotting import COLORS, bars_with_seeds, legend_outside, panel_figure, save

    done, panels, title_of, regime = p.done, p.panels, p.title_of, p.regime
    grp = [(s, f, m) for s, f, m in panels
           if set(GROUP_ARMS) <= set(done.select(setting=s, family=f, model=m).runs[0]
                                     .get("arms"))]
    if not grp:
        return None
    with panel_figure(len(grp), rows_per_panel=2, width=2.6, height=2.3) as (fig, axes):
        for j, (s, f, m) in enumerate(grp):
            sel = done.select(setting=s, family=f, model=m)
            arms = ["intact", *GROUP_ARMS, "all"]
            ax = axes[j][0]
            vals = [list(sel.per_seed(_pct(a, "final_test_acc")).values.values())
                    for a in arms]
            bars_with_seeds(ax, arms, vals, ylabel="test accuracy (%)", fmt="{:.1f}")
            ax.set_title(f"{s} ({regime(s)}): {title_of(s, f, m)}", fontsize=8)
            ax.set_ylim(0, 105)
            ax = axes[j][1]
            width = 0.27
            for i, kind in enumerate(("mem", "rec", "gap")):
                f_ = _gap if kind == "gap" else (lambda a, k=kind: _share(a, k))
                h = [statistics.fmean(v) if (v := list(sel.per_seed(
                    f_(a)).values.values())) else 0.0 for a in arms]
                ax.bar([x + (i - 1) * width for x in range(len(arms))], h, width,
                       label={"mem": "memorization (%)", "rec": "recovery (%)",
                              "gap": "Δ overfit (points)"}[kind], color=COLORS[(3, 2, 4)[i]])
            ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right")
        legend_outside(fig, axes[0][1:])
        return save(fig, out_dir / "memorization_groups.png")


def _fig_gradients(p: _Panels, out_dir: Path) -> Path | None:
    """Fig. 4 style: learning vs memorization gradient norm per LN (intact), ratio on a
    twin axis; where memorization is incomplete, the mean over all noisy samples too."""
    from lnlab.plotting import COLORS, legend_outside, panel_figure, save

    done, panels, title_of, regime = p.done, p.panels, p.title_of, p.regime
    gpanels = [(s, f, m) for s, f, m in panels
               if any(_sites(r) for r in done.select(setting=s, family=f, model=m).runs)]
    if not gpanels:
        return None
    with panel_figure(len(gpanels), rows_per_panel=2, width=2.8, height=2.3) as (fig, axes):
        twins, extra = [], []
        for j, (s, f, m) in enumerate(gpanels):
            runs = done.select(setting=s, family=f, model=m).runs
            for i, part in enumerate(("total", "branch")):
                ax = axes[j][i]
                names = [n for n, _ in _sites(runs[0], "intact", f"learn_{part}")]
                mean = {}
                for kind in ("learn", "mem"):
                    per = [dict(_sites(r, "intact", f"{kind}_{part}")) for r in runs]
                    mean[kind] = [statistics.fmean(p[n] for p in per if n in p)
                                  for n in names]
                xs = range(len(names))
                ax.plot(xs, mean["learn"], "o-", color=COLORS[0], label="learning")
                ax.plot(xs, mean["mem"], "s-", color=COLORS[1], label="memorization")
                noisy = [dict(_sites(r, "intact", "noisy_total")) for r in runs]
                if part == "total" and all(all(n in q for n in names) for q in noisy):
                    mixed = [statistics.fmean(q[n] for q in noisy) for n in names]
                    if any(abs(a - b) > 1e-12 * abs(b) for a, b in
                           zip(mixed, mean["mem"], strict=True)):  # memorization incomplete
                        ax.plot(xs, mixed, "^:", color=COLORS[2],
                                label="all noisy samples (incl. unmemorized)")
                        extra.append(ax)
                ax.set_yscale("log")
                ax.set_xticks(list(xs), [_short(n) for n in names], rotation=60,
                              fontsize=5)
                ax.set_ylabel(f"‖∂L/∂x_LN‖ ({part})")
                tw = ax.twinx()
                twins.append(tw)
                tw.plot(xs, [a / b if b > 0 else math.nan
                             for a, b in zip(mean["learn"], mean["mem"], strict=True)],
                        "--", color=COLORS[3], label="ratio")
                tw.set_ylabel("learn / mem", color=COLORS[3], fontsize=6)
                if i == 0:
                    ax.set_title(f"{s} ({regime(s)}): {title_of(s, f, m)}, intact", fontsize=8)
        legend_outside(fig, [axes[0][0], twins[0], *extra[:1]])
        return save(fig, out_dir / "memorization_gradients.png")


def _short(site: str) -> str:
    """``hf.bert.encoder.layer.3.attention.output.LayerNorm`` → ``3.attn.out.LN``."""
    parts = site.split(".")
    idx = [i for i, p in enumerate(parts) if p.isdigit()]
    tail = parts[idx[-1]:] if idx else parts[-2:]
    abbrev = {"LayerNorm": "LN", "attention": "attn", "output": "out"}
    return ".".join(abbrev.get(p, p) for p in tail)[-16:]
