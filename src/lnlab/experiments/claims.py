"""Claims, checks and the pre-registered rules that turn per-seed values into a verdict.

Every entry is written down *before* anything runs: what a source document says, which
measured quantity tests it, and a rule. There are two kinds, reported apart:

*Checks* — exact mathematics, identities, invariances and static properties of a model. They
pass or fail with a stated tolerance, on every value:

- ``Check(target, tol)``        every value within ``tol`` of ``target``;
- ``CheckBound(op, bound)``     every value on the stated side of ``bound`` (also the per-seed
                                gate used for preconditions: one seed below it fails the gate).

*Empirical claims* — an effect measured across seeds. The rule states the effect's
direction and the smallest effect that matters, and the verdict comes from a confidence
interval over seeds (paired t interval by default, ``scipy.stats.bootstrap`` on request):

- ``Effect(direction, minimal, null)``  "θ is beyond null ± minimal": *supported* when the
  interval lies beyond ``null ± minimal`` in the predicted direction, *contradicted* when it
  lies entirely short of it (the opposite direction, or an effect smaller than the minimal one),
  *inconclusive* otherwise. Direction ``"!="`` ("changes", sign not predicted): supported when
  the interval lies entirely outside null ± minimal, contradicted when entirely inside;
- ``Equivalence(margin, null)``  "no change" / "≈ value": *supported* when a TOST at level α
  (two one-sided ``scipy.stats.ttest_1samp`` tests) shows |θ − null| < margin, *contradicted*
  when the interval lies entirely outside ``null ± margin``, *inconclusive* otherwise;
- ``NonInferiority(direction, margin, null)``  "not worse by more than margin": *supported*
  when the interval lies beyond ``null ∓ margin`` on the good side, *contradicted* when it lies
  entirely on the bad side, *inconclusive* otherwise.

No rule votes seeds, uses a margin of 0, or takes a min/max across arms. Every empirical
result carries its interval, n, per-seed values and the smallest effect the run could have
detected (``detectable_effect``: α = 0.05 two-sided, power 0.8, the observed spread); an
inconclusive verdict whose detectable effect is larger than the minimal one says how many seeds
would decide it.
"""

from __future__ import annotations

import math
import statistics
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "CHECK_OUTCOMES",
    "KINDS",
    "NOT_RUN",
    "VERDICTS",
    "Check",
    "CheckBound",
    "Claim",
    "ClaimResult",
    "Effect",
    "Equivalence",
    "Measurement",
    "MissingMeasurement",
    "NonInferiority",
    "Rule",
    "Stats",
    "compare_verdicts",
    "detectable_effect",
    "evaluate",
    "evaluate_all",
    "seeds_needed",
]

Verdict = Literal["supported", "contradicted", "inconclusive", "pass", "fail", "not run"]
VERDICTS: tuple[str, ...] = ("supported", "contradicted", "inconclusive")
NOT_RUN = "not run"
"""Neither a verdict nor an outcome: the sweep did not run what the claim needs (another scale
does); counted apart from both kinds."""
CHECK_OUTCOMES: tuple[str, ...] = ("pass", "fail")
KINDS = ("check", "empirical")
Op = Literal[">", ">=", "<", "<="]
Direction = Literal[">", "<"]
EffectDirection = Literal[">", "<", "!="]
_OPS = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}
_NEG = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}
POWER = 0.8  # for the detectable effect


class MissingMeasurement(KeyError):
    """A claim's metric was not produced by its experiment's ``analyze``: a bug, not a result."""


