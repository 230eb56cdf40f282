"""The Ray backend on a real local Ray instance (2 CPUs, started once for the module).

Acceptance of issue 9: a worker is SIGKILLed mid-run, Ray re-runs its task, the run resumes
from its checkpoint, and every run ends finished exactly once with the local backend's numbers.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray instance per module (~5 s) and real worker processes

import test_runner_toy as toy  # noqa: E402
from lnlab.errors import LnlabError  # noqa: E402
from lnlab.runner import (  # noqa: E402
    InProcessBackend,
    Resources,
    RunTask,
    Store,
    make_backend,
    run_dir_for,
    run_key,
    run_sweep,
)
from lnlab.runner.ray_backend import RayBackend, attempts_of  # noqa: E402

MODULE = "test_runner_toy"
TESTS_DIR = Path(__file__).parent


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for the module; workers import the toy from tests/."""
    if ray.is_initialized():
        ray.shutdown()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), old) if p)
    backend = RayBackend(workers=2)  # starts the instance (and owns it)
    try:
        yield backend
    finally:
        backend.close()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def store_rows(out: Path) -> dict:
    with Store.open(out) as s:
        return {r.key: (r, s.epochs(r.key)) for r in s.runs()}


def completions(out: Path, key: str) -> int:
    p = run_dir_for(out, key) / "completions.log"
    return len(p.read_text().splitlines()) if p.exists() else 0


