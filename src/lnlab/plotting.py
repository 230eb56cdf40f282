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

__all__ = ["COLORS", "DPI", "MAX_COLS", "bars_with_seeds", "curves_with_band", "figure",
           "legend_outside", "panel_figure", "save", "sparse_symlog"]

DPI = 160
# At most this many panels side by side: the report shows figures ~1,100 px wide, and wider
# figures shrink until ticks and legends are unreadable.
MAX_COLS = 3
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


@contextmanager
def panel_figure(n: int, *, rows_per_panel: int = 1, max_cols: int = MAX_COLS,
                 width: float = 3.4, height: float = 2.6,
                 sharex: bool = False) -> Iterator[tuple[Figure, list[list[Axes]]]]:
    """``n`` panels wrapped into rows of at most ``max_cols``; each panel is a column of
    ``rows_per_panel`` axes. Yields (fig, panels) with ``panels[k]`` the axes of panel k
    (top to bottom); unused grid cells are hidden. Keeps wide sweeps legible in the report."""
    n = max(1, n)
    ncols = min(n, max_cols)
    grid_rows = math.ceil(n / ncols)
    nrows = grid_rows * rows_per_panel
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                                 squeeze=False, layout="constrained", sharex=sharex)
        try:
            panels = []
            for k in range(grid_rows * ncols):
                r, c = divmod(k, ncols)
                col = [axes[r * rows_per_panel + i][c] for i in range(rows_per_panel)]
                if k < n:
                    panels.append(col)
                else:
                    for ax in col:
                        ax.set_visible(False)
            yield fig, panels
        finally:
            plt.close(fig)


def legend_outside(fig: Figure, axes: Sequence[Axes] | None = None, *, ncol: int = 3,
                   loc: str = "outside lower center") -> None:
    """One figure-level legend outside all axes, so it never covers bars or lines.

    Handles are collected from ``axes`` (default: every axis, twins included) and
    de-duplicated by label. Needs the constrained layout that ``figure()`` uses.
    """
    seen: dict[str, Any] = {}
    for ax in (axes if axes is not None else fig.axes):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab and not lab.startswith("_"):
                seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc=loc,
                   ncol=max(1, min(ncol, len(seen))))


def sparse_symlog(ax: Axes, axis: str = "both", *, linthresh: float, max_ticks: int = 7) -> None:
    """Symlog scale with ticks at 0 and ±10^k, thinned to at most ``max_ticks``.

    Matplotlib's default symlog locator labels every decade on both signs, which collides
    on a small axis; keeping every k-th decade (and 0) stays readable.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    for name in (("x", "y") if axis == "both" else (axis,)):
        getattr(ax, f"set_{name}scale")("symlog", linthresh=linthresh)
        lo, hi = getattr(ax, f"get_{name}lim")()
        top = max(abs(lo), abs(hi), linthresh)
        # ±linthresh sits one linear decade from 0 and its label would touch "0": skip it
        k_lo, k_hi = math.ceil(math.log10(linthresh)) + 1, math.floor(math.log10(top))
        decades = list(range(k_lo, k_hi + 1)) or [k_hi]
        both = int(lo < 0) + int(hi > 0)
        per_side = max(1, (max_ticks - 1) // max(1, both))
        stride = math.ceil(len(decades) / per_side)
        keep = decades[::-1][::stride][::-1]
        ticks = [0.0]
        if hi > 0:
            ticks += [10.0 ** k for k in keep]
        if lo < 0:
            ticks += [-(10.0 ** k) for k in keep]
        axis_obj = getattr(ax, f"{name}axis")
        axis_obj.set_major_locator(FixedLocator(sorted(ticks)))
        axis_obj.set_minor_locator(NullLocator())

        def fmt(v: float, _pos: Any) -> str:
            if v == 0:
                return "0"
            return f"{'−' if v < 0 else ''}$10^{{{round(math.log10(abs(v)))}}}$"

        axis_obj.set_major_formatter(FuncFormatter(fmt))
        getattr(ax, f"set_{name}lim")(lo, hi)


def _thin_log_minor_labels(fig: Figure, max_labels: int = 4) -> None:
    """On a log axis spanning under a decade matplotlib labels every minor tick as
    ``a×10^b``, which stacks up on a small panel: keep at most ``max_labels`` of them, plain."""
    from matplotlib.ticker import FuncFormatter

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "log":
                continue
            lo, hi = sorted(axis.get_view_interval())
            if lo <= 0 or hi / lo >= 10:
                continue
            locs = [t for t in axis.get_minorticklocs() if lo <= t <= hi]
            stride = max(1, math.ceil(len(locs) / max_labels))
            keep = {float(t) for t in locs[::stride]}

            def fmt(v: float, _pos: Any, keep: set[float] = keep) -> str:
                return f"{v:.3g}" if any(math.isclose(v, k) for k in keep) else ""

            axis.set_minor_formatter(FuncFormatter(fmt))


def save(fig: Figure, path: str | Path) -> Path:
    """Render to PNG at ``DPI`` and write atomically."""
    _thin_log_minor_labels(fig)
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
                    reference: dict[str, float] | None = None, fmt: str = "{:.3f}",
                    legend: bool = True) -> None:
    """Bars at the mean, error bars ± std over seeds, one dot per seed, value on top.

    ``reference`` draws labelled dashed lines (e.g. a published number) across the axes;
    pass ``legend=False`` and call ``legend_outside`` to keep their legend off the bars.
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
    if reference and legend:
        ax.legend(loc="best", frameon=True, framealpha=0.85)


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