@dataclass(frozen=True)
class Measurement:
    """Per-seed values of one measured quantity (e.g. final test accuracy of the MLP).

    ``excluded`` counts runs that belong to this quantity but gave no value (diverged or
    failed), so a report can say "5 seeds, 1 diverged" instead of silently averaging fewer.
    ``blocked`` is set by an analysis when a value exists but must not be read as evidence
    (e.g. a control arm diverged): the claim is then inconclusive with that reason.
    """

    values: Mapping[int, float]
    unit: str = ""
    excluded: int = 0
    note: str = ""
    blocked: str = ""
    not_run: str = ""
    """Set when the sweep did not run what the quantity needs: which scale does."""

    @property
    def finite(self) -> list[float]:
        return [float(v) for _, v in sorted(self.values.items())
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
        return {"values": {str(k): _num(float(v)) for k, v in sorted(self.values.items())},
                "mean": _num(self.mean), "std": _num(self.std), "n": self.n,
                "excluded": self.excluded, "unit": self.unit, "note": self.note,
                "blocked": self.blocked, "not_run": self.not_run}


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _fmt(x: float) -> str:
    return f"{x:.4g}"


# --------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Stats:
    """What an empirical rule computed: estimate, interval, n, detectable effect."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    detectable: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": _num(self.estimate), "interval": [_num(self.low), _num(self.high)],
                "confidence": self.confidence, "n": self.n,
                "detectable_effect": _num(self.detectable), "method": self.method}


def detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """Smallest true effect a two-sided one-sample t-test at ``alpha`` detects with ``power``
    given spread ``sd`` over ``n`` seeds: (t_{1−α/2} + t_{power})·sd/√n, df = n − 1."""
    from scipy import stats

    if n < 2 or not math.isfinite(sd):
        return math.inf
    df = n - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd / math.sqrt(n))


def seeds_needed(sd: float, minimal: float, alpha: float = 0.05, power: float = POWER,
                 cap: int = 1000) -> int | None:
    """Fewest seeds whose detectable effect is ≤ ``minimal`` at spread ``sd`` (None past cap)."""
    if sd == 0:
        return 2
    for n in range(2, cap + 1):
        if detectable_effect(sd, n, alpha, power) <= minimal:
            return n
    return None


def _constant(x: Any) -> bool:
    """All values equal up to float rounding (t statistics are undefined there)."""
    import numpy as np

    return float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.max(np.abs(x))))


def interval(values: Sequence[float], confidence: float, method: str,
             seed: int = 0) -> tuple[float, float]:
    """Two-sided interval for the mean over seeds: Student t (``ttest_1samp``) or bootstrap
    (BCa, ``scipy.stats.bootstrap``, fixed generator so a report is reproducible)."""
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return math.nan, math.nan
    if _constant(x):
        m = float(np.mean(x))
        return m, m
    if method == "t":
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
        return float(ci.low), float(ci.high)
    if method == "bootstrap":
        res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=9999,
                              method="BCa", rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (math.isfinite(lo) and math.isfinite(hi)):  # degenerate BCa → percentile
            res = stats.bootstrap((x,), np.mean, confidence_level=confidence,
                                  n_resamples=9999, method="percentile",
                                  rng=np.random.default_rng(seed))
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        return lo, hi
    raise ValueError(f"unknown interval method {method!r}")


# --------------------------------------------------------------------------- rules
class Rule(ABC):
    """Maps a measurement to (verdict, one-line reason). Subclasses are frozen dataclasses."""

    kind: str = "empirical"
    min_n: int

    @abstractmethod
    def decide(self, m: Measurement) -> tuple[str, str]: ...

    @abstractmethod
    def describe(self) -> str:
        """The rule in words, as printed next to the claim."""

    def verdict(self, m: Measurement) -> tuple[str, str]:
        if m.n < self.min_n:
            bad = "fail" if self.kind == "check" else "inconclusive"
            return bad, f"only {m.n} value(s), the rule needs {self.min_n}"
        return self.decide(m)

    def stats(self, m: Measurement) -> Stats | None:
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "kind": self.kind,
                **asdict(self)}  # type: ignore[call-overload]


# ---- checks
@dataclass(frozen=True)
class Check(Rule):
    """Pass iff every value is finite and within ``tol`` (+ ``rtol``·|target|) of target."""

    target: float
    tol: float
    rtol: float = 0.0
    min_n: int = 1
    kind: str = field(default="check", init=False)

    def __post_init__(self) -> None:
        if self.tol < 0 or self.rtol < 0:
            raise ValueError("a check's tolerance must be ≥ 0")

    @property
    def tolerance(self) -> float:
        return self.tol + self.rtol * abs(self.target)

    def describe(self) -> str:
        return f"every value within {self.tolerance:g} of {_fmt(self.target)}"

    def decide(self, m: Measurement) -> tuple[str, str]:
        if m.n < len(m.values):
            return "fail", "a value is not finite"
        worst = max(abs(v - self.target) for v in m.finite)
        ok = worst <= self.tolerance
        return ("pass" if ok else "fail"), (f"max deviation {worst:.3g} "
                                            f"{'≤' if ok else '>'} {self.tolerance:.3g}")


@dataclass(frozen=True)
class CheckBound(Rule):
    """Pass iff every value is finite and ``value op bound`` (a per-seed gate)."""

    op: Op
    bound: float
    min_n: int = 1
    kind: str = field(default="check", init=False)

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"unknown comparison {self.op!r}")

    @property
    def tolerance(self) -> float:
        return self.bound

    def describe(self) -> str:
        return f"every value {self.op} {_fmt(self.bound)}"

    def decide(self, m: Measurement) -> tuple[str, str]:
        if m.n < len(m.values):
            return "fail", "a value is not finite"
        bad = {s: float(v) for s, v in sorted(m.values.items())
               if not _OPS[self.op](float(v), float(self.bound))}
        if bad:
            who = ", ".join(f"seed {s}: {_fmt(v)}" for s, v in bad.items())
            return "fail", f"{len(bad)}/{m.n} value(s) not {self.op} {_fmt(self.bound)} ({who})"
        worst = (min if self.op in (">", ">=") else max)(m.finite)
        return "pass", f"all {m.n} values {self.op} {_fmt(self.bound)} (worst {_fmt(worst)})"


# ---- empirical rules
@dataclass(frozen=True)
class _Interval(Rule):
    confidence: float = field(default=0.95, kw_only=True)
    method: Literal["t", "bootstrap"] = field(default="t", kw_only=True)
    min_n: int = field(default=3, kw_only=True)

    def _check(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise ValueError("confidence must be in (0.5, 1)")
        if self.method not in ("t", "bootstrap"):
            raise ValueError(f"unknown interval method {self.method!r}")
        if self.min_n < 2:
            raise ValueError("an interval needs at least 2 seeds")

    def stats(self, m: Measurement) -> Stats | None:
        x = m.finite
        if len(x) < 2:
            return None
        lo, hi = interval(x, self.confidence, self.method)
        return Stats(statistics.fmean(x), lo, hi, self.confidence, len(x),
                     detectable_effect(statistics.stdev(x), len(x), 1 - self.confidence),
                     "paired t" if self.method == "t" else "bootstrap (BCa)")

    def _ci(self, s: Stats, unit: str = "") -> str:
        return (f"mean {_fmt(s.estimate)}, {round(100 * s.confidence)}% CI "
                f"[{_fmt(s.low)}, {_fmt(s.high)}], n = {s.n}")

    def _undecided(self, s: Stats, m: Measurement, minimal: float) -> str:
        sd = statistics.stdev(m.finite)
        if s.detectable <= minimal:
            return ""
        need = seeds_needed(sd, minimal, 1 - self.confidence)
        more = f"about {need} seeds" if need else "far more seeds"
        return (f"; this run could detect only effects ≥ {_fmt(s.detectable)} (minimal "
                f"{_fmt(minimal)}): {more} would decide it")


@dataclass(frozen=True)
class Effect(_Interval):
    """θ (mean of the per-seed values) beyond ``null`` by at least ``minimal`` in
    ``direction``. Supported: the interval lies beyond null ± minimal; contradicted: it lies
    entirely short of it (opposite sign, or too small to matter); else inconclusive."""

    direction: EffectDirection
    minimal: float
    null: float = 0.0

    def __post_init__(self) -> None:
        self._check()
        if self.direction not in (">", "<", "!="):
            raise ValueError(f"Effect needs direction '>', '<' or '!=', got {self.direction!r}")
        if not (math.isfinite(self.minimal) and self.minimal > 0):
            raise ValueError("Effect needs a minimal effect > 0")

    @property
    def boundary(self) -> float:
        return self.null + (self.minimal if self.direction == ">" else -self.minimal)

    def describe(self) -> str:
        c = round(100 * self.confidence)
        if self.direction == "!=":
            return (f"supported if the {c}% CI of the mean lies entirely outside "
                    f"{_fmt(self.null)} ± {_fmt(self.minimal)} (minimal effect, either sign); "
                    "contradicted if it lies entirely inside; inconclusive otherwise")
        return (f"supported if the {c}% CI of the mean lies {self.direction} "
                f"{_fmt(self.boundary)} (null {_fmt(self.null)} "
                f"{'+' if self.direction == '>' else '−'} minimal effect {_fmt(self.minimal)}); "
                f"contradicted if it lies entirely {_NEG[self.direction]} {_fmt(self.boundary)};"
                " inconclusive otherwise")

    def decide(self, m: Measurement) -> tuple[str, str]:
        s = self.stats(m)
        assert s is not None
        txt = self._ci(s)
        if self.direction == "!=":
            lo_b, hi_b = self.null - self.minimal, self.null + self.minimal
            band = f"{_fmt(self.null)} ± {_fmt(self.minimal)}"
            if s.low > hi_b or s.high < lo_b:
                return "supported", f"{txt} lies outside {band}"
            if lo_b < s.low and s.high < hi_b:
                return "contradicted", f"{txt} lies inside {band}"
            return "inconclusive", (f"{txt} overlaps the edge of {band}"
                                    + self._undecided(s, m, self.minimal))
        b = self.boundary
        beyond = s.low > b if self.direction == ">" else s.high < b
        short = s.high < b if self.direction == ">" else s.low > b
        if beyond:
            return "supported", f"{txt} lies {self.direction} {_fmt(b)}"
        if short:
            return "contradicted", f"{txt} lies {_NEG[self.direction]} {_fmt(b)}"
        return "inconclusive", f"{txt} contains {_fmt(b)}" + self._undecided(s, m, self.minimal)


@dataclass(frozen=True)
class Equivalence(_Interval):
    """"No change" (or "≈ null"): TOST — both one-sided t-tests of |θ − null| ≥ margin reject
    at α = 1 − confidence → supported; the interval entirely outside null ± margin →
    contradicted; else inconclusive. (The TOST is a t test whatever ``method``; ``method``
    sets the reported interval and the contradiction test.)"""

    margin: float
    null: float = 0.0

    def __post_init__(self) -> None:
        self._check()
        if not (math.isfinite(self.margin) and self.margin > 0):
            raise ValueError("Equivalence needs a margin > 0")

    def describe(self) -> str:
        a = 1 - self.confidence
        return (f"supported if a TOST (α = {a:.2g}) shows the mean within {_fmt(self.null)} ± "
                f"{_fmt(self.margin)}; contradicted if the {round(100 * self.confidence)}% CI lies "
                "entirely outside that band; inconclusive otherwise")

    def tost(self, x: Sequence[float]) -> float:
        """TOST p-value: the larger of the two one-sided p-values (scipy.stats.ttest_1samp)."""
        import numpy as np
        from scipy import stats

        a = np.asarray(x, dtype=np.float64)
        lo_b, hi_b = self.null - self.margin, self.null + self.margin
        if _constant(a):
            return 0.0 if lo_b < float(np.mean(a)) < hi_b else 1.0
        p_lo = stats.ttest_1samp(a, lo_b, alternative="greater").pvalue
        p_hi = stats.ttest_1samp(a, hi_b, alternative="less").pvalue
        return float(max(p_lo, p_hi))

    def decide(self, m: Measurement) -> tuple[str, str]:
        s = self.stats(m)
        assert s is not None
        p = self.tost(m.finite)
        lo_b, hi_b = self.null - self.margin, self.null + self.margin
        txt = f"{self._ci(s)}, TOST p = {p:.3g}"
        if p < 1 - self.confidence:
            return "supported", f"{txt}: within {_fmt(self.null)} ± {_fmt(self.margin)}"
        if s.low > hi_b or s.high < lo_b:
            return "contradicted", f"{txt}: CI outside {_fmt(self.null)} ± {_fmt(self.margin)}"
        return "inconclusive", txt + self._undecided(s, m, self.margin)


@dataclass(frozen=True)
class NonInferiority(_Interval):
    """Not worse than ``null`` by more than ``margin`` (worse = against ``direction``):
    the interval beyond null ∓ margin on the good side → supported; entirely on the bad side →
    contradicted; else inconclusive."""

    direction: Direction
    margin: float
    null: float = 0.0

    def __post_init__(self) -> None:
        self._check()
        if self.direction not in (">", "<"):
            raise ValueError(f"NonInferiority needs direction '>' or '<', got {self.direction!r}")
        if not (math.isfinite(self.margin) and self.margin > 0):
            raise ValueError("NonInferiority needs a margin > 0")

    @property
    def boundary(self) -> float:
        return self.null - (self.margin if self.direction == ">" else -self.margin)

    def describe(self) -> str:
        c = round(100 * self.confidence)
        return (f"supported if the {c}% CI of the mean lies {self.direction} {_fmt(self.boundary)}"
                f" (not worse than {_fmt(self.null)} by more than {_fmt(self.margin)}); "
                f"contradicted if it lies entirely {_NEG[self.direction]} {_fmt(self.boundary)};"
                " inconclusive otherwise")

    def decide(self, m: Measurement) -> tuple[str, str]:
        s = self.stats(m)
        assert s is not None
        b = self.boundary
        good = s.low > b if self.direction == ">" else s.high < b
        bad = s.high < b if self.direction == ">" else s.low > b
        txt = self._ci(s)
        if good:
            return "supported", f"{txt} lies {self.direction} {_fmt(b)}"
        if bad:
            return "contradicted", f"{txt} lies {_NEG[self.direction]} {_fmt(b)}"
        return "inconclusive", f"{txt} contains {_fmt(b)}" + self._undecided(s, m, self.margin)


# --------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Claim:
    """One statement from a source document, made testable.

    ``metric`` names the quantity the experiment's ``analyze`` measures (its key in the
    returned dict; for empirical claims it is the effect). ``measured_by`` names the function
    that computes it. ``requires`` lists checks that gate this claim (preconditions, checked
    per seed): if one fails, this claim is inconclusive and says why.
    """

    id: str
    source: str
    statement: str
    metric: str
    expected: str
    rule: Rule
    notes: str = ""
    measured_by: str = ""
    requires: tuple[str, ...] = ()
    regime: str = ""  # where the measurement comes from: "from scratch", "own pretraining", …

    @property
    def kind(self) -> str:
        return self.rule.kind

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id, "kind": self.kind, "source": self.source,
            "statement": self.statement, "metric": self.metric, "expected": self.expected,
            "rule": self.rule.to_dict(), "rule_text": self.rule.describe(), "notes": self.notes,
            "measured_by": self.measured_by, "requires": list(self.requires),
            "regime": self.regime}
        r = self.rule
        if isinstance(r, Check | CheckBound):
            d["tolerance"] = r.tolerance
        else:
            d["effect"] = self.metric
            d["direction"] = getattr(r, "direction", "=")
            d["minimal_effect"] = getattr(r, "minimal", None) or getattr(r, "margin", None)
            d["null"] = getattr(r, "null", 0.0)
        return d


@dataclass(frozen=True)
class ClaimResult:
    """A claim next to its measurement and verdict: one row of the report's claims table."""

    claim: Claim
    verdict: str
    reason: str
    measurement: Measurement | None = None
    experiment: str = ""
    stats: Stats | None = None
    gate: str = ""
    """Why the measurement is not read as evidence (failed precondition, blocked arm)."""

    @property
    def kind(self) -> str:
        return self.claim.kind

    @property
    def not_run(self) -> bool:
        """The sweep did not run this claim's setting (another scale does)."""
        return self.verdict == NOT_RUN

    @property
    def seeds_needed(self) -> int | None:
        """For an inconclusive empirical claim whose run could not detect its minimal effect:
        about how many seeds would (at the observed spread); None otherwise."""
        r, s, m = self.claim.rule, self.stats, self.measurement
        if self.verdict != "inconclusive" or self.gate or s is None or m is None or m.n < 2:
            return None
        minimal = getattr(r, "minimal", None) or getattr(r, "margin", None)
        if minimal is None or s.detectable <= minimal:
            return None
        return seeds_needed(statistics.stdev(m.finite), minimal,
                            1 - getattr(r, "confidence", 0.95))

    def to_dict(self) -> dict[str, Any]:
        d = {**self.claim.to_dict(), "experiment": self.experiment, "verdict": self.verdict,
             "reason": self.reason,
             "measured": self.measurement.to_dict() if self.measurement else None}
        m = self.measurement
        d["n"] = m.n if m else 0
        d["per_seed"] = ({str(k): _num(float(v)) for k, v in sorted(m.values.items())}
                         if m else {})
        d["gate"] = self.gate
        if self.kind == "empirical":
            s = self.stats
            d.update(s.to_dict() if s else {"estimate": None, "interval": [None, None],
                                             "confidence": getattr(self.claim.rule,
                                                                   "confidence", None),
                                             "detectable_effect": None, "method": None})
            d["n"] = m.n if m else 0
            d["seeds_needed"] = self.seeds_needed
        return d


