"""Bitwise determinism on one machine, and replication on a second seed set (issue 13).

A run's numbers depend only on its config — not on ``--workers``, the backend, or the process
it lands in — and each stored run says which library versions, CPU instruction set and
thread count computed it. The sweeps are tiny: 2 arms × 2 seeds, 3 epochs on 200 samples.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import lnlab.experiments as experiments
from lnlab.cli import main
from lnlab.experiments import run_experiment
from lnlab.experiments.replicate import (
    REPLICATE_FIRST_SEED,
    Agreement,
    compare_verdicts,
    summarize,
)
from lnlab.report import build_report
from lnlab.runner import Store, make_backend

TESTS_DIR = Path(__file__).parent


@pytest.fixture
def dtoy(monkeypatch):
    """Register the test experiment (``determinism_toy``) next to the real ones."""
    monkeypatch.setattr(experiments, "EXPERIMENTS",
                        {**experiments.EXPERIMENTS, "dtoy": "determinism_toy"})
    return "dtoy"


@pytest.fixture
def two_threads():
    """The driver process on 2 threads, so a run that inherits them (instead of the
    config's 1) is visible even on a 1-core machine; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def timeless(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.endswith("_s")}  # wall_s, setup_s, loop_s


def stored(out: Path) -> dict:
    """key → (summary, epochs) without timings; every run must be finished."""
    with Store.open(out) as s:
        rows = s.runs()
        assert rows and all(r.status == "finished" for r in rows), [r.error for r in rows]
        return {r.key: (timeless(r.summary), [timeless(e) for e in s.epochs(r.key)])
                for r in rows}


def environments(out: Path) -> list[dict]:
    with Store.open(out) as s:
        return [r.environment for r in s.runs()]


def claims_measured(out: Path) -> list[dict]:
    doc = json.loads(build_report(out)["claims.json"].read_text())
    return [{k: c[k] for k in ("id", "measured", "verdict")} for c in doc["claims"]]


def sweep(out: Path, workers: int) -> None:
    with make_backend("local", workers=workers) as backend:
        res = run_experiment("dtoy", out, backend=backend, progress=False)
    assert res.finished == 4, res.errors


@pytest.mark.usefixtures("two_threads")
def test_one_and_two_workers_and_a_second_run_store_identical_numbers(dtoy, tmp_path):
    sweep(tmp_path / "w1", workers=1)  # in this process
    assert torch.get_num_threads() == 2  # the run's thread count did not leak out
    sweep(tmp_path / "w2", workers=2)  # a pool of spawned workers
    sweep(tmp_path / "again", workers=1)
    w1, w2, again = (stored(tmp_path / d) for d in ("w1", "w2", "again"))
    assert w1 == w2 == again  # same keys, bitwise the same summaries and epoch curves
    assert {s["threads_seen"] for s, _ in w1.values()} == {1}  # the config's, not the host's
    assert claims_measured(tmp_path / "w1") == claims_measured(tmp_path / "w2") \
        == claims_measured(tmp_path / "again")
    for env in environments(tmp_path / "w1") + environments(tmp_path / "w2"):
        assert env["threads"] == 1
        assert env["cpu_capability"] == str(torch.backends.cpu.get_cpu_capability())
        assert {"python", "torch", "numpy", "lnlab"} <= set(env)
        assert env["torch"] == metadata.version("torch")
        assert env["norm_kernels"].startswith(("fused (lnkernels-", "composite ("))


@pytest.mark.slow
@pytest.mark.usefixtures("two_threads")
def test_local_and_ray_store_identical_numbers(dtoy, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    # Ray workers import the toy from tests/ (and lnlab from where this process has it)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p))
    sweep(tmp_path / "local", workers=1)
    with make_backend("ray", workers=2) as backend:
        res = run_experiment("dtoy", tmp_path / "ray", backend=backend, progress=False)
    assert res.finished == 4, res.errors
    assert stored(tmp_path / "local") == stored(tmp_path / "ray")
    assert claims_measured(tmp_path / "local") == claims_measured(tmp_path / "ray")


def test_replicate_runs_a_disjoint_seed_set_and_reports_the_agreement(dtoy, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "dtoy", "--replicate", "--workers", "1", "--no-progress",
                 "--out", str(out)]) == 0
    assert "dtoy (replication): 4 runs (4 finished)" in capsys.readouterr().out
    with Store.open(out) as s:
        (prim,), (rep,) = s.latest_sweeps(), s.latest_sweeps(replicate=True)
        seeds = {r.config["train"]["seed"] for r in s.runs()}
    assert (prim.seeds, rep.seeds) == ([0, 1], [REPLICATE_FIRST_SEED, REPLICATE_FIRST_SEED + 1])
    assert seeds == {0, 1, REPLICATE_FIRST_SEED, REPLICATE_FIRST_SEED + 1}
    doc = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in doc["claims"]] == ["dtoy.learns", "dtoy.seed_set"]  # primary
    repl = doc["replication"]
    assert repl["first_seed"] == REPLICATE_FIRST_SEED and not repl["problems"]
    by_id = {c["claim"]: c for c in repl["claims"]}
    seed_claim = by_id["dtoy.seed_set"]
    assert (seed_claim["primary"], seed_claim["replicate"]) == ("supported", "contradicted")
    assert seed_claim["flipped"] and not seed_claim["agree"]
    assert seed_claim["replicate_result"]["measured"]["values"] == {
        str(REPLICATE_FIRST_SEED): REPLICATE_FIRST_SEED,
        str(REPLICATE_FIRST_SEED + 1): REPLICATE_FIRST_SEED + 1}
    learns = by_id["dtoy.learns"]
    assert learns["agree"] == (learns["primary"] == learns["replicate"])
    assert repl["summary"]["claims"] == 2 and repl["summary"]["flipped"] == 1
    assert repl["summary"]["agree"] + repl["summary"]["differ"] == 2
    md = (out / "report.md").read_text()
    assert "## Replication" in md
    assert "| dtoy | dtoy.seed_set | empirical | supported | contradicted | **no — flipped** |" \
        in md
    assert "dtoy: 0–1 and 1000–1001" in md
    assert "Replication</h2>" in (out / "report.html").read_text()
    # the same command again: nothing runs, the same measurements and agreement
    assert main(["run", "dtoy", "--replicate", "--workers", "1", "--no-progress",
                 "--out", str(out)]) == 0
    again = json.loads((out / "claims.json").read_text())
    assert again["claims"] == doc["claims"]
    assert {k: again["replication"][k] for k in ("claims", "summary", "first_seed")} == \
        {k: repl[k] for k in ("claims", "summary", "first_seed")}


