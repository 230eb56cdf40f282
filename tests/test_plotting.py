"""The shared plotting helpers: panel wrapping, legends outside the axes, sparse symlog ticks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnlab.plotting import MAX_COLS, figure, legend_outside, panel_figure, sparse_symlog


@given(n=st.integers(1, 10), rows=st.integers(1, 3))
@settings(max_examples=25, deadline=None)
def test_panel_figure_wraps_rows_and_hides_spare_cells(n: int, rows: int) -> None:
    with panel_figure(n, rows_per_panel=rows, width=1.0, height=1.0) as (fig, panels):
        assert len(panels) == n and all(len(p) == rows for p in panels)
        ncols = min(n, MAX_COLS)
        assert fig.get_figwidth() == pytest.approx(ncols * 1.0)
        assert fig.get_figheight() == pytest.approx(math.ceil(n / ncols) * rows * 1.0)
        used = {id(ax) for p in panels for ax in p}
        assert all(ax.get_visible() == (id(ax) in used) for ax in fig.axes)


def test_legend_outside_does_not_overlap_any_axes() -> None:
    with panel_figure(4, width=2.0, height=1.6) as (fig, panels):
        for k, (ax,) in enumerate(panels):
            ax.plot([0, 1], [k, k + 1], label="a")
            ax.bar([0, 1], [1, 2], label="b")
        tw = panels[0][0].twinx()
        tw.plot([0, 1], [2, 1], label="c")
        legend_outside(fig)
        fig.canvas.draw()
        (leg,) = fig.legends
        assert [t.get_text() for t in leg.get_texts()] == ["a", "b", "c"]  # de-duplicated
        r = fig.canvas.get_renderer()
        box = leg.get_window_extent(r)
        for ax in fig.axes:
            if ax.get_visible():
                assert not box.overlaps(ax.get_window_extent(r))


def test_legend_outside_without_labels_draws_nothing() -> None:
    with figure() as (fig, ax):
        ax.plot([0, 1], [0, 1])
        legend_outside(fig)
        assert fig.legends == []


@pytest.mark.parametrize("top", [1e-2, 1e3, 1e-5])
def test_sparse_symlog_ticks_are_few_decades_and_zero(top: float) -> None:
    with figure() as (_fig, ax):
        ax.scatter([-top, top, 0.0], [-top, top, 0.0])
        sparse_symlog(ax, linthresh=1e-6, max_ticks=7)
        for axis in (ax.xaxis, ax.yaxis):
            ticks = list(axis.get_majorticklocs())
            assert len(ticks) <= 7 and 0.0 in ticks
            assert ticks == sorted(ticks) and [-t for t in ticks] == ticks[::-1]  # symmetric
            for t in ticks:  # only 0 and exact powers of ten above linthresh
                if t:
                    k = math.log10(abs(t))
                    assert k == round(k) and abs(t) > 1e-6
            labels = [axis.get_major_formatter()(t, i) for i, t in enumerate(ticks)]
            assert "0" in labels and all(lab for lab in labels)


def test_save_thins_minor_labels_on_a_narrow_log_axis(tmp_path) -> None:
    from lnlab.plotting import save

    with figure() as (fig, ax):
        ax.plot([0, 1], [2.7, 3.5])
        ax.set_yscale("log")
        save(fig, tmp_path / "f.png")
        fig.canvas.draw()
        shown = [t.get_text() for t in ax.yaxis.get_minorticklabels() if t.get_text()]
        assert 1 <= len(shown) <= 4 and all("10" not in s for s in shown), shown
