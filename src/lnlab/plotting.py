"""One plotting style for every experiment figure (matplotlib, Agg, no display needed).

Why one module: figures from different experiments sit side by side in the report, so they
should share fonts, colours (Okabe–Ito, colour-blind safe), error-bar conventions (mean ± std
over seeds, individual seeds as dots) and resolution. Experiments call ``figure()``, draw with
the helpers or plain matplotlib, and ``save()`` — which writes the PNG atomically.
"""

from __future__ import annotations

import io
import math
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lnlab.io import write_atomic

__all__ = ["COLORS", "DPI", "bars_with_seeds", "curves_with_band", "figure", "save"]

DPI = 160
# Okabe & Ito (2008) palette: distinguishable with all common forms of colour blindness.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
          "#000000")
STYLE: dict[str, Any] = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5,
    "axes.prop_cycle": matplotlib.cycler(color=list(COLORS)), "figure.dpi": DPI,
    "savefig.dpi": DPI, "savefig.bbox": "tight", "lines.linewidth": 1.5,
    "errorbar.capsize": 3, "legend.frameon": False,
}


@contextmanager
def figure(ncols: int = 1, nrows: int = 1, *, width: float = 3.4,
           height: float = 2.6) -> Iterator[tuple[Figure, Any]]:
    """A styled figure; ``width``/``height`` are inches *per panel*. Yields (fig, axes)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                                 squeeze=True, layout="constrained")
        try:
            yield fig, axes
        finally:
            plt.close(fig)


def save(fig: Figure, path: str | Path) -> Path:
    """Render to PNG at ``DPI`` and write atomically."""
    buf = io.BytesIO()
    with plt.rc_context(STYLE):
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": "lnlab"})
    return write_atomic(path, buf.getvalue())


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    f = [x for x in xs if math.isfinite(x)]
    if not f:
        return math.nan, math.nan
    return statistics.fmean(f), (statistics.stdev(f) if len(f) > 1 else 0.0)


def bars_with_seeds(ax: Axes, labels: Sequence[str], values: Sequence[Sequence[float]], *,
                    ylabel: str, colors: Sequence[str] | None = None,
                    reference: dict[str, float] | None = None, fmt: str = "{:.3f}") -> None:
    """Bars at the mean, error bars ± std over seeds, one dot per seed, value on top.

    ``reference`` draws labelled dashed lines (e.g. a published number) across the axes.
    """
    colors = list(colors or COLORS)
    for i, (_label, xs) in enumerate(zip(labels, values, strict=True)):
        mean, std = _mean_std(xs)
        c = colors[i % len(colors)]
        ax.bar(i, 0 if math.isnan(mean) else mean, width=0.65, color=c, alpha=0.75,
               yerr=None if math.isnan(std) else std, ecolor="black", capsize=3,
               label=None, zorder=2)
        jitter = [(j - (len(xs) - 1) / 2) * 0.08 for j in range(len(xs))]
        ax.scatter([i + d for d in jitter], list(xs), s=9, color="black", zorder=3,
                   linewidths=0)
        if not math.isnan(mean):
            ax.annotate(fmt.format(mean), (i, mean + (std if std == std else 0)),
                        textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    for j, (name, y) in enumerate((reference or {}).items()):
        ax.axhline(y, color=COLORS[(j + 3) % len(COLORS)], ls="--", lw=1, label=name, zorder=1)
    ax.set_xticks(range(len(labels)), list(labels), rotation=20 if len(labels) > 4 else 0,
                  ha="right" if len(labels) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.grid(axis="x", visible=False)
    if reference:
        ax.legend(loc="best")


def curves_with_band(ax: Axes, curves: Sequence[tuple[Sequence[float], Sequence[float]]], *,
                     label: str, color: str | None = None) -> None:
    """Mean curve over seeds with a ± std band; curves are (x, y) pairs on a shared x grid."""
    if not curves:
        return
    xs = list(curves[0][0])
    n = min(len(c[1]) for c in curves)
    ys = [[float(c[1][i]) for c in curves] for i in range(n)]
    stats = [_mean_std(col) for col in ys]
    mean = [m for m, _ in stats]
    std = [s for _, s in stats]
    (line,) = ax.plot(xs[:n], mean, label=f"{label} (n={len(curves)})", color=color)
    ax.fill_between(xs[:n], [m - s for m, s in zip(mean, std, strict=True)],
                    [m + s for m, s in zip(mean, std, strict=True)],
                    color=line.get_color(), alpha=0.2, linewidth=0)
