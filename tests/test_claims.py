"""The verdict rules: each can return each of its outcomes on constructed data, and the
statistics match independent references (t quantiles computed by hand, scipy's t test)."""

import json
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lnlab.experiments.claims import (
    Check,
    CheckBound,
    Claim,
    ClaimResult,
    Effect,
    Equivalence,
    Measurement,
    MissingMeasurement,
    NonInferiority,
    compare_verdicts,
    detectable_effect,
    evaluate,
    evaluate_all,
    seeds_needed,
)

SPREAD = (-1.0, -0.5, 0.0, 0.5, 1.0)  # sd = 0.79; 95% t half-width ≈ 0.98 at n = 5


def m(*xs: float, excluded: int = 0, blocked: str = "") -> Measurement:
    return Measurement(dict(enumerate(xs)), excluded=excluded, blocked=blocked)


def around(center: float, scale: float = 1.0) -> Measurement:
    return m(*(center + scale * d for d in SPREAD))


def verdict(rule, meas: Measurement) -> str:
    return rule.verdict(meas)[0]


# ------------------------------------------------------------------ three outcomes each
@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_effect_returns_each_outcome(method):
    up = Effect(">", 2.0, method=method)
    assert verdict(up, around(5.0)) == "supported"       # CI beyond 2
    assert verdict(up, around(-3.0)) == "contradicted"   # opposite direction
    assert verdict(up, around(0.5)) == "contradicted"    # right sign, below the minimal effect
    assert verdict(up, around(2.0)) == "inconclusive"    # CI contains the boundary
    down = Effect("<", 0.5, null=1.0, method=method)     # a ratio below 0.5 (null 1)
    assert verdict(down, around(0.1, 0.1)) == "supported"
    assert verdict(down, around(1.5, 0.1)) == "contradicted"
    assert verdict(down, around(0.5, 0.1)) == "inconclusive"


@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_two_sided_effect_returns_each_outcome(method):
    ch = Effect("!=", 1.0, method=method)  # "changing λ changes accuracy", sign not predicted
    assert verdict(ch, around(5.0)) == "supported"
    assert verdict(ch, around(-5.0)) == "supported"
    assert verdict(ch, around(0.0, 0.2)) == "contradicted"
    assert verdict(ch, around(1.0)) == "inconclusive"


@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_equivalence_returns_each_outcome(method):
    eq = Equivalence(3.0, null=68.0, method=method)
    assert verdict(eq, around(68.5)) == "supported"
    assert verdict(eq, around(60.0)) == "contradicted"
    assert verdict(eq, around(75.0)) == "contradicted"
    assert verdict(eq, around(70.5)) == "inconclusive"   # CI crosses 71
    assert verdict(eq, around(68.0, 5.0)) == "inconclusive"  # too noisy to show equivalence


@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_non_inferiority_returns_each_outcome(method):
    ni = NonInferiority(">", 2.0, method=method)  # not worse than 0 by more than 2
    assert verdict(ni, around(0.0)) == "supported"
    assert verdict(ni, around(-5.0)) == "contradicted"
    assert verdict(ni, around(-2.0)) == "inconclusive"
    lo = NonInferiority("<", 0.05, null=1.0, method=method)  # bpc not above 1 + 0.05
    assert verdict(lo, around(1.0, 0.01)) == "supported"
    assert verdict(lo, around(1.2, 0.01)) == "contradicted"
    assert verdict(lo, around(1.05, 0.01)) == "inconclusive"


