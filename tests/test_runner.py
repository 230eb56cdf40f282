import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import test_runner_toy as toy
from lnlab.errors import LnlabError
from lnlab.runner import (
    DB_NAME,
    InProcessBackend,
    LocalBackend,
    Resources,
    RunTask,
    Store,
    execute,
    make_backend,
    run_dir_for,
    run_key,
    run_sweep,
)
from lnlab.runner.driver import sweep_lock

MODULE = "test_runner_toy"
TESTS_DIR = Path(__file__).parent


def completions(out: Path, key: str) -> int:
    p = run_dir_for(out, key) / "completions.log"
    return len(p.read_text().splitlines()) if p.exists() else 0


def test_sweep_runs_everything_then_skips_it(tmp_path):
    cfgs = toy.sweep("quick", [0, 1])
    res = run_sweep(tmp_path, "toy", MODULE, cfgs, seeds=[0, 1], progress=False)
    assert (res.total, res.finished, res.skipped) == (4, 4, 0)
    with Store.open(tmp_path) as s:
        runs = s.runs(experiment="toy")
        assert {r.status for r in runs} == {"finished"}
        for r in runs:
            assert r.summary["score"] == pytest.approx(toy.score(r.config["arm"], r.config["seed"]))
            assert [e["epoch"] for e in s.epochs(r.key)] == [1, 2, 3]
            assert s.artifacts(r.key)["out"].endswith("out.txt")
            assert r.key == run_key("toy", r.config)
    again = run_sweep(tmp_path, "toy", MODULE, cfgs, progress=False)
    assert (again.ran, again.skipped) == (0, 4)
    assert all(completions(tmp_path, k) == 1 for k in res.keys)
    # a bigger sweep only runs what is new
    more = run_sweep(tmp_path, "toy", MODULE, toy.sweep("quick", [0, 1, 2]), progress=False)
    assert (more.finished, more.skipped) == (2, 4)


def test_diverged_and_failed_runs_are_results_and_the_sweep_goes_on(tmp_path):
    cfgs = toy.sweep("quick", [0])
    cfgs[0]["diverge"] = True
    cfgs.append({**cfgs[1], "fail": True})
    res = run_sweep(tmp_path, "toy", MODULE, cfgs, progress=False)
    assert (res.finished, res.diverged, res.failed) == (1, 1, 1)
    with Store.open(tmp_path) as s:
        by = {r.key: r for r in s.runs()}
    div = by[run_key("toy", cfgs[0])]
    assert div.status == "diverged" and div.summary == {"score": None, "epochs": 2}
    bad = by[run_key("toy", cfgs[2])]
    assert bad.status == "failed"
    assert bad.error == "RuntimeError: the toy run was asked to fail"  # one line
    assert "Traceback" in (run_dir_for(tmp_path, bad.key) / "error.txt").read_text()
    # re-running: diverged is a result (skipped), failed is tried again
    again = run_sweep(tmp_path, "toy", MODULE, cfgs, progress=False)
    assert (again.skipped, again.failed) == (2, 1)
    with Store.open(tmp_path) as s:
        assert s.runs(keys=[bad.key])[0].attempts == 2
        assert s.runs(keys=[div.key])[0].attempts == 1
    # once the cause is fixed, the retry succeeds and the old traceback is gone
    cfgs[2].pop("fail")
    cfgs[2]["note"] = "fixed"
    fixed = run_sweep(tmp_path, "toy", MODULE, cfgs, progress=False)
    assert fixed.finished == 1 and fixed.failed == 0
    key = run_key("toy", cfgs[2])
    execute(RunTask(key, "toy", MODULE, {**cfgs[2], "fail": True}, str(tmp_path / "x")))
    assert (tmp_path / "x" / "error.txt").exists()
    assert execute(RunTask(key, "toy", MODULE, cfgs[2], str(tmp_path / "x"))).status == "finished"
    assert not (tmp_path / "x" / "error.txt").exists()


def test_execute_reports_bad_run_output_as_failed(tmp_path):
    task = RunTask("k", "toy", "json", {}, str(tmp_path))  # json.run does not exist
    out = execute(task)
    assert out.status == "failed" and out.error.startswith("AttributeError")


def test_execute_pins_the_tasks_threads_and_restores_the_callers(tmp_path):
    """The thread count is the task's (hence the experiment's, from the config), never the
    process's: the same run computes the same sums in any worker (issue 13)."""
    import torch

    cfg = {**toy.sweep("quick", [0])[0], "epochs": 1, "threads_probe": True}
    before = torch.get_num_threads()
    for n in (1, 3, 2):
        out = execute(RunTask("k", "toy", MODULE, cfg, str(tmp_path / str(n)), Resources(n)))
        assert out.status == "finished", out.error
        assert out.summary["threads"] == n and out.environment["threads"] == n
        assert torch.get_num_threads() == before
    bad = execute(RunTask("k", "toy", MODULE, {**cfg, "fail": True}, str(tmp_path / "f"),
                          Resources(3)))
    assert bad.status == "failed" and bad.environment["threads"] == 3
    assert torch.get_num_threads() == before
    assert {"python", "torch", "numpy", "cpu_capability"} <= set(bad.environment)


