import json
import math
import re
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import test_runner_toy as toy
from lnlab.cli import main
from lnlab.errors import LnlabError
from lnlab.experiments import get_experiment
from lnlab.experiments.claims import (
    Claim,
    Exact,
    Measurement,
    PairedDifference,
    Separated,
    Threshold,
    WithinTolerance,
    evaluate,
)
from lnlab.experiments.framework import Experiment, Results, Run
from lnlab.report import build_report
from lnlab.runner import run_sweep

values = st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=8)


def m(*xs: float, excluded: int = 0) -> Measurement:
    return Measurement(dict(enumerate(xs)), excluded=excluded)


# ------------------------------------------------------------------ rules
def test_measurement_statistics_match_statistics_module():
    x = m(0.30, 0.32, 0.35)
    assert x.n == 3
    assert x.mean == pytest.approx(statistics.mean([0.30, 0.32, 0.35]), abs=1e-15)
    assert x.std == pytest.approx(statistics.stdev([0.30, 0.32, 0.35]), abs=1e-15)
    assert m(1.0, math.nan).n == 1 and m(2.0).std == 0.0
    assert math.isnan(m().mean)


def test_within_tolerance_and_threshold():
    r = WithinTolerance(0.32, 0.04)
    assert r.verdict(m(0.30, 0.33, 0.31))[0] == "supported"
    assert r.verdict(m(0.20, 0.22))[0] == "contradicted"
    assert Threshold(">=", 0.6).verdict(m(0.6, 0.6))[0] == "supported"
    assert Threshold(">", 0.6).verdict(m(0.6, 0.6))[0] == "contradicted"
    assert Threshold("<", 1.0, min_n=3).verdict(m(0.1, 0.2))[0] == "inconclusive"
    with pytest.raises(ValueError):
        Threshold("=>", 1.0)


def test_separated_is_inconclusive_when_the_band_straddles():
    r = Separated(">", 0.5, k=1.0)
    assert r.verdict(m(0.7, 0.8, 0.75))[0] == "supported"
    assert r.verdict(m(0.1, 0.2, 0.15))[0] == "contradicted"
    assert r.verdict(m(0.3, 0.7, 0.5))[0] == "inconclusive"
    assert r.verdict(m(0.9))[0] == "inconclusive"  # min_n = 2


def test_paired_difference_needs_size_and_agreement():
    r = PairedDifference(">", margin=0.05, min_agree=3)
    assert r.verdict(m(0.1, 0.2, 0.15))[0] == "supported"
    assert r.verdict(m(0.1, 0.2, -0.01))[0] == "inconclusive"  # only 2 seeds agree
    assert r.verdict(m(0.01, 0.02, 0.03))[0] == "inconclusive"  # below the margin
    assert r.verdict(m(-0.1, -0.2, -0.15))[0] == "contradicted"
    assert PairedDifference("<", 0.0, 2).verdict(m(-1.0, -2.0))[0] == "supported"


@settings(max_examples=100, deadline=None)
@given(values, st.floats(0, 1), st.integers(1, 8))
def test_paired_difference_is_mirror_symmetric(xs, margin, k):
    up = PairedDifference(">", margin, k, min_n=1).verdict(m(*xs))[0]
    down = PairedDifference("<", margin, k, min_n=1).verdict(m(*(-x for x in xs)))[0]
    assert up == down
    # and it agrees with a direct count (independent reference)
    mean = sum(xs) / len(xs)
    expect = ("supported" if mean > margin and sum(x > 0 for x in xs) >= k else
              "contradicted" if mean < -margin and sum(x < 0 for x in xs) >= k else
              "inconclusive")
    assert up == expect


@settings(max_examples=100, deadline=None)
@given(values, st.floats(-100, 100), st.floats(0, 10))
def test_separated_never_contradicts_the_threshold_on_the_mean(xs, v, k):
    sep = Separated(">", v, k, min_n=1).verdict(m(*xs))[0]
    thr = Threshold(">", v).verdict(m(*xs))[0]
    if sep != "inconclusive":
        assert sep == thr


def test_exact_checks_every_seed():
    assert Exact(0.0, atol=1e-6).verdict(m(1e-7, -5e-7))[0] == "supported"
    assert Exact(0.0, atol=1e-6).verdict(m(1e-7, 2e-6))[0] == "contradicted"
    assert Exact(0.0, atol=1e-6).verdict(m(0.0, math.nan))[0] == "contradicted"
    assert Exact(100.0, atol=0, rtol=1e-3).verdict(m(100.05))[0] == "supported"


