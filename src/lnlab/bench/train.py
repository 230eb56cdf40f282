"""Trainer overhead: steps/s of ``lnlab.train`` vs a hand-written PyTorch loop, same process.

Both train the same model (by default the MNIST-1D MLP 40-100-100-10, ReLU) with plain Adam on
the same in-memory MNIST-1D tensors, batch 100, batches drawn through a per-epoch permutation.
Runs alternate (hand, trainer, trainer+eval, hand, ...) so machine drift hits all alike; the
median over repeats is reported.  Three numbers:

* ``hand``: the hand-written loop (the baseline);
* ``trainer``: ``train()`` evaluating only after the last epoch, i.e. the cost of a step;
* ``trainer_eval``: ``train()`` with the default ``eval_every=1`` (one batched no-grad pass
  over train + test per epoch, weight norms, noise shares), i.e. what a typical run pays.

ratio = hand steps/s / trainer steps/s (1.0 = no overhead; the requirement is <= 1.2).
Wall-clock rates suffer when other processes share the cores, so the CPU time of each whole
call (``time.process_time``; the trainer's includes its setup: data from the cache, building
the optimizer, a final evaluation) is recorded too: ``ratio_cpu`` = trainer CPU s / hand CPU s
for the same number of steps.  With one thread it is the steadier number.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lnlab.data import Dataset, load_dataset
from lnlab.io import write_atomic
from lnlab.train import TrainConfig, train

DEFAULT_MODEL = "sequential-mlp"


def _sequential_mlp(d_in: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                         nn.Linear(100, classes))


def _factory(model: str, data: Dataset) -> Callable[[], nn.Module]:
    info = data.info
    if model == DEFAULT_MODEL:
        d_in = 1
        for s in info.input_shape:
            d_in *= s
        return lambda: _sequential_mlp(d_in, info.num_classes)
    from lnlab.models import build_model

    vocab = info.vocab_size if info.kind == "tokens" else None
    return lambda: build_model(model, input_shape=info.input_shape,
                               num_classes=info.num_classes, vocab_size=vocab)


def hand_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int,
              batch_size: int, lr: float, seed: int) -> float:
    """The baseline: the loop anyone would write. Returns steps per second."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    steps = 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + epoch))
        for idx in perm.split(batch_size):
            loss = F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return steps / (time.perf_counter() - t0)


def _trainer(model: nn.Module, cfg: TrainConfig) -> float:
    r = train(cfg, model=model)
    return r.summary["steps"] / r.summary["loop_s"]


@dataclass
class TrainBench:
    model: str
    data: str
    batch_size: int
    epochs: int
    steps_per_run: int
    repeats: int
    threads: int
    hand_steps_per_s: float
    trainer_steps_per_s: float
    trainer_eval_steps_per_s: float
    ratio: float
    ratio_eval: float
    ratio_cpu: float
    ratio_cpu_eval: float
    samples: dict[str, list[float]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def run_train_bench(*, model: str = DEFAULT_MODEL, data: str = "mnist1d", epochs: int = 20,
                    batch_size: int = 100, repeats: int = 5, lr: float = 1e-2,
                    progress: Callable[[str], None] | None = None) -> TrainBench:
    """Time the three loops ``repeats`` times each (interleaved) after one warm-up round."""
    ds = load_dataset(data)
    make = _factory(model, ds)
    x, y = ds.x_train, ds.y_train
    base = TrainConfig(model=model, data=data, lr=lr, batch_size=batch_size, epochs=epochs,
                       optimizer="adam", checkpoint_every=0)
    step_cfg = TrainConfig.from_dict({**base.to_dict(), "eval_every": epochs})
    eval_cfg = TrainConfig.from_dict({**base.to_dict(), "eval_every": 1})
    samples: dict[str, list[float]] = {"hand": [], "trainer": [], "trainer_eval": []}
    cpu: dict[str, list[float]] = {k: [] for k in samples}
    for rep in range(repeats + 1):
        for name in samples:
            if progress:
                progress(f"{name} {rep}/{repeats}")
            torch.manual_seed(rep)
            m = make()
            c0 = time.process_time()
            if name == "hand":
                v = hand_loop(m, x, y, epochs=epochs, batch_size=batch_size, lr=lr, seed=rep)
            else:
                v = _trainer(m, step_cfg if name == "trainer" else eval_cfg)
            c1 = time.process_time()
            if rep:  # round 0 is the warm-up
                samples[name].append(v)
                cpu[name].append(c1 - c0)
    med = {k: statistics.median(v) for k, v in samples.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    steps = epochs * -(-len(x) // batch_size)
    return TrainBench(
        model=model, data=data, batch_size=batch_size, epochs=epochs, steps_per_run=steps,
        repeats=repeats, threads=torch.get_num_threads(), hand_steps_per_s=med["hand"],
        trainer_steps_per_s=med["trainer"], trainer_eval_steps_per_s=med["trainer_eval"],
        ratio=med["hand"] / med["trainer"], ratio_eval=med["hand"] / med["trainer_eval"],
        ratio_cpu=cmed["trainer"] / cmed["hand"],
        ratio_cpu_eval=cmed["trainer_eval"] / cmed["hand"],
        samples={**samples, **{f"{k}_cpu_s": v for k, v in cpu.items()}},
        meta={"torch": torch.__version__, "python": platform.python_version(),
              "machine": platform.machine(), "processor": platform.processor(),
              "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})


def write_json(result: TrainBench, path: str | Path) -> None:
    write_atomic(path, json.dumps(asdict(result), indent=2) + "\n")