def evaluate(claim: Claim, measurements: Mapping[str, Measurement], experiment: str = "",
             *, strict: bool = True) -> ClaimResult:
    """Apply the claim's rule to its metric.

    A missing metric is a defect of the experiment (its ``analyze`` did not produce what the
    claim names): ``strict`` raises ``MissingMeasurement``; the report (``strict=False``)
    shows it as inconclusive/fail with the reason and lists it as a problem.
    """
    m = measurements.get(claim.metric)
    if m is None:
        if strict:
            raise MissingMeasurement(f"claim {claim.id}: {claim.metric!r} was not measured")
        bad = "fail" if claim.kind == "check" else "inconclusive"
        return ClaimResult(claim, bad, f"not measured: {claim.metric!r} is missing "
                           "(an analysis defect)", None, experiment)
    if m.not_run:
        return ClaimResult(claim, NOT_RUN, f"not run at this scale: {m.not_run}", m,
                           experiment)
    if m.blocked and claim.kind == "empirical":
        return ClaimResult(claim, "inconclusive", f"not evidence: {m.blocked}", m, experiment,
                           claim.rule.stats(m), gate=m.blocked)
    verdict, reason = claim.rule.verdict(m)
    if m.excluded:
        reason += f"; {m.excluded} run(s) without a value (diverged/failed)"
    if m.blocked:
        reason += f"; note: {m.blocked}"
    return ClaimResult(claim, verdict, reason, m, experiment, claim.rule.stats(m))


