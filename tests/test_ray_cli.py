"""Backend/device options and ``lnlab plan``: no Ray and no GPU needed (those parts are faked)."""

from __future__ import annotations

import json
import sys

import pytest

from lnlab.cli import main
from lnlab.errors import LnlabError
from lnlab.experiments import get_experiment
from lnlab.runner import InProcessBackend, make_backend, run_key
from lnlab.runner.backends import resolve_device


class FakeBackend(InProcessBackend):
    def __init__(self, gpu: bool) -> None:
        super().__init__()
        self.gpu = gpu

    def has_gpu(self) -> bool:
        return self.gpu


def test_backend_ray_without_ray_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "out"
    assert main(["run", "baselines", "--backend", "ray", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "pip install 'lnlab[ray]'" in err
    assert not out.exists()
    assert main(["reproduce", "--backend", "ray", "--out", str(out)]) == 2
    assert "pip install" in capsys.readouterr().err
    with pytest.raises(LnlabError, match="pip install"):
        make_backend("ray")


@pytest.mark.parametrize("args, msg", [
    (["--backend", "slurm"], "unknown backend 'slurm': available: local, ray"),
    (["--device", "tpu"], "unknown --device 'tpu'"),
    (["--address", "10.0.0.1:6379"], "--address only applies to --backend ray"),
    (["--backend", "ray", "--workers", "0"], "--workers must be at least 1"),
])
def test_bad_backend_options_exit_2_and_write_nothing(tmp_path, capsys, args, msg):
    out = tmp_path / "out"
    assert main(["run", "baselines", "--out", str(out), *args]) == 2
    assert msg in capsys.readouterr().err
    assert not out.exists()


def test_cpu_keeps_run_keys_and_cuda_makes_separate_runs():
    exp = get_experiment("baselines")
    with_device = exp.with_device
    configs, _ = exp.configs("quick", 1)
    plain = [{"seed": 0, "arm": "a"}]  # a run that does not train
    cpu = with_device(configs + plain, "cpu")
    assert cpu == configs + plain
    assert [run_key("baselines", c) for c in cpu] == [run_key("baselines", c) for c in configs
                                                       ] + [run_key("baselines", plain[0])]
    cuda = with_device(configs + plain, "cuda")
    assert all(c["train"]["device"] == "cuda" for c in cuda[:-1]) and cuda[-1] == plain[0]
    assert all(c["train"]["device"] == "cpu" for c in configs)  # inputs untouched
    new_keys = {run_key("baselines", c) for c in cuda[:-1]}
    assert not new_keys & {run_key("baselines", c) for c in configs}
    assert len(new_keys) == len(configs)
    assert {exp.resources(c).gpus for c in cuda[:-1]} == {1.0}
    assert {exp.resources(c).gpus for c in cpu} == {0.0}
    assert {exp.resources(c).threads for c in cpu} == {1}  # pinned from the config
    with pytest.raises(LnlabError, match="resolve"):
        with_device(configs, "auto")


def test_device_resolution_against_the_backend():
    assert resolve_device("auto", FakeBackend(gpu=False)) == "cpu"
    assert resolve_device("auto", FakeBackend(gpu=True)) == "cuda"
    assert resolve_device("cuda", FakeBackend(gpu=True)) == "cuda"
    assert resolve_device("cpu", FakeBackend(gpu=True)) == "cpu"
    with pytest.raises(LnlabError, match="no CUDA GPU"):
        resolve_device("cuda", FakeBackend(gpu=False))
    with pytest.raises(LnlabError, match="unknown device"):
        resolve_device("gpu", FakeBackend(gpu=True))


def test_device_cuda_without_a_gpu_exits_2_before_writing(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    assert main(["run", "baselines", "--workers", "1", "--device", "cuda",
                 "--out", str(out)]) == 2
    assert "--device cuda: this machine has no CUDA GPU" in capsys.readouterr().err
    assert not out.exists()


def test_plan_counts_runs_and_resources(capsys):
    assert main(["plan", "--scale", "quick", "-e", "baselines", "--json"]) == 0
    (p,) = json.loads(capsys.readouterr().out)
    # 3 arms × MNIST-1D × 5 seeds, 150 epochs each at "quick"
    assert (p["experiment"], p["runs"], p["seeds"]) == ("baselines", 15, 5)
    assert p["resources"] == {"1 CPU": 15} and (p["cpu_slots"], p["gpu_slots"]) == (15, 0)
    assert p["epochs"] == 15 * 150
    assert main(["plan", "--scale", "full", "-e", "baselines", "--seeds", "2",
                 "--device", "cuda", "--json"]) == 0
    (p,) = json.loads(capsys.readouterr().out)
    assert p["runs"] == 12 and p["resources"] == {"1 CPU + 1 GPU": 12} and p["gpu_slots"] == 12
    assert main(["plan", "--scale", "quick", "-e", "baselines"]) == 0
    table = capsys.readouterr().out
    assert "baselines" in table and "15" in table and "total" in table
    assert main(["plan", "-e", "nosuch"]) == 2
    assert "unknown experiment 'nosuch'" in capsys.readouterr().err
    assert main(["plan", "--device", "auto"]) == 2


def test_store_adds_backend_retries_to_attempts(tmp_path):
    from lnlab.runner import Store

    with Store.open(tmp_path, create=True) as s:
        s.add_runs("toy", [("k1", {"seed": 0}), ("k2", {"seed": 1})])
        for key, retries in (("k1", 2), ("k2", 0)):
            s.mark_running(key)
            s.record(key, status="finished", summary={"score": 1.0}, retries=retries)
        assert {r.key: r.attempts for r in s.runs()} == {"k1": 3, "k2": 1}


def test_an_unreachable_ray_address_fails_in_seconds_with_one_line():
    """`--address HOST:PORT` is checked with a plain TCP connect before ray.init (which would
    retry a dead address for minutes)."""
    import socket

    pytest.importorskip("ray")  # the module imports nothing of Ray, but lives beside it
    from lnlab.runner.ray_backend import _check_reachable

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LnlabError, match=f"could not reach the Ray cluster at 127.0.0.1:{port}"):
        _check_reachable(f"127.0.0.1:{port}", timeout=5)
    for bad in ("nohost", "host:", ":6379", "host:99999", "host:port"):
        with pytest.raises(LnlabError, match="expected auto, HOST:PORT"):
            _check_reachable(bad)
    with socket.socket() as s:  # something listening: accepted
        s.bind(("127.0.0.1", 0))
        s.listen()
        _check_reachable(f"127.0.0.1:{s.getsockname()[1]}", timeout=5)
    for fine in ("auto", "local", "ray://10.0.0.1:10001"):
        _check_reachable(fine)  # left to Ray


def test_run_with_a_dead_ray_address_exits_2_and_writes_nothing(tmp_path, capsys):
    import socket

    pytest.importorskip("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    assert main(["run", "baselines", "--backend", "ray", "--address", f"127.0.0.1:{port}",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not reach the Ray cluster" in err
    assert not out.exists()
