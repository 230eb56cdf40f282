import json
import math
import re
import statistics

import pytest

import test_runner_toy as toy
from lnlab.cli import main
from lnlab.errors import LnlabError
from lnlab.experiments import get_experiment
from lnlab.experiments.claims import Claim, Effect, Measurement
from lnlab.experiments.framework import Experiment, Results, Run
from lnlab.report import build_report
from lnlab.runner import run_sweep


def m(*xs: float, excluded: int = 0) -> Measurement:
    return Measurement(dict(enumerate(xs)), excluded=excluded)


# ------------------------------------------------------------------ rules
# (the rules themselves are tested in tests/test_claims.py)
def test_measurement_statistics_match_statistics_module():
    x = m(0.30, 0.32, 0.35)
    assert x.n == 3
    assert x.mean == pytest.approx(statistics.mean([0.30, 0.32, 0.35]), abs=1e-15)
    assert x.std == pytest.approx(statistics.stdev([0.30, 0.32, 0.35]), abs=1e-15)
    assert m(1.0, math.nan).n == 1 and m(2.0).std == 0.0
    assert math.isnan(m().mean)


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
    assert {c["id"]: c["verdict"] for c in doc["checks"]} == {"toy.exact": "pass"}
    assert doc["checks"][0]["tolerance"] == 1e-9
    for c in doc["claims"]:  # every empirical claim carries its statistics
        assert {"effect", "direction", "minimal_effect", "interval", "n", "per_seed",
                "verdict", "rule_text", "detectable_effect"} <= set(c)
    assert "not measured" in next(c for c in doc["claims"] if c["id"] == "toy.missing")["reason"]
    assert "claim toy.missing: 'nothing' was not measured (analysis defect)" in \
        doc["experiments"][0]["problems"]
    level = next(c for c in doc["claims"] if c["id"] == "toy.level")
    assert level["measured"]["n"] == 3
    assert level["measured"]["mean"] == pytest.approx(statistics.mean(
        toy.score("a", s) for s in range(3)))
    assert doc["verdicts"] == {"supported": 2, "contradicted": 1, "inconclusive": 1}
    assert doc["check_outcomes"] == {"pass": 1, "fail": 0}
    assert doc["experiments"][0]["figures"] == ["figures/toy/scores.png"]
    md = paths["report.md"].read_text()
    assert "4 empirical claims: 2 supported, 1 contradicted, 1 inconclusive. 1 checks: 1 pass, " \
        "0 fail." in md
    assert "## Empirical claims" in md and "## Checks" in md
    assert "**toy.level**" in md and "| 3 | 1, 1.01, 1.02 |" in md and "**supported** |" in md
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
    assert {c["verdict"] for c in doc["checks"]} == {"fail"}
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
    text = capsys.readouterr().out
    assert "claims: 2 supported, 1 contradicted, 1 inconclusive" in text
    assert "checks: 1 pass, 0 fail" in text
    assert "seeds: 2 (0, 1)" in (out / "report.md").read_text()  # the latest sweep counts
    assert main(["run", "toy", "-o", "bogus=1", "--out", str(out)]) == 2
    assert "has no option 'bogus' (valid: sleep)" in capsys.readouterr().err


def test_report_flags_claims_edited_after_the_sweep(tmp_path, monkeypatch):
    run_sweep(tmp_path, "toy", "test_runner_toy", toy.sweep("quick", [0, 1]),
              claims=[c.to_dict() for c in _toy_resolver("toy").claims], progress=False)
    tuned = [Claim(c.id, c.source, c.statement, c.metric, c.expected,
                   Effect(">", 0.1, min_n=2) if c.id == "toy.never" else c.rule)
             for c in toy.CLAIMS]
    monkeypatch.setattr(toy, "CLAIMS", tuned)
    doc = json.loads(build_report(tmp_path, resolve=_toy_resolver)["claims.json"].read_text())
    assert doc["experiments"][0]["problems"] == [
        "claim toy.missing: 'nothing' was not measured (analysis defect)",
        "claim toy.never was changed after this sweep ran (its verdict uses the new definition)"]


def test_report_names_the_scale_that_can_decide_a_noisy_claim():
    from lnlab.experiments.claims import evaluate
    from lnlab.report.build import ExperimentSection
    from lnlab.runner.store import SweepRow

    c = Claim("x.1", "s", "a small effect", "d", "> 0.5", Effect(">", 0.5))
    noisy = evaluate(c, {"d": m(0.0, 1.0, -0.5, 1.5, 0.7)})
    assert noisy.verdict == "inconclusive" and noisy.seeds_needed > 5
    sw = SweepRow(1, "x", "quick", [0, 1, 2, 3, 4], {}, [], {}, "t0", "t1")
    note = ExperimentSection("x", "", sw, {}, seeds_by_scale={"quick": 5, "full": 10}) \
        .scale_note(noisy)
    assert note.startswith("cannot be decided at quick scale with 5 seeds: about "
                           f"{noisy.seeds_needed} seeds needed (full scale runs 10)")
    assert note.endswith(f"use --seeds {noisy.seeds_needed}")
    clear = evaluate(c, {"d": m(3.0, 3.1, 2.9, 3.05, 2.95)})
    assert clear.seeds_needed is None and ExperimentSection(
        "x", "", sw, {}, seeds_by_scale={"quick": 5}).scale_note(clear) == ""
