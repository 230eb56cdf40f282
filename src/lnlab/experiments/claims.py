"""Claims and the rules that turn per-seed measurements into a verdict.

A claim is written down *before* anything runs: what a source document says, which measured
quantity tests it, what value or direction is expected, and a rule that maps the per-seed
values to ``supported | contradicted | inconclusive``. The rules are deliberately few and
simple so that a reader can check a verdict by hand from the numbers in the report:

- ``WithinTolerance(target, tol)``  — "≈ 32 %": |mean − target| ≤ tol.
- ``Threshold(op, value)``          — "at least 60 %": the mean compared with a bound.
- ``Separated(op, value, k)``       — the whole band mean ± k·std on one side of a bound;
                                      a band that straddles it is inconclusive.
- ``PairedDifference(op, margin, min_agree)`` — per-seed differences (A − B, same seed): the
  mean beyond ``margin`` in the claimed direction *and* at least ``min_agree`` seeds agreeing;
  the mirror image contradicts; anything else is inconclusive.
- ``Exact(target, atol, rtol)``     — mathematical identities: every seed within tolerance.

Each rule also refuses to decide on fewer than ``min_n`` seeds (inconclusive).
"""

from __future__ import annotations

import math
import statistics
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "VERDICTS",
    "Claim",
    "ClaimResult",
    "Exact",
    "Measurement",
    "PairedDifference",
    "Rule",
    "Separated",
    "Threshold",
    "WithinTolerance",
    "evaluate",
]

Verdict = Literal["supported", "contradicted", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("supported", "contradicted", "inconclusive")
Op = Literal[">", ">=", "<", "<="]
_OPS = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}
_NEG = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}


