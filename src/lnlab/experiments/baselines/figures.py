"""The baselines figures: accuracy per arm with its seeds, and the test-accuracy curves."""

from __future__ import annotations

from pathlib import Path

from lnlab.experiments.baselines.measures import final_test_acc_pct
from lnlab.experiments.baselines.sweep import ARMS, DATASETS
from lnlab.experiments.framework import Results

__all__ = ["figures"]


def figures(results: Results, out_dir: Path) -> list[Path]:
    from lnlab.plotting import (
        COLORS,
        bars_with_seeds,
        curves_with_band,
        legend_outside,
        panel_figure,
        save,
    )

    out_dir = Path(out_dir)
    datasets = [d for d in DATASETS if len(results.select(dataset=d))]
    paths = []
    with panel_figure(len(datasets), width=3.2, height=2.8) as (fig, axes):
        for (ax,), dataset in zip(axes, datasets, strict=True):
            vals = [list(results.per_seed(final_test_acc_pct, dataset=dataset,
                                          arm=arm).values.values()) for arm in ARMS]
            ref = {"paper: logistic 32%": 32.0, "paper: MLP 68%": 68.0} \
                if dataset == "mnist1d" else None
            bars_with_seeds(ax, list(ARMS), vals, ylabel="final test accuracy (%)",
                            reference=ref, fmt="{:.1f}", legend=False)
            ax.set_title(f"{dataset} (mean ± std over seeds)")
            ax.set_ylim(0, 105)
        legend_outside(fig, ncol=2)
        paths.append(save(fig, out_dir / "test_accuracy.png"))
    with panel_figure(len(datasets), width=3.2, height=2.6) as (fig, axes):
        for (ax,), dataset in zip(axes, datasets, strict=True):
            for i, arm in enumerate(ARMS):
                runs = results.select(dataset=dataset, arm=arm, status="finished").runs
                curves = [r.curve("test_acc") for r in runs]
                curves = [(x, [100 * v for v in y]) for x, y in curves if x]
                curves_with_band(ax, curves, label=arm, color=COLORS[i])
            ax.set_xlabel("epoch")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{dataset}: test accuracy during training")
        legend_outside(fig, axes[0])
        paths.append(save(fig, out_dir / "test_accuracy_curves.png"))
    return paths
