"""One number formatter and one sort order for everything the report shows.

Why: tables came from many experiments, each formatting its own way ("0.3333 ± 0.58",
"9.379e+09 ± 1.6e+10"), and metric keys sorted as text put ``g16`` before ``g2``. Every number
the report prints goes through :func:`fmt_num`; every key list it sorts uses :func:`natural_key`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal

__all__ = ["SIG", "fmt_cell", "fmt_num", "natural_key", "sort_rows"]

SIG = 3  # significant figures of every number in the report
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")


def fmt_num(x: float, sig: int = SIG) -> str:
    """``x`` to ``sig`` significant figures, trailing zeros dropped; powers of ten as
    ``9.38e9`` outside [1e-3, 1e5) so columns stay narrow."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    sci = f"{x:.{sig - 1}e}"  # rounds once, at the sig-th figure (may carry: 999.96 → 1.00e+03)
    mant, exp = sci.split("e")[0], int(sci.split("e")[1])
    if -3 <= exp < 5:
        text = format(Decimal(sci), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{mant.rstrip('0').rstrip('.')}e{exp}"


def fmt_cell(text: str, sig: int = SIG) -> str:
    """Reformat every decimal number inside a table cell (``0.3333 ± 0.58`` → ``0.333 ±
    0.58``); integers (counts, seeds, ``2/3``) and names (``g16``, ``v1.2.3``) stay as written."""

    def one(m: re.Match[str]) -> str:
        tok = m.group(0)
        if not any(c in tok for c in ".eE"):
            return tok
        return fmt_num(float(tok), sig)

    return _NUMBER.sub(one, str(text))


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that compares digit runs as numbers: ``g2`` < ``g16``."""
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower())
                 for p in re.split(r"(\d+)", str(text)) if p)


def sort_rows(rows: Sequence[Sequence[str]]) -> list[list[str]]:
    """Rows that an experiment sorted as plain text are re-sorted naturally; rows in any other
    order were ordered on purpose and are kept."""
    rows = [list(r) for r in rows]
    if rows == sorted(rows, key=lambda r: [str(c) for c in r]):
        return sorted(rows, key=lambda r: [natural_key(c) for c in r])
    return rows