def test_checks_pass_and_fail_on_every_value():
    assert verdict(Check(0.0, 1e-6), m(1e-7, -5e-7)) == "pass"
    assert verdict(Check(0.0, 1e-6), m(1e-7, 2e-6)) == "fail"
    assert verdict(Check(0.0, 1e-6), m(0.0, math.nan)) == "fail"
    assert verdict(Check(100.0, 0.0, rtol=1e-3), m(100.05)) == "pass"
    assert verdict(Check(0.0, 1.0), m()) == "fail"  # nothing measured is not a pass
    gate = CheckBound(">=", 99.0)
    assert verdict(gate, m(99.5, 100.0, 99.0)) == "pass"
    # the per-seed gate: a mean of 99.3 with one seed at 97 fails (sk.precondition's old bug)
    ok, why = gate.verdict(m(100.0, 100.0, 97.0, 100.0, 99.5))
    assert ok == "fail" and "seed 2: 97" in why
    with pytest.raises(ValueError):
        Check(0.0, -1.0)
    with pytest.raises(ValueError):
        CheckBound("=>", 1.0)


def test_rules_refuse_margin_zero_and_bad_settings():
    for bad in (lambda: Effect(">", 0.0), lambda: Effect(">", -1.0),
                lambda: Equivalence(0.0), lambda: NonInferiority(">", 0.0),
                lambda: Effect("=", 1.0), lambda: Effect(">", 1.0, confidence=1.0),
                lambda: Effect(">", 1.0, method="vote"), lambda: Effect(">", 1.0, min_n=1)):
        with pytest.raises(ValueError):
            bad()


def test_too_few_seeds_is_inconclusive_with_the_reason():
    v, why = Effect(">", 1.0).verdict(m(10.0, 11.0))
    assert v == "inconclusive" and "needs 3" in why


# ------------------------------------------------------------------ independent references
def test_t_interval_matches_the_textbook_formula():
    xs = [3.0, 4.0, 5.0, 3.5, 4.2]
    s = Effect(">", 1.0).stats(m(*xs))
    n, mean, sd = len(xs), statistics.fmean(xs), statistics.stdev(xs)
    half = 2.7764451051977987 * sd / math.sqrt(n)  # t_{0.975, 4}
    assert (s.low, s.high) == pytest.approx((mean - half, mean + half), rel=1e-12)
    assert s.n == 5 and s.estimate == pytest.approx(mean)
    # detectable effect at α = 0.05, power 0.8: (t_{0.975,4} + t_{0.8,4})·sd/√n
    assert s.detectable == pytest.approx((2.7764451051977987 + 0.9409645) * sd / math.sqrt(n),
                                         rel=1e-7)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=3, max_size=9),
       st.floats(0.1, 10))
def test_effect_agrees_with_one_sided_t_tests(xs, minimal):
    """Supported iff the one-sided t test of θ > minimal rejects at 2.5%; contradicted iff the
    one-sided test of θ < minimal rejects at 2.5% (the CI duality, independent of our code)."""
    if np.ptp(xs) <= 1e-6 * max(1.0, max(abs(x) for x in xs)):
        return
    v = verdict(Effect(">", minimal), m(*xs))
    p_up = stats.ttest_1samp(xs, minimal, alternative="greater").pvalue
    p_down = stats.ttest_1samp(xs, minimal, alternative="less").pvalue
    if abs(p_up - 0.025) < 1e-9 or abs(p_down - 0.025) < 1e-9:
        return  # on the boundary
    expect = "supported" if p_up < 0.025 else "contradicted" if p_down < 0.025 else "inconclusive"
    assert v == expect
    # mirror symmetry
    assert verdict(Effect("<", minimal), m(*(-x for x in xs))) == v


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=3, max_size=9), st.floats(0.1, 3))
def test_equivalence_never_supports_outside_its_band(xs, margin):
    v = verdict(Equivalence(margin), m(*xs))
    if v == "supported":
        assert abs(statistics.fmean(xs)) < margin
    if v == "contradicted":
        assert abs(statistics.fmean(xs)) > margin


def test_seeds_needed_reaches_the_minimal_effect():
    n = seeds_needed(1.0, 0.5)
    assert detectable_effect(1.0, n) <= 0.5 < detectable_effect(1.0, n - 1)
    xs = (0.0, 1.0, -0.5, 1.5, 0.7)
    v, why = Effect(">", 0.5).verdict(m(*xs))
    assert v == "inconclusive"
    assert f"about {seeds_needed(statistics.stdev(xs), 0.5)} seeds" in why