def test_the_runner_takes_resources_from_the_experiment_not_from_config_fields(tmp_path):
    cfgs = [{**c, "epochs": 1, "threads_probe": True, "train": {"threads": 4, "device": "cuda"}}
            for c in toy.sweep("quick", [0])]
    run_sweep(tmp_path / "default", "toy", MODULE, cfgs, progress=False)
    with Store.open(tmp_path / "default") as s:  # one thread: "train.threads" means nothing
        assert {r.summary["threads"] for r in s.runs()} == {1}
        assert {r.environment["threads"] for r in s.runs()} == {1}
    asked = []

    def resources(cfg):
        asked.append(cfg["arm"])
        return Resources(threads=2 if cfg["arm"] == "b" else 1)

    run_sweep(tmp_path / "given", "toy", MODULE, cfgs, progress=False, resources=resources)
    assert sorted(asked) == ["a", "b"]
    with Store.open(tmp_path / "given") as s:
        assert {r.config["arm"]: r.summary["threads"] for r in s.runs()} == {"a": 1, "b": 2}


@pytest.mark.parametrize("kw", [{"threads": 0}, {"threads": True}, {"threads": 1.5},
                                {"gpus": -1.0}])
def test_resources_are_checked(kw):
    with pytest.raises(ValueError, match="Resources"):
        Resources(**kw)
    assert Resources(threads=3, gpus=1.0).request() == {"cpus": 3.0, "gpus": 1.0}


def test_bad_configs_leave_nothing_behind(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(LnlabError, match=r"config #1\.x"):
        run_sweep(out, "toy", MODULE, [{"seed": 0}, {"seed": 1, "x": (1, 2)}], progress=False)
    assert not out.exists()
    with pytest.raises(LnlabError, match="workers"):
        make_backend("local", workers=0)
    with pytest.raises(LnlabError, match="unknown backend"):
        make_backend("slurm")


def test_one_driver_per_directory(tmp_path):
    with sweep_lock(tmp_path), pytest.raises(LnlabError, match="another lnlab process"):
        run_sweep(tmp_path, "toy", MODULE, toy.sweep("quick", [0]), progress=False)


@pytest.mark.slow
def test_process_pool_backend_survives_a_dying_worker(tmp_path):
    cfgs = toy.sweep("quick", [0, 1])
    cfgs[1]["die"] = True  # os._exit in the worker: the pool breaks
    with LocalBackend(workers=2) as backend:
        res = run_sweep(tmp_path, "toy", MODULE, cfgs, backend=backend, progress=False)
    assert res.total == 4 and res.failed >= 1 and res.ran == 4
    assert "worker process died" in res.errors[run_key("toy", cfgs[1])]
    with Store.open(tmp_path) as s:
        statuses = {r.key: r.status for r in s.runs()}
    assert statuses[run_key("toy", cfgs[1])] == "failed"
    # runs caught in the broken pool fail too; a re-run completes them
    cfgs[1].pop("die")
    rerun = run_sweep(tmp_path, "toy", MODULE, cfgs[:1] + cfgs[2:], backend=InProcessBackend(),
                      progress=False)
    assert rerun.failed == 0


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sweep_killed_mid_way_resumes_without_repeating_or_losing_runs(tmp_path, workers):
    """SIGKILL the driver while a run is mid-way; a second driver finishes the sweep."""
    out = tmp_path / "out"
    script = (
        "import sys, test_runner_toy as toy\n"
        "from lnlab.runner import make_backend, run_sweep\n"
        "run_sweep(sys.argv[1], 'toy', 'test_runner_toy', "
        "toy.sweep('quick', [0, 1, 2], sleep='0.15'), progress=False, "
        f"backend=make_backend('local', workers={workers}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait: ≥ 2 runs done, one run 1 epoch in
            time.sleep(0.05)
            if not (out / DB_NAME).exists():
                continue
            try:
                con = sqlite3.connect(out / DB_NAME, timeout=5)
                rows = dict(con.execute("SELECT key, status FROM runs").fetchall())
                con.close()
            except sqlite3.OperationalError:
                continue
            done = [k for k, st in rows.items() if st == "finished"]
            mid = [k for k, st in rows.items() if st == "running"
                   and (run_dir_for(out, k) / "ckpt.json").exists()]
            if len(done) >= 2 and mid:
                break
        else:
            pytest.fail("the driver did not get mid-way in time")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_key = mid[0]
    assert proc.returncode == -signal.SIGKILL
    if workers > 1:  # pool workers die with their driver instead of running on as orphans
        logs = sorted(out.glob("runs/*/epochs.log"))
        before = [p.stat().st_mtime_ns for p in logs]
        time.sleep(0.6)  # > 3 epochs of 0.15 s: an orphan would have logged again
        assert [p.stat().st_mtime_ns for p in logs] == before
    res = run_sweep(out, "toy", MODULE, toy.sweep("quick", [0, 1, 2], sleep="0.15"),
                    progress=False)
    assert res.skipped >= 2 and res.finished == 6 - res.skipped and res.failed == 0
    with Store.open(out) as s:
        runs = s.runs()
    assert len(runs) == 6 and {r.status for r in runs} == {"finished"}
    for r in runs:
        assert completions(out, r.key) == 1, "a run completed twice or never"
        assert r.summary["score"] == pytest.approx(toy.score(r.config["arm"], r.config["seed"]))
    attempts = {r.key: r.attempts for r in runs}
    assert all(attempts[k] == 1 for k in done), "a run finished before the kill ran again"
    assert attempts[killed_key] == 2
    assert all(attempts[k] <= 2 for k in attempts)
    # the killed run resumed from its checkpoint instead of starting over
    epochs_run = (run_dir_for(out, killed_key) / "epochs.log").read_text().split()
    assert sorted(set(epochs_run)) == ["1", "2", "3"] and len(epochs_run) <= 4


def test_progress_bar_reports_runs_and_last_metric(tmp_path, capsys):
    res = run_sweep(tmp_path, "toy", MODULE, toy.sweep("quick", [0]), progress=True,
                    headline_metric="score")
    assert res.finished == 2
    err_out = "".join(capsys.readouterr())
    assert "2/2" in err_out and "score=2" in err_out