def evaluate_all(claims: Iterable[Claim], measurements: Mapping[str, Measurement],
                 experiment: str = "", *, strict: bool = True) -> list[ClaimResult]:
    """Evaluate claims in order, then apply preconditions: a claim whose required check
    failed becomes inconclusive (its measurement rests on a premise that did not hold)."""
    claims = list(claims)
    res = [evaluate(c, measurements, experiment, strict=strict) for c in claims]
    by_id = {r.claim.id: r for r in res}
    out = []
    for r in res:
        failed = [q for q in r.claim.requires if q in by_id and by_id[q].verdict == "fail"]
        unknown = [q for q in r.claim.requires if q not in by_id]
        if unknown:
            raise KeyError(f"claim {r.claim.id} requires unknown claim(s) {unknown}")
        if failed and r.claim.kind == "empirical":
            why = "; ".join(f"{q}: {by_id[q].reason}" for q in failed)
            r = ClaimResult(r.claim, "inconclusive", f"precondition failed ({why}); measured: "
                            f"{r.reason}", r.measurement, r.experiment, r.stats,
                            gate=f"precondition {', '.join(failed)} failed")
        out.append(r)
    return out


def compare_verdicts(a: Iterable[ClaimResult | Mapping[str, Any]],
                     b: Iterable[ClaimResult | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per claim (matched by experiment and id), the verdicts of two seed sets side by side.

    Accepts ``ClaimResult`` objects or the claim dicts of ``claims.json``. ``agree`` is True
    when the verdicts are equal; ``flip`` is True when one is supported and the other
    contradicted (a defect of the claim's design). Claims present in only one set get None
    for the missing verdict and ``agree`` False.
    """
    def index(xs: Iterable[ClaimResult | Mapping[str, Any]]) -> dict[tuple[str, str], dict]:
        out: dict[tuple[str, str], dict] = {}
        for x in xs:
            d = x.to_dict() if isinstance(x, ClaimResult) else dict(x)
            out[(d.get("experiment", ""), d["id"])] = d
        return out

    ia, ib = index(a), index(b)
    rows = []
    for key in [*ia, *(k for k in ib if k not in ia)]:
        da, db = ia.get(key), ib.get(key)
        va = da["verdict"] if da else None
        vb = db["verdict"] if db else None
        if NOT_RUN in (va, vb):
            continue  # not run in one of the seed sets' sweeps: nothing to compare
        kind = (da or db or {}).get("kind", "empirical")
        rows.append({"experiment": key[0], "id": key[1], "kind": kind, "verdict_a": va,
                     "verdict_b": vb, "agree": va is not None and va == vb,
                     "flip": {va, vb} == {"supported", "contradicted"}})
    return rows
