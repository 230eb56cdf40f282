"""The report's one number formatter and its natural sort order."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lnlab.report.fmt import fmt_cell, fmt_num, natural_key, sort_rows


@pytest.mark.parametrize("x, text", [
    (0.3333, "0.333"), (0.58, "0.58"), (9.379e9, "9.38e9"), (1.6e10, "1.6e10"), (1.0, "1"),
    (1.01, "1.01"), (0.0001234, "1.23e-4"), (999.96, "1000"), (99999.0, "1e5"),
    (-2.5e-7, "-2.5e-7"), (0.0, "0"), (math.nan, "nan"), (-math.inf, "-inf"), (123.0, "123")])
def test_fmt_num_examples(x, text):
    assert fmt_num(x) == text


@given(st.floats(-1e300, 1e300).filter(lambda x: x != 0))  # 1.8e308 would read back as inf
def test_fmt_num_keeps_three_significant_figures(x):
    text = fmt_num(x)
    assert float(text) == pytest.approx(x, rel=5e-3)  # rounding to 3 figures: ≤ 0.5e-2
    digits = text.lstrip("-").split("e")[0].replace(".", "").lstrip("0")
    assert len(digits.rstrip("0")) <= 3


def test_fmt_cell_reformats_decimals_and_keeps_names_and_counts():
    assert fmt_cell("0.3333 ± 0.58") == "0.333 ± 0.58"
    assert fmt_cell("9.379e+09 ± 1.6e+10") == "9.38e9 ± 1.6e10"
    assert fmt_cell("2/3, 1 diverged") == "2/3, 1 diverged"
    assert fmt_cell("LN-G g16, v1.2.3, 99.5%") == "LN-G g16, v1.2.3, 99.5%"
    assert fmt_cell("12.3456 [1.23456, 20.0]") == "12.3 [1.23, 20]"


def test_natural_sort_puts_g2_before_g16():
    assert sorted(["g16", "g2", "g4", "G8"], key=natural_key) == ["g2", "g4", "G8", "g16"]
    assert sort_rows([["g16", "1"], ["g2", "2"]]) == [["g2", "2"], ["g16", "1"]]
    kept = [["z", "1"], ["a", "2"]]  # an order chosen on purpose stays
    assert sort_rows(kept) == kept