# ------------------------------------------------------------------ evaluate, serialization
def test_missing_measurement_is_an_error_in_strict_mode():
    c = Claim("x.1", "paper §2", "it is big", "size", "> 3", Effect(">", 3.0))
    with pytest.raises(MissingMeasurement):
        evaluate(c, {}, "x")
    r = evaluate(c, {}, "x", strict=False)
    assert r.verdict == "inconclusive" and "not measured" in r.reason


def test_empirical_result_serializes_every_required_field():
    c = Claim("x.1", "paper §2", "it is big", "size", "> 3", Effect(">", 3.0),
              measured_by="pkg.analyze")
    r = evaluate(c, {"size": m(4.0, 5.0, 4.5, excluded=1)}, "x")
    assert r.verdict == "supported" and "1 run(s) without a value" in r.reason
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    for key in ("effect", "direction", "minimal_effect", "interval", "n", "per_seed", "verdict",
                "rule_text", "detectable_effect", "measured_by", "kind"):
        assert key in d, key
    assert d["kind"] == "empirical" and d["direction"] == ">" and d["minimal_effect"] == 3.0
    assert d["per_seed"] == {"0": 4.0, "1": 5.0, "2": 4.5} and d["n"] == 3
    ck = evaluate(Claim("x.2", "s", "exact", "e", "0", Check(0.0, 1e-9)), {"e": m(0.0)})
    dc = ck.to_dict()
    assert dc["kind"] == "check" and dc["tolerance"] == 1e-9 and ck.verdict == "pass"


def test_blocked_measurement_is_inconclusive_with_its_reason():
    c = Claim("x.1", "s", "st", "k", "e", Effect(">", 1.0))
    r = evaluate(c, {"k": m(5.0, 6.0, 5.5, blocked="the control arm diverged on seed 1")})
    assert r.verdict == "inconclusive" and "control arm diverged" in r.reason


def test_failed_precondition_makes_dependent_claims_inconclusive():
    gate = Claim("g", "s", "trained to 99%", "train", "≥ 99 per seed", CheckBound(">=", 99.0))
    c = Claim("x", "s", "st", "k", "e", Effect(">", 1.0), requires=("g",))
    ok = evaluate_all([gate, c], {"train": m(99.5, 100.0, 99.2), "k": around(5.0)})
    assert [r.verdict for r in ok] == ["pass", "supported"]
    bad = evaluate_all([gate, c], {"train": m(99.5, 97.0, 99.2), "k": around(5.0)})
    assert [r.verdict for r in bad] == ["fail", "inconclusive"]
    assert "precondition failed" in bad[1].reason and "seed 1: 97" in bad[1].reason
    assert bad[1].gate == "precondition g failed" and bad[1].seeds_needed is None
    with pytest.raises(KeyError):
        evaluate_all([Claim("y", "s", "st", "k", "e", Effect(">", 1.0), requires=("nope",))],
                     {"k": around(5.0)})


def test_compare_verdicts_flags_flips():
    c1 = Claim("a", "s", "st", "k", "e", Effect(">", 1.0))
    c2 = Claim("b", "s", "st", "k2", "e", Effect(">", 1.0))
    ms1 = {"k": around(5.0), "k2": around(1.0)}
    ms2 = {"k": around(-5.0), "k2": around(1.0)}
    ra = [evaluate(c, ms1, "e") for c in (c1, c2)]
    rb = [json.loads(json.dumps(evaluate(c, ms2, "e").to_dict())) for c in (c1, c2)]
    rows = compare_verdicts(ra, rb)
    assert [(r["id"], r["verdict_a"], r["verdict_b"], r["agree"], r["flip"]) for r in rows] == [
        ("a", "supported", "contradicted", False, True),
        ("b", "inconclusive", "inconclusive", True, False)]
    only = compare_verdicts(ra[:1], [])
    assert only[0]["verdict_b"] is None and not only[0]["agree"]
    assert isinstance(ra[0], ClaimResult)
