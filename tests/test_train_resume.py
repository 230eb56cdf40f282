"""A run killed with SIGKILL resumes from its last checkpoint and ends bitwise equal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lnlab.train import TrainConfig, train

CFG = dict(model="mlp:depth=2,width=32,norm=layernorm", data="clusters:n=400,dim=8,classes=4",
           noise=0.1, optimizer="adamw", weight_decay=0.01, wd_exclude=["norm", "bias"],
           schedule="cosine", warmup_epochs=1, epochs=12, batch_size=32, lr=1e-2, seed=3,
           checkpoint_every=2, threads=1)

CHILD = r"""
import json, os, signal, sys, time
from lnlab.train import TrainConfig, train
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
mode, run_dir = sys.argv[2], sys.argv[3]
def progress(rec):
    if mode == "self" and rec["epoch"] == 5:   # mid-way between checkpoints 4 and 6
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "slow":
        time.sleep(0.1)
train(cfg, run_dir, progress=progress)
"""


def _child(mode: str, run_dir: Path, cfg: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg), mode, str(run_dir)],
                            env=env, stderr=subprocess.PIPE)


def _same(a, b) -> None:
    drop = ("wall_s", "loop_s", "setup_s")
    assert a.status == b.status == "finished"
    assert a.epochs == b.epochs
    assert {k: v for k, v in a.summary.items() if k not in drop} == \
        {k: v for k, v in b.summary.items() if k not in drop}
    for (k, v), (k2, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items(),
                                strict=True):
        assert k == k2 and torch.equal(v, v2), k


@pytest.fixture(scope="module")
def reference():
    return train(TrainConfig(**CFG))


def test_sigkill_self_between_checkpoints_resumes_exactly(tmp_path, reference):
    run = tmp_path / "run"
    p = _child("self", run, CFG)
    p.wait(timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr.read().decode()[-2000:]
    ck = json.loads((run / "checkpoint.json").read_text())
    assert ck["epoch"] == 4 and not (run / "result.json").exists()
    resumed = train(TrainConfig(**CFG), run)
    _same(resumed, reference)
    assert (run / "result.json").exists() and not (run / "checkpoint.json").exists()


def test_sigkill_from_outside_resumes_exactly(tmp_path, reference):
    cfg = {**CFG, "checkpoint_every": 1}
    run = tmp_path / "run"
    p = _child("slow", run, cfg)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.json").exists():
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.15)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not (run / "result.json").exists()
    # whatever instant the kill hit, the directory holds one complete checkpoint
    ck = json.loads((run / "checkpoint.json").read_text())
    assert (run / ck["tensors"]).is_file()
    resumed = train(TrainConfig(**cfg), run)
    ref = train(TrainConfig(**cfg))
    _same(resumed, ref)
    assert reference.epochs == ref.epochs  # checkpointing does not change the numbers