def test_reproduce_replicate_runs_every_experiment_on_both_seed_sets(monkeypatch, tmp_path,
                                                                    capsys):
    monkeypatch.setattr(experiments, "EXPERIMENTS", {"dtoy": "determinism_toy"})
    out = tmp_path / "out"
    assert main(["reproduce", "--replicate", "--workers", "1", "--no-progress",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.index("dtoy: 4 runs") < printed.index("dtoy (replication): 4 runs")
    repl = json.loads((out / "claims.json").read_text())["replication"]
    assert [(e["seeds"], e["replicate_seeds"]) for e in repl["experiments"]] == [
        ([0, 1], [REPLICATE_FIRST_SEED, REPLICATE_FIRST_SEED + 1])]
    assert {c["claim"] for c in repl["claims"]} == {"dtoy.learns", "dtoy.seed_set"}


def test_a_stale_replication_is_left_out_with_a_reason(dtoy, tmp_path):
    out = tmp_path / "out"
    with make_backend("local", workers=1) as be:
        run_experiment("dtoy", out, backend=be, progress=False, replicate=True)
        run_experiment("dtoy", out, backend=be, progress=False, seeds=1)  # primary after it
    doc = json.loads(build_report(out)["claims.json"].read_text())
    assert doc["replication"]["claims"] == []
    assert doc["replication"]["problems"] == [
        "dtoy: replication sweep left out (it ran before the latest primary sweep)"]


def test_without_replicate_the_report_has_no_replication_section(dtoy, tmp_path):
    sweep(tmp_path, workers=1)
    assert "replication" not in json.loads(build_report(tmp_path)["claims.json"].read_text())
    assert "## Replication" not in (tmp_path / "report.md").read_text()


def _result(exp: str, cid: str, verdict: str, kind: str | None = None) -> SimpleNamespace:
    claim = SimpleNamespace(id=cid, **({"kind": kind} if kind else {}))
    return SimpleNamespace(experiment=exp, claim=claim, verdict=verdict)


def test_compare_verdicts_pairs_by_experiment_and_id_and_counts_flips():
    primary = [_result("e", "a", "supported"), _result("e", "b", "supported"),
               _result("e", "c", "contradicted"), _result("e", "d", "inconclusive"),
               _result("f", "a", "supported"), _result("e", "x", "supported", kind="check"),
               _result("e", "only-primary", "supported")]
    replicate = [_result("e", "d", "contradicted"), _result("e", "c", "supported"),
                 _result("e", "b", "inconclusive"), _result("e", "a", "supported"),
                 _result("f", "a", "contradicted"), _result("e", "x", "contradicted"),
                 _result("g", "only-replicate", "supported")]
    rows = compare_verdicts(primary, replicate)
    assert [(a.experiment, a.claim) for a in rows] == [
        ("e", "a"), ("e", "b"), ("e", "c"), ("e", "d"), ("f", "a"), ("e", "x")]
    assert [a.agree for a in rows] == [True, False, False, False, False, False]
    assert [a.flipped for a in rows] == [False, False, True, False, True, True]
    assert rows[-1].kind == "check" and rows[0].kind == "empirical"
    assert summarize(rows) == {"claims": 5, "agree": 1, "differ": 4, "flipped": 2,
                               "checks": 1, "checks_differ": 1}
    assert Agreement("e", "a", "supported", "supported").to_dict() == {
        "experiment": "e", "claim": "a", "kind": "empirical", "primary": "supported",
        "replicate": "supported", "agree": True, "flipped": False}


def test_replicate_refuses_seed_sets_that_would_overlap(dtoy, tmp_path):
    from lnlab.errors import LnlabError

    with pytest.raises(LnlabError, match="overlap"):
        run_experiment("dtoy", tmp_path / "x", seeds=REPLICATE_FIRST_SEED + 1, replicate=True,
                       progress=False)
    assert not (tmp_path / "x").exists()


def test_training_experiments_pin_threads_from_the_config():
    from lnlab.experiments import get_experiment
    from lnlab.experiments.framework import train_resources
    from lnlab.runner import Resources, run_key

    configs, _ = get_experiment("baselines").configs("quick", 1)
    assert {c["train"]["threads"] for c in configs} == {1}  # the default, filled in: keyed
    a = configs[0]
    b = {**a, "train": {**a["train"], "threads": 2}}
    assert run_key("baselines", a) != run_key("baselines", b)  # other threads: another run
    assert train_resources(b) == Resources(threads=2)
    assert train_resources({"train": {"threads": 3, "device": "cuda"}}) == Resources(3, 1.0)
    assert train_resources({"train": {"threads": None}}) == Resources(1, 0.0)
    assert train_resources({"kind": "theory", "seed": 0}) == Resources()


def test_an_experiment_can_state_its_own_resources():
    import types

    import determinism_toy as toy
    from lnlab.experiments import Experiment
    from lnlab.runner import Resources

    mod = types.ModuleType("custom")
    for name in ("NAME", "DESCRIPTION", "CLAIMS", "sweep", "run", "analyze", "figures"):
        setattr(mod, name, getattr(toy, name))
    mod.run_resources = lambda cfg: Resources(threads=3)
    assert Experiment.from_module(mod).resources({"train": {"threads": 1}}) == Resources(3)
    mod.run_resources = lambda cfg: {"cpus": 3.0}
    with pytest.raises(TypeError, match="must return a Resources"):
        Experiment.from_module(mod).resources({})