class Killer(threading.Thread):
    """SIGKILLs the Ray worker of the first run seen mid-way (checkpointed, not done)."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.out, self.killed, self.stop = out, None, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.killed is None:
            for rdir in sorted(self.out.glob("runs/*")):
                tries = attempts_of(rdir)
                log = rdir / "epochs.log"
                epochs = log.read_text().split() if log.exists() else []
                if (len(tries) == 1 and (rdir / "ckpt.json").exists() and len(epochs) == 1
                        and not (rdir / "completions.log").exists()):
                    os.kill(tries[0]["pid"], signal.SIGKILL)
                    self.killed = (rdir.name, tries[0]["pid"])
                    return
            time.sleep(0.02)


def test_killed_worker_is_retried_and_every_run_finishes_once_with_local_results(
        ray_cluster, tmp_path):
    cfgs = toy.sweep("quick", [0, 1], sleep="0.25")  # 4 runs × 3 epochs × 0.25 s
    out = tmp_path / "ray"
    killer = Killer(out)
    killer.start()
    with RayBackend() as backend:  # joins the module's instance
        res = run_sweep(out, "toy", MODULE, cfgs, backend=backend, progress=False)
    killer.stop.set()
    killer.join()
    assert killer.killed is not None, "no run was caught mid-way"
    killed_key, killed_pid = killer.killed
    assert (res.total, res.finished, res.failed) == (4, 4, 0)

    rows = store_rows(out)
    assert len(rows) == 4 and {r.status for r, _ in rows.values()} == {"finished"}
    for key, (row, _) in rows.items():
        assert completions(out, key) == 1, "a run completed twice or never"
        assert row.attempts == (2 if key == killed_key else 1)
    tries = attempts_of(run_dir_for(out, killed_key))
    assert [t["pid"] == killed_pid for t in tries] == [True, False]
    assert tries[0]["submission"] == tries[1]["submission"]  # Ray's retry, not a resubmission
    epochs_run = (run_dir_for(out, killed_key) / "epochs.log").read_text().split()
    assert epochs_run.count("1") == 1, "the retry restarted instead of resuming"
    assert sorted(set(epochs_run)) == ["1", "2", "3"]

    local = tmp_path / "local"
    run_sweep(local, "toy", MODULE, cfgs, backend=InProcessBackend(), progress=False)
    expected = store_rows(local)
    assert set(expected) == set(rows)
    for key, (row, epochs) in rows.items():
        assert row.summary == expected[key][0].summary
        assert epochs == expected[key][1]


class Interrupt(Exception):
    pass


def interrupt_after(n: int):
    seen = []

    def hook(outcome):
        seen.append(outcome.key)
        if len(seen) >= n:
            raise Interrupt

    return hook


@pytest.mark.parametrize("first, then", [("local", "ray"), ("ray", "local")])
def test_an_interrupted_sweep_resumes_on_the_other_backend(ray_cluster, tmp_path, first, then):
    cfgs = toy.sweep("quick", [0, 1], sleep="0.1")

    def backend(name):
        return RayBackend() if name == "ray" else InProcessBackend()

    with backend(first) as be, pytest.raises(Interrupt):
        run_sweep(tmp_path, "toy", MODULE, cfgs, backend=be, progress=False,
                  on_outcome=interrupt_after(1))
    before = store_rows(tmp_path)
    assert sum(r.status == "finished" for r, _ in before.values()) == 1
    assert {r.status for r, _ in before.values()} == {"finished", "pending"}
    with backend(then) as be:
        res = run_sweep(tmp_path, "toy", MODULE, cfgs, backend=be, progress=False)
    assert (res.skipped, res.finished, res.failed) == (1, 3, 0)
    for key, (row, _) in store_rows(tmp_path).items():
        assert row.status == "finished"
        assert row.summary["score"] == pytest.approx(toy.score(row.config["arm"],
                                                               row.config["seed"]))
        assert completions(tmp_path, key) >= 1


def test_a_run_whose_worker_always_dies_fails_after_its_retries(ray_cluster, tmp_path):
    cfgs = toy.sweep("quick", [0])
    cfgs[0]["die"] = True  # os._exit in every attempt
    with RayBackend(max_retries=1) as backend:
        res = run_sweep(tmp_path, "toy", MODULE, cfgs, backend=backend, progress=False)
    assert (res.finished, res.failed) == (1, 1)
    key = run_key("toy", cfgs[0])
    assert "after 2 attempts" in res.errors[key]
    row, _ = store_rows(tmp_path)[key]
    assert row.status == "failed" and row.attempts == 2
    assert len(attempts_of(run_dir_for(tmp_path, key))) == 2


def test_make_backend_and_resource_checks(ray_cluster, tmp_path):
    backend = make_backend("ray")  # Ray is up: the session is reused, not restarted
    assert isinstance(backend, RayBackend) and not backend._owns
    assert backend.has_gpu() == (ray.cluster_resources().get("GPU", 0) > 0)
    if not backend.has_gpu():
        task = RunTask("k", "toy", MODULE, {}, str(tmp_path), Resources(gpus=1.0))
        with pytest.raises(LnlabError, match="has none"):
            backend.submit(task)
    with pytest.raises(LnlabError, match="workers"):
        RayBackend(workers=0)
    # the driver may fill the 2 CPUs, not more: queued runs must stay pending, not "running"
    caps = [backend.capacity]
    for seed in (0, 1, 2):
        cfg = {"arm": "a", "seed": seed, "epochs": 1, "sleep": 0.3}
        backend.submit(RunTask(run_key("toy", cfg), "toy", MODULE, cfg,
                               str(tmp_path / str(seed))))
        caps.append(backend.capacity)
    assert caps == [1, 2, 2, 3]  # 3 in flight (submitted past capacity): no room for a 4th
    assert sorted(o.status for o in backend.completed()) == ["finished"] * 3
    backend.close()
    assert ray.is_initialized()  # closing a borrowed session leaves it running


def test_real_training_runs_give_identical_results_on_ray_and_local(ray_cluster, tmp_path):
    """Bit-identical per-run metrics from the trainer on both backends (timings aside)."""
    from lnlab.experiments.framework import complete_config

    cfgs = [complete_config({"arm": arm, "dataset": "clusters", "train": {
        "model": spec, "data": "clusters:n=200,dim=4,classes=3", "epochs": 3,
        "batch_size": 50, "threads": 1, "seed": seed, "checkpoint_every": 1}})
        for arm, spec in (("mlp", "mlp:depth=1,width=16,norm=none"),
                          ("mlp+ln", "mlp:depth=1,width=16,norm=layernorm"))
        for seed in (3,)]
    rows = _same_on_ray_and_local(tmp_path, "tiny", "lnlab.experiments.baselines", cfgs)
    assert len(rows) == 2 and all("final_test_acc" in row.summary for row, _ in rows.values())


def _timeless(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.endswith("_s")}  # wall_s, setup_s, ...


def _same_on_ray_and_local(tmp_path: Path, scale: str, module: str, cfgs: list) -> dict:
    """Run ``cfgs`` on Ray and in-process; every run's summary and epochs must be identical
    (timings aside). Returns the Ray store's rows."""
    with RayBackend() as backend:
        res = run_sweep(tmp_path / "ray", scale, module, cfgs, backend=backend,
                        progress=False)
    assert res.finished == len(cfgs), res.errors
    run_sweep(tmp_path / "local", scale, module, cfgs, backend=InProcessBackend(),
              progress=False)
    ray_rows, local_rows = store_rows(tmp_path / "ray"), store_rows(tmp_path / "local")
    assert set(ray_rows) == set(local_rows)
    for key, (row, epochs) in ray_rows.items():
        lrow, lepochs = local_rows[key]
        assert _timeless(row.summary) == _timeless(lrow.summary)
        assert [_timeless(e) for e in epochs] == [_timeless(e) for e in lepochs]
    return ray_rows


