"""Concurrency and sets of files: one trainer per run directory, the report replaced as a
set, read-only commands that write nothing, checkpoint paths confined to their run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import test_runner_toy as toy
from lnlab.cli import main
from lnlab.errors import LnlabError
from lnlab.experiments.framework import Experiment
from lnlab.io import dir_lock
from lnlab.report import build as report_build
from lnlab.report import build_report
from lnlab.runner import run_sweep

SRC = str(Path(__file__).parents[1] / "src")
TESTS = str(Path(__file__).parent)


def _toy(name: str) -> Experiment:
    assert name == "toy"
    return Experiment.from_module(toy)


def _sweep(out: Path, seeds: list[int]) -> None:
    run_sweep(out, "toy", "test_runner_toy", toy.sweep("quick", seeds), scale="quick",
              seeds=seeds, progress=False)


def _report_seeds(out: Path) -> tuple[list[int], str, str]:
    """The seeds each of the three report files says it was built from."""
    doc = json.loads((out / "claims.json").read_text())
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    md_seeds = md.split("seeds: ", 1)[1].split("\n", 1)[0]
    html_seeds = html.split(" · seeds ", 1)[1].split("<", 1)[0]
    return doc["experiments"][0]["seeds"], md_seeds, html_seeds


def _consistent(out: Path) -> int:
    """Assert the report files come from one build; return its number of seeds."""
    seeds, md, html = _report_seeds(out)
    n = len(seeds)
    assert md.startswith(f"{n} (") and html.startswith(f"{n} ("), (seeds, md, html)
    assert (out / "figures" / "toy" / "scores.png").is_file()
    return n


# ------------------------------------------------------------------ the report as a set
@pytest.mark.parametrize("kill_at", ["report.md", "report.html", "swap", "links"])
def test_a_kill_during_a_rebuild_never_mixes_two_builds(tmp_path, monkeypatch, kill_at):
    _sweep(tmp_path, [0])
    build_report(tmp_path, resolve=_toy)
    assert _consistent(tmp_path) == 1
    before = {n: (tmp_path / n).read_bytes() for n in ("claims.json", "report.md",
                                                        "report.html")}
    _sweep(tmp_path, [0, 1])  # a new sweep: the next build differs in every file

    class Killed(BaseException):
        pass

    real_write, real_point, real_link = (report_build.write_atomic, report_build._point,
                                         report_build._link_into_build)

    def write(path, data):
        if Path(path).name == kill_at:
            raise Killed
        return real_write(path, data)

    def point(link, target):
        if kill_at == "swap":
            raise Killed
        return real_point(link, target)

    def link(out, name):
        if kill_at == "links":
            raise Killed
        return real_link(out, name)

    monkeypatch.setattr(report_build, "write_atomic", write)
    monkeypatch.setattr(report_build, "_point", point)
    monkeypatch.setattr(report_build, "_link_into_build", link)
    with pytest.raises(Killed):
        build_report(tmp_path, resolve=_toy)
    if kill_at == "links":  # killed after the swap: the whole new build
        assert _consistent(tmp_path) == 2
    else:  # killed before it: the whole old build, byte for byte
        assert {n: (tmp_path / n).read_bytes() for n in before} == before
        assert _consistent(tmp_path) == 1
    monkeypatch.undo()
    build_report(tmp_path, resolve=_toy)
    assert _consistent(tmp_path) == 2
    builds = sorted(p.name for p in (tmp_path / ".report").iterdir())
    assert len(builds) == 2 and "current" in builds  # one build kept, the rest cleaned


def test_a_report_of_the_old_layout_is_taken_over(tmp_path):
    _sweep(tmp_path, [0])
    (tmp_path / "claims.json").write_text("{}")
    (tmp_path / "report.md").write_text("old")
    (tmp_path / "figures" / "toy").mkdir(parents=True)
    (tmp_path / "figures" / "toy" / "stale.png").write_bytes(b"x")
    paths = build_report(tmp_path, resolve=_toy)
    assert _consistent(tmp_path) == 1
    for name in ("claims.json", "report.md", "report.html", "figures"):
        assert (tmp_path / name).is_symlink()
    assert not (tmp_path / "figures" / "toy" / "stale.png").exists()
    assert json.loads(paths["claims.json"].read_text())["experiments"][0]["figures"] == [
        "figures/toy/scores.png"]


@pytest.mark.slow
def test_sigkill_during_report_builds_leaves_one_build(tmp_path):
    """Real kills: a process rebuilding the report in a loop, killed at random moments."""
    _sweep(tmp_path, [0])
    build_report(tmp_path, resolve=_toy)
    script = (
        f"import sys; sys.path[:0] = [{SRC!r}, {TESTS!r}]\n"
        "import test_runner_toy as toy\n"
        "from lnlab.experiments.framework import Experiment\n"
        "from lnlab.report import build_report\n"
        "from lnlab.runner import run_sweep\n"
        "out = sys.argv[1]\n"
        "for i in range(1000):\n"
        "    seeds = [0, 1] if i % 2 == 0 else [0]\n"
        "    run_sweep(out, 'toy', 'test_runner_toy', toy.sweep('quick', seeds),\n"
        "              scale='quick', seeds=seeds, progress=False)\n"
        "    build_report(out, resolve=lambda n: Experiment.from_module(toy))\n"
        "    print('built', flush=True)\n")
    rng = np.random.default_rng(0)
    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        p.stdout.readline()  # at least one build done: the loop is warm
        time.sleep(float(rng.uniform(0.0, 0.5)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        _consistent(tmp_path)


# ------------------------------------------------------------------ read-only commands
def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_runs_reads_the_store_without_writing_anything(tmp_path, capsys):
    _sweep(tmp_path, [0])
    db = tmp_path / "results.sqlite"
    before, mtime = _tree(tmp_path), db.stat().st_mtime_ns
    assert main(["runs", str(tmp_path)]) == 0
    assert main(["runs", str(tmp_path), "--status", "finished"]) == 0
    assert _tree(tmp_path) == before and db.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob("results.sqlite-*"))  # no -wal/-shm left behind
    capsys.readouterr()


def test_report_never_writes_into_the_store(tmp_path):
    _sweep(tmp_path, [0])
    db = tmp_path / "results.sqlite"
    raw = db.read_bytes()
    build_report(tmp_path, resolve=_toy)
    assert db.read_bytes() == raw
    assert not list(tmp_path.glob("results.sqlite-*"))


# ------------------------------------------------------------------ one trainer per run
def _npz(d: Path) -> Path:
    rng = np.random.default_rng(0)
    p = d / "data.npz"
    np.savez(p, x=rng.normal(size=(64, 4)), y=np.arange(64) % 2)
    return p


def test_a_second_trainer_on_a_locked_run_directory_is_refused(tmp_path, capsys):
    data = _npz(tmp_path)
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--model", "mlp:depth=1,width=8", "--epochs", "1",
            "--out", str(run)]
    with dir_lock(run, "training a run"):  # what a first trainer holds while it runs
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"lnlab: error: another lnlab process is training a run in {run}; "
                       f"wait for it to finish or use another directory"]
        assert sorted(p.name for p in run.iterdir()) == [".lnlab.lock"]
    assert main(argv) == 0  # released: the same command runs
    assert not (run / ".lnlab.lock").exists()
    capsys.readouterr()


@pytest.mark.slow
def test_two_trainers_racing_on_one_directory_never_lose_a_result(tmp_path):
    """Two processes, different --lr, one --out: exactly one succeeds and its result is the
    one on disk; the other is refused (locked, or a finished run with another config)."""
    data = _npz(tmp_path)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC, "LNLAB_DISABLE_KERNELS": "1"}

    def start(lr: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "lnlab", "train", "--data", str(data), "--model",
             "mlp:depth=1,width=8", "--epochs", "40", "--threads", "1", "--lr", lr, "--out",
             str(run), "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)

    procs = {lr: start(lr) for lr in ("0.001", "0.002")}
    res = {lr: (p.wait(timeout=600), p.stdout.read(), p.stderr.read())
           for lr, p in procs.items()}
    ok = [lr for lr, (rc, _, _) in res.items() if rc == 0]
    assert len(ok) == 1, res
    loser = next(lr for lr in res if lr not in ok)
    rc, _, err = res[loser]
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "another lnlab process is training" in err or "different config" in err
    stored = json.loads((run / "result.json").read_text())
    assert stored["config"]["lr"] == float(ok[0])


# ------------------------------------------------------------------ checkpoint paths
def test_a_checkpoint_symlink_out_of_the_run_directory_is_refused(tmp_path):
    import torch

    from lnlab.train.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    save_checkpoint(run, 1, {"w": torch.ones(2)}, {
        "config": {}, "step": 1, "history": [], "optimizer": {}, "store": {}, "wall_s": 0.0,
        "loop_s": 0.0})
    state, tensors = load_checkpoint(run)
    assert state["epoch"] == 1 and torch.equal(tensors["w"], torch.ones(2))
    other = tmp_path / "other.safetensors"
    (run / "ckpt" / "epoch-000001.safetensors").rename(other)
    (run / "ckpt" / "epoch-000001.safetensors").symlink_to(other)
    with pytest.raises(LnlabError, match="outside the run directory"):
        load_checkpoint(run)
    assert other.is_file()  # nothing of the user's is removed
