"""Every figure an experiment writes at tiny scale stays legible at report width.

The report shows figures about 1,100 px wide; a figure much wider than ~1,800 px at its saved
dpi is shrunk until its ticks and legends cannot be read (the wide single-row sweeps did this).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lnlab.experiments import EXPERIMENTS, Results, get_experiment, run_experiment
from lnlab.runner.store import Store

MAX_WIDTH_PX = 1800


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_tiny_figures_fit_the_report_width(name: str, tmp_path: Path) -> None:
    out = tmp_path / "store"
    run_experiment(name, out, scale="tiny", seeds=2, workers=1, progress=False)
    with Store.open(out) as store:
        res = Results.from_store(store, [r.key for r in store.runs()], experiment=name)
    paths = get_experiment(name).figures(res, tmp_path / "figs")
    assert paths, f"{name} wrote no figure at tiny scale"
    widths = {p.name: Image.open(p).size[0] for p in paths}
    assert all(w <= MAX_WIDTH_PX for w in widths.values()), widths