def test_killed_driver_takes_its_ray_tasks_along_and_local_resumes(ray_cluster, tmp_path):
    """SIGKILL a driver that started its own Ray instance (the default): its tasks must not
    go on writing their run dirs (raylet and driver die together, so nobody but lnlab's
    watchdog stops them), and the local backend finishes the sweep."""
    out = tmp_path / "out"
    cfgs = toy.sweep("quick", [0, 1], sleep="0.3")
    script = (
        "import sys, test_runner_toy as toy\n"
        "from lnlab.runner import make_backend, run_sweep\n"
        "run_sweep(sys.argv[1], 'toy', 'test_runner_toy', "
        "toy.sweep('quick', [0, 1], sleep='0.3'), progress=False, "
        "backend=make_backend('ray', workers=2))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], start_new_session=True,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        mid = []
        while time.monotonic() < deadline and not mid:
            time.sleep(0.02)
            mid = [d for d in out.glob("runs/*") if (d / "ckpt.json").exists()
                   and not (d / "completions.log").exists()]
        assert mid, "the driver did not get mid-way in time"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(0.5)  # the watchdog polls every 0.1 s
        logs = sorted(out.glob("runs/*/epochs.log"))
        before = [p.stat().st_mtime_ns for p in logs]
        time.sleep(1.0)  # > 3 epochs of 0.3 s: an orphaned task would have logged again
        assert [p.stat().st_mtime_ns for p in logs] == before
    finally:
        with contextlib.suppress(ProcessLookupError):  # that instance's leftover helpers
            os.killpg(proc.pid, signal.SIGKILL)
    res = run_sweep(out, "toy", MODULE, cfgs, backend=InProcessBackend(), progress=False)
    assert res.finished + res.skipped == 4 and res.failed == 0 and res.finished >= 1
    for key, (row, _) in store_rows(out).items():
        assert row.status == "finished"
        assert completions(out, key) == 1, "a run completed twice or never"
        assert row.summary["score"] == pytest.approx(toy.score(row.config["arm"],
                                                               row.config["seed"]))


def test_cli_run_and_reproduce_on_ray_with_separate_storage(ray_cluster, tmp_path, monkeypatch,
                                                            capsys):
    import lnlab.experiments as registry
    from lnlab.cli import main

    monkeypatch.setattr(registry, "EXPERIMENTS", {"toy": "test_runner_toy"})
    out, shared = tmp_path / "out", tmp_path / "shared"
    assert main(["run", "toy", "--backend", "ray", "--out", str(out), "--storage", str(shared),
                 "--seeds", "1", "--device", "auto", "--no-progress"]) == 0
    assert "toy: 2 runs (2 finished)" in capsys.readouterr().out
    assert main(["reproduce", "--backend", "ray", "--out", str(out), "--storage", str(shared),
                 "--no-progress"]) == 0
    assert "toy: 4 runs (2 finished, 2 already done)" in capsys.readouterr().out
    keys = [r.key for r, _ in store_rows(out).values()]
    assert len(keys) == 4 and not (out / "runs").exists()
    assert all(completions(shared, k) == 1 and len(attempts_of(run_dir_for(shared, k))) == 1
               for k in keys)
    assert set(keys) == {run_key("toy", c) for c in toy.sweep("quick", [0, 1])}  # cpu: as ever


def test_pretrained_fine_tuning_gives_identical_results_on_ray_and_local(ray_cluster, tmp_path):
    """Issue 18: the real-checkpoint setting runs unchanged on Ray (a tiny BERT the test saves,
    its tokenizer and a fake WordNet file; intact + `all`, one epoch)."""
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from lnlab.experiments import get_experiment
    from test_pretrained_experiment import _checkpoint

    ck, data = _checkpoint(tmp_path, "bert")
    spec = (f"wordnet:tokenizer={ck},path={data},n_train=24,n_test=12,length=8,"
            "classes=act+animal+person+plant")
    cfgs, _ = get_experiment("memorization").configs(
        "quick", 1, {"init": str(ck), "data": spec, "epochs": "1", "noise": "0.25"})
    rows = _same_on_ray_and_local(tmp_path, "quick", "lnlab.experiments.memorization", cfgs)
    (row, _), = rows.values()
    assert row.summary["all/final_n_noisy"] == 6 and row.summary["all/step0_kl"] > 0