def test_evaluate_missing_metric_and_serialization():
    c = Claim("x.1", "paper §2", "it is big", "size", "> 3", Threshold(">", 3.0))
    r = evaluate(c, {}, "x")
    assert r.verdict == "inconclusive" and "not measured" in r.reason
    r = evaluate(c, {"size": m(4.0, 5.0, excluded=1)}, "x")
    assert r.verdict == "supported" and "1 run(s) without a value" in r.reason
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["rule"] == {"type": "Threshold", "op": ">", "value": 3.0, "min_n": 1}
    assert d["measured"]["mean"] == 4.5 and d["measured"]["n"] == 2


# ------------------------------------------------------------------ results view
def test_results_selection_per_seed_and_pairing():
    runs = [Run(f"k{i}", {"arm": arm, "train": {"seed": s}}, st, {"acc": acc}, [])
            for i, (arm, s, st, acc) in enumerate([
                ("a", 0, "finished", 0.5), ("a", 1, "finished", 0.6), ("a", 2, "diverged", 0.1),
                ("b", 0, "finished", 0.7), ("b", 1, "finished", 0.9), ("b", 2, "finished", 0.8)])]
    res = Results(runs)
    a = res.per_seed("acc", arm="a")
    assert dict(a.values) == {0: 0.5, 1: 0.6} and a.excluded == 1
    d = res.paired("acc", {"arm": "b"}, {"arm": "a"})
    assert dict(d.values) == pytest.approx({0: 0.2, 1: 0.3}) and d.excluded == 2
    assert res.values("arm") == ["a", "b"]
    assert res.count("diverged") == 1 and len(res.select(train__seed=0)) == 2
    header, rows = res.summary_table()
    assert header == ["arm", "runs", "acc"]
    assert rows[0] == ["a", "2/3, 1 diverged", "0.55 ± 0.071"]


# ------------------------------------------------------------------ report files
def _toy_resolver(name: str) -> Experiment:
    assert name == "toy"
    return Experiment.from_module(toy)


def test_report_files_hold_claims_table_figures_and_results(tmp_path):
    run_sweep(tmp_path, "toy", "test_runner_toy", toy.sweep("quick", [0, 1, 2]),
              scale="quick", seeds=[0, 1, 2], versions={"torch": "T"}, progress=False)
    paths = build_report(tmp_path, resolve=_toy_resolver)
    doc = json.loads(paths["claims.json"].read_text())
    verdicts = {c["id"]: c["verdict"] for c in doc["claims"]}
    assert verdicts == {"toy.level": "supported", "toy.b_beats_a": "supported",
                        "toy.never": "contradicted", "toy.missing": "inconclusive"}
    level = next(c for c in doc["claims"] if c["id"] == "toy.level")
    assert level["measured"]["n"] == 3
    assert level["measured"]["mean"] == pytest.approx(statistics.mean(
        toy.score("a", s) for s in range(3)))
    assert doc["verdicts"] == {"supported": 2, "contradicted": 1, "inconclusive": 1}
    assert doc["experiments"][0]["figures"] == ["figures/toy/scores.png"]
    md = paths["report.md"].read_text()
    assert "| experiment | claim | source | expected | measured (mean ± std) | n | verdict |" in md
    assert "**toy.level**" in md and "1.01 ± 0.01 | 3 | **supported** |" in md
    assert "- scale: `quick`; seeds: 3 (0, 1, 2)" in md and "torch T" in md
    assert "| arm | runs | epochs | score |" in md
    html = paths["report.html"].read_text()
    assert html.count("data:image/png;base64,") == 1
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)  # self-contained
    assert "contradicted" in html and "<table>" in html
    png = (tmp_path / "figures/toy/scores.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_report_survives_a_broken_analysis(tmp_path, monkeypatch):
    run_sweep(tmp_path, "toy", "test_runner_toy", toy.sweep("quick", [0]), progress=False)

    def boom(results):
        raise RuntimeError("no good")

    monkeypatch.setattr(toy, "analyze", boom)
    paths = build_report(tmp_path, resolve=_toy_resolver)
    doc = json.loads(paths["claims.json"].read_text())
    assert {c["verdict"] for c in doc["claims"]} == {"inconclusive"}
    assert doc["experiments"][0]["problems"] == ["analysis failed: RuntimeError: no good"]


# ------------------------------------------------------------------ CLI
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "nope", "--out", str(out)]) == 2
    assert "unknown experiment 'nope': available: baselines" in capsys.readouterr().err
    assert main(["run", "baselines", "--scale", "huge", "--out", str(out)]) == 2
    assert "unknown scale 'huge'" in capsys.readouterr().err
    assert main(["run", "baselines", "--seeds", "0", "--out", str(out)]) == 2
    assert main(["run", "baselines", "-o", "x=1", "--out", str(out)]) == 2
    assert main(["run", "baselines", "--workers", "0", "--out", str(out)]) == 2
    assert main(["reproduce", "--scale", "huge", "--out", str(out)]) == 2
    assert main(["report", str(out)]) == 2
    assert "no results store" in capsys.readouterr().err
    assert main(["runs", str(out)]) == 2
    assert not out.exists()