@dataclass(frozen=True)
class Measurement:
    """Per-seed values of one measured quantity (e.g. final test accuracy of the MLP).

    ``excluded`` counts runs that belong to this quantity but gave no value (diverged or
    failed), so a report can say "3 seeds, 1 diverged" instead of silently averaging fewer.
    """

    values: Mapping[int, float]
    unit: str = ""
    excluded: int = 0
    note: str = ""

    @property
    def finite(self) -> list[float]:
        return [float(v) for v in self.values.values()
                if v is not None and math.isfinite(float(v))]

    @property
    def n(self) -> int:
        return len(self.finite)

    @property
    def mean(self) -> float:
        f = self.finite
        return statistics.fmean(f) if f else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (ddof = 1); 0 for a single seed."""
        f = self.finite
        return statistics.stdev(f) if len(f) > 1 else (0.0 if f else math.nan)

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {"values": {str(k): num(float(v)) for k, v in sorted(self.values.items())},
                "mean": num(self.mean), "std": num(self.std), "n": self.n,
                "excluded": self.excluded, "unit": self.unit, "note": self.note}


def _fmt(x: float) -> str:
    return f"{x:.4g}"


class Rule(ABC):
    """Maps a measurement to (verdict, one-line reason). Subclasses are frozen dataclasses."""

    min_n: int

    @abstractmethod
    def decide(self, m: Measurement) -> tuple[Verdict, str]: ...

    @abstractmethod
    def describe(self) -> str:
        """The rule in words, as printed next to the claim."""

    def verdict(self, m: Measurement) -> tuple[Verdict, str]:
        if m.n < self.min_n:
            return "inconclusive", f"only {m.n} value(s), the rule needs {self.min_n}"
        return self.decide(m)

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class WithinTolerance(Rule):
    """Supported iff |mean − target| ≤ tol; otherwise contradicted."""

    target: float
    tol: float
    min_n: int = 1

    def describe(self) -> str:
        return f"mean within ±{_fmt(self.tol)} of {_fmt(self.target)}"

    def decide(self, m: Measurement) -> tuple[Verdict, str]:
        gap = m.mean - self.target
        ok = abs(gap) <= self.tol
        text = (f"mean {_fmt(m.mean)} is {abs(gap):.3g} {'above' if gap > 0 else 'below'} "
                f"{_fmt(self.target)} ({'≤' if ok else '>'} {_fmt(self.tol)})")
        return ("supported" if ok else "contradicted"), text


@dataclass(frozen=True)
class Threshold(Rule):
    """Supported iff ``mean op value``; otherwise contradicted."""

    op: Op
    value: float
    min_n: int = 1

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"unknown comparison {self.op!r}")

    def describe(self) -> str:
        return f"mean {self.op} {_fmt(self.value)}"

    def decide(self, m: Measurement) -> tuple[Verdict, str]:
        ok = _OPS[self.op](float(m.mean), float(self.value))
        rel = self.op if ok else _NEG[self.op]
        text = f"mean {_fmt(m.mean)} {rel} {_fmt(self.value)}"
        return ("supported" if ok else "contradicted"), text


@dataclass(frozen=True)
class Separated(Rule):
    """The band mean ± k·std entirely on the claimed side: supported; entirely on the
    other side: contradicted; straddling the bound: inconclusive."""

    op: Op
    value: float
    k: float = 1.0
    min_n: int = 2

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"unknown comparison {self.op!r}")

    def describe(self) -> str:
        return f"mean ± {_fmt(self.k)}·std entirely {self.op} {_fmt(self.value)}"

    def decide(self, m: Measurement) -> tuple[Verdict, str]:
        lo, hi = m.mean - self.k * m.std, m.mean + self.k * m.std
        band = f"[{_fmt(lo)}, {_fmt(hi)}]"
        op, v = _OPS[self.op], float(self.value)
        if op(lo, v) and op(hi, v):
            return "supported", f"band {band} {self.op} {self.value}"
        if not op(lo, v) and not op(hi, v):
            return "contradicted", f"band {band} {_NEG[self.op]} {self.value}"
        return "inconclusive", f"band {band} straddles {self.value}"


@dataclass(frozen=True)
class PairedDifference(Rule):
    """Per-seed differences d = A − B (same seed). For op ">": supported iff mean(d) > margin
    and at least ``min_agree`` seeds have d > 0; contradicted iff mean(d) < −margin and at
    least ``min_agree`` seeds have d < 0; else inconclusive. (op "<" mirrors it.)"""

    op: Literal[">", "<"]
    margin: float = 0.0
    min_agree: int = 2
    min_n: int = 2

    def __post_init__(self) -> None:
        if self.op not in (">", "<"):
            raise ValueError(f"PairedDifference needs op '>' or '<', got {self.op!r}")

    def describe(self) -> str:
        side = "positive" if self.op == ">" else "negative"
        return (f"paired difference {side}: mean beyond {_fmt(self.margin)} and "
                f"≥ {self.min_agree} seeds agreeing")

    def decide(self, m: Measurement) -> tuple[Verdict, str]:
        s = 1.0 if self.op == ">" else -1.0
        d = [s * v for v in m.finite]
        mean = statistics.fmean(d)
        agree, oppose = sum(v > 0 for v in d), sum(v < 0 for v in d)
        txt = f"mean diff {_fmt(s * mean)}, {agree}/{len(d)} seeds agree"
        if mean > self.margin and agree >= self.min_agree:
            return "supported", txt
        if mean < -self.margin and oppose >= self.min_agree:
            return "contradicted", f"{txt}, {oppose} oppose"
        return "inconclusive", txt


@dataclass(frozen=True)
class Exact(Rule):
    """Every per-seed value within atol + rtol·|target| of target (for identities)."""

    target: float
    atol: float = 1e-6
    rtol: float = 0.0
    min_n: int = 1

    def describe(self) -> str:
        tol = f"{self.atol:g}" + (f" + {self.rtol:g}·|target|" if self.rtol else "")
        return f"every value within {tol} of {_fmt(self.target)}"

    def decide(self, m: Measurement) -> tuple[Verdict, str]:
        bound = self.atol + self.rtol * abs(self.target)
        worst = max(abs(v - self.target) for v in m.finite)
        if worst <= bound and m.n == len(m.values):
            return "supported", f"max deviation {worst:.3g} ≤ {bound:.3g}"
        if m.n < len(m.values):
            return "contradicted", "a value is not finite"
        return "contradicted", f"max deviation {worst:.3g} > {bound:.3g}"


@dataclass(frozen=True)
class Claim:
    """One statement from a source document, made testable.

    ``metric`` names an entry of the dict that the experiment's ``analyze`` returns;
    ``expected`` says in words what the source expects; ``rule`` is the same as data.
    """

    id: str
    source: str
    statement: str
    metric: str
    expected: str
    rule: Rule
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "statement": self.statement,
                "metric": self.metric, "expected": self.expected,
                "rule": self.rule.to_dict(), "rule_text": self.rule.describe(),
                "notes": self.notes}


@dataclass(frozen=True)
class ClaimResult:
    """A claim next to its measurement and verdict: one row of the report's claims table."""

    claim: Claim
    verdict: Verdict
    reason: str
    measurement: Measurement | None = None
    experiment: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.claim.to_dict(), "experiment": self.experiment, "verdict": self.verdict,
                "reason": self.reason,
                "measured": self.measurement.to_dict() if self.measurement else None}


def evaluate(claim: Claim, measurements: Mapping[str, Measurement],
             experiment: str = "") -> ClaimResult:
    """Apply the claim's rule to its metric; a missing metric is inconclusive, not an error."""
    m = measurements.get(claim.metric)
    if m is None:
        return ClaimResult(claim, "inconclusive", f"{claim.metric!r} was not measured",
                           None, experiment)
    verdict, reason = claim.rule.verdict(m)
    if m.excluded:
        reason += f"; {m.excluded} run(s) without a value (diverged/failed)"
    return ClaimResult(claim, verdict, reason, m, experiment)
