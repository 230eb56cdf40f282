"""Claims a sweep did not run, one experiment at two scales, and the regime × claim table.

A claim whose setting a scale leaves out is "not run" (with the scale that runs it), counted
neither as a verdict nor as a check outcome; a store holding one experiment at two scales
(memorization's quick and paper runs) gives two sections with distinct files and anchors; the
regime table merges them, one column per (regime, setting).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import test_runner_toy as toy
from lnlab import experiments
from lnlab.experiments.claims import (
    NOT_RUN,
    Claim,
    Effect,
    Measurement,
    compare_verdicts,
    evaluate,
    evaluate_all,
)
from lnlab.report import build_report
from lnlab.report.build import collect
from lnlab.report.docs import write_docs
from lnlab.report.model import ExperimentSection, Report
from lnlab.runner import run_sweep
from lnlab.runner.store import SweepRow


def _claim(cid: str, regime: str = "") -> Claim:
    return Claim(cid, "test", f"statement {cid}", f"m[{cid}]", "> 1", Effect(">", 1.0),
                 regime=regime)


def test_a_not_run_measurement_is_neither_a_verdict_nor_an_outcome():
    c = _claim("x.1.a")
    r = evaluate(c, {c.metric: Measurement({}, not_run="setting a runs at --scale full")})
    assert r.verdict == NOT_RUN and r.not_run
    assert r.reason == "not run at this scale: setting a runs at --scale full"
    # a precondition that was not run does not fail its dependants: they are not run too
    gate = Claim("x.pre.a", "test", "gate", "g", ">= 1", Effect(">", 1.0))
    dep = replace(c, requires=("x.pre.a",))
    res = evaluate_all([gate, dep], {"g": Measurement({}, not_run="full"),
                                     c.metric: Measurement({}, not_run="full")})
    assert [x.verdict for x in res] == [NOT_RUN, NOT_RUN]
    assert r.to_dict()["measured"]["not_run"] == "setting a runs at --scale full"


def test_replication_skips_claims_one_seed_set_did_not_run():
    c = _claim("x.1.a")
    ran = evaluate(c, {c.metric: Measurement({0: 3.0, 1: 3.1, 2: 2.9})}, "e")
    skipped = evaluate(c, {c.metric: Measurement({}, not_run="full")}, "e")
    assert compare_verdicts([ran], [skipped]) == []
    assert compare_verdicts([skipped], [skipped]) == []
    assert compare_verdicts([ran], [ran])[0]["agree"] is True


def _section(name: str, scale: str, results, label: str = "") -> ExperimentSection:
    sw = SweepRow(id=1, experiment=name, scale=scale, seeds=[0, 1, 2], keys=[], options={},
                  started="2026-01-01T00:00:00", finished="2026-01-01T00:01:00",
                  versions={}, claims=[], replicate=False)
    return ExperimentSection(name, "d", sw, {"finished": 1}, claims=results, label=label,
                             regime_note="closest: the checkpoint")


def test_regime_table_merges_the_scales_and_counts_each_claim_once(tmp_path):
    claims = [_claim("sk.1.scratch", "from scratch"), _claim("sk.1.ckpt", "real checkpoint"),
              _claim("sk.2.scratch", "from scratch")]
    good = Measurement({0: 3.0, 1: 3.2, 2: 2.9})
    quick = [evaluate(claims[0], {claims[0].metric: good}, "mem"),
             evaluate(claims[1], {claims[1].metric: Measurement({}, not_run="--scale paper")},
                      "mem"),
             evaluate(claims[2], {claims[2].metric: Measurement({0: -3.0, 1: -3.1, 2: -2.9})},
                      "mem")]
    paper = [evaluate(claims[0], {claims[0].metric: Measurement({}, not_run="--scale quick")},
                      "mem"),
             evaluate(claims[1], {claims[1].metric: good}, "mem"),
             evaluate(claims[2], {claims[2].metric: Measurement({}, not_run="--scale quick")},
                      "mem")]
    rep = Report(tmp_path, "now", [_section("mem", "quick", quick, "mem (quick)"),
                                   _section("mem", "paper", paper, "mem (paper)")])
    header, rows = rep.regime_table("mem")
    assert header == ["claim", "from scratch: scratch", "real checkpoint: ckpt"]
    assert rows == [["sk.1", "supported", "supported"], ["sk.2", "contradicted", "–"]]
    # every claim counted once, in the section that ran it; nothing is "not run" overall
    assert rep.verdict_counts() == {"supported": 2, "contradicted": 1, "inconclusive": 0}
    assert rep.not_run == []
    only_quick = Report(tmp_path, "now", [_section("mem", "quick", quick)])
    assert [c.claim.id for c in only_quick.not_run] == ["sk.1.ckpt"]
    assert "1 not run at the scales here" in only_quick.headline()
    assert only_quick.regime_table("mem")[1][0] == ["sk.1", "supported", NOT_RUN]


def test_one_experiment_at_two_scales_gets_two_sections(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "EXPERIMENTS", {"toy": "test_runner_toy"})
    out = tmp_path / "run"
    for scale in ("quick", "full"):
        run_sweep(out, "toy", "test_runner_toy", toy.sweep(scale, [0, 1, 2]), scale=scale,
                  seeds=[0, 1, 2], progress=False)
    rep = collect(out)
    assert [(s.title, s.slug) for s in rep.sections] == [("toy (quick)", "toy-quick"),
                                                         ("toy (full)", "toy-full")]
    build_report(out)
    html = (out / "report.html").read_text()
    ids = re.findall(r'id="([^"]+)"', html)
    assert len(ids) == len(set(ids))  # anchors stay unique
    assert 'id="exp-toy-quick"' in html and 'id="exp-toy-full"' in html
    figs = sorted(p.relative_to(out).as_posix() for p in out.rglob("scores.png"))
    assert len(figs) == 2 and figs[0] != figs[1]  # one figure folder per section
    doc = json.loads((out / "claims.json").read_text())
    assert [e["title"] for e in doc["experiments"]] == ["toy (quick)", "toy (full)"]
    written = write_docs(rep, tmp_path / "docs", "commit x")
    assert sorted(p.name for p in written) == ["README.md", "toy-full.md", "toy-quick.md"]
    index = (tmp_path / "docs" / "README.md").read_text()
    assert "[toy (quick)](toy-quick.md)" in index and "[toy (full)](toy-full.md)" in index


def test_report_combines_output_directories(tmp_path, monkeypatch, capsys):
    """`lnlab report QUICK --with PAPER`: a quick reproduction and a run at another scale kept
    in their own directories make one report; the other directory is only read."""
    from lnlab.cli import main

    monkeypatch.setattr(experiments, "EXPERIMENTS", {"toy": "test_runner_toy"})
    quick, paper = tmp_path / "quick", tmp_path / "paper"
    run_sweep(quick, "toy", "test_runner_toy", toy.sweep("quick", [0, 1, 2]), scale="quick",
              seeds=[0, 1, 2], progress=False)
    run_sweep(paper, "toy", "test_runner_toy", toy.sweep("full", [0, 1, 2]), scale="full",
              seeds=[0, 1, 2], progress=False)
    before = sorted(p.name for p in paper.iterdir())
    assert main(["report", str(quick), "--with", str(paper), "--docs",
                 str(tmp_path / "docs")]) == 0
    doc = json.loads((quick / "claims.json").read_text())
    assert [(e["title"], e["scale"]) for e in doc["experiments"]] == [
        ("toy (quick)", "quick"), ("toy (full)", "full")]
    assert sorted(p.name for p in paper.iterdir()) == before  # nothing written there
    assert (tmp_path / "docs" / "toy-full.md").is_file()
    # the same experiment and scale in both: which one? refused, nothing written
    run_sweep(paper, "toy", "test_runner_toy", toy.sweep("quick", [0, 1, 2]), scale="quick",
              seeds=[0, 1, 2], progress=False)
    capsys.readouterr()
    assert main(["report", str(quick), "--with", str(paper)]) == 2
    err = capsys.readouterr().err
    assert "both hold a quick sweep of toy" in err and len(err.strip().splitlines()) == 1