def test_cli_runs_lists_and_exports(tmp_path, capsys):
    cfgs = toy.sweep("quick", [0])
    cfgs.append({**cfgs[0], "fail": True})
    run_sweep(tmp_path, "toy", "test_runner_toy", cfgs, progress=False)
    assert main(["runs", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "2 finished, 1 failed" in text and "RuntimeError" in text
    csv_path, ep_path = tmp_path / "runs.csv", tmp_path / "epochs.csv"
    assert main(["runs", str(tmp_path), "--status", "finished", "--csv-out", str(csv_path),
                 "--epochs-csv-out", str(ep_path)]) == 0
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 3 and "config.arm" in lines[0] and "summary.score" in lines[0]
    ep = ep_path.read_text().splitlines()
    assert ep[0] == "key,experiment,epoch,metric,value" and len(ep) == 1 + 2 * 3 * 3
    assert main(["runs", str(tmp_path), "--status", "done"]) == 2


def test_registered_experiments_are_valid():
    exp = get_experiment("baselines")
    cfgs, seeds = exp.configs("quick")
    assert cfgs and seeds == list(range(exp.seeds["quick"]))
    with pytest.raises(LnlabError):
        exp.configs("full", seeds=-1)


def test_cli_run_reproduce_and_report_end_to_end(tmp_path, monkeypatch, capsys):
    import lnlab.experiments as registry

    monkeypatch.setattr(registry, "EXPERIMENTS", {"toy": "test_runner_toy"})
    out = tmp_path / "out"
    assert main(["run", "toy", "--out", str(out), "--workers", "1", "--seeds", "3",
                 "--no-progress", "-o", "sleep=0"]) == 0
    text = capsys.readouterr().out
    assert "toy: 6 runs (6 finished)" in text and "report.html" in text
    assert {p.name for p in out.iterdir()} >= {"results.sqlite", "claims.json", "report.md",
                                               "report.html", "figures", "runs"}
    assert main(["reproduce", "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "toy: 4 runs (4 already done)" in text  # quick = 2 seeds, all done before
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert "claims: 2 supported, 1 contradicted, 1 inconclusive" in capsys.readouterr().out
    assert "seeds: 2 (0, 1)" in (out / "report.md").read_text()  # the latest sweep counts
    assert main(["run", "toy", "-o", "bogus=1", "--out", str(out)]) == 2
    assert "has no option 'bogus' (valid: sleep)" in capsys.readouterr().err


def test_report_flags_claims_edited_after_the_sweep(tmp_path, monkeypatch):
    run_sweep(tmp_path, "toy", "test_runner_toy", toy.sweep("quick", [0, 1]),
              claims=[c.to_dict() for c in toy.CLAIMS], progress=False)
    tuned = [Claim(c.id, c.source, c.statement, c.metric, c.expected,
                   Threshold(">", 0.0) if c.id == "toy.never" else c.rule)
             for c in toy.CLAIMS]
    monkeypatch.setattr(toy, "CLAIMS", tuned)
    doc = json.loads(build_report(tmp_path, resolve=_toy_resolver)["claims.json"].read_text())
    assert doc["experiments"][0]["problems"] == [
        "claim toy.never was changed after this sweep ran (its verdict uses the new definition)"]
