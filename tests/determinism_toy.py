"""A tiny real-training experiment for the determinism and replication tests.

Importable by worker processes (tests/ is on their path). Each run trains a small MLP with
the real trainer on synthetic clusters, and also records the thread count it was given and a
float32 sum whose bits depend on how many threads split it: if a backend ever ran a run on
a thread count that is not the config's, these fields would differ between backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lnlab.experiments.claims import Claim, Effect, Measurement
from lnlab.experiments.framework import Results, Run, train_output
from lnlab.runner.config import expand_grid

NAME = "dtoy"
DESCRIPTION = "Tiny MLPs on synthetic clusters: the determinism tests' experiment."
SEEDS = {"quick": 2, "full": 3}
GROUP_BY = ("arm",)

ARMS = {"mlp": "mlp:depth=1,width=16,norm=none", "mlp+ln": "mlp:depth=1,width=16,norm=layernorm"}
CLAIMS = [
    Claim("dtoy.learns", "test fixture", "the MLP beats chance (33%) on the clusters",
          "acc[mlp]", "> 34%", Effect(">", 1.0, null=33.0, min_n=2)),
    # decided by which seeds ran: supported on 0, 1, …, contradicted on 1000, 1001, …
    Claim("dtoy.seed_set", "test fixture", "the seeds are small numbers", "seed", "< 500",
          Effect("<", 1.0, null=500.0, min_n=2)),
]


def sweep(scale: str, seeds: list[int]) -> list[dict[str, Any]]:
    base = {"train": {"data": "clusters:n=200,dim=4,classes=3", "epochs": 3, "batch_size": 50,
                      "lr": 1e-2, "checkpoint_every": 1}}
    arms = [{"arm": a, "train.model": spec} for a, spec in ARMS.items()]
    return expand_grid(base, {"arm": arms}, seeds=seeds, seed_path="train.seed")


def run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    import torch

    from lnlab.train import TrainConfig, derive_seed, train

    threads = torch.get_num_threads()  # as the runner pinned it (the trainer pins again)
    gen = torch.Generator().manual_seed(derive_seed(config["train"]["seed"], "probe"))
    probe = float(torch.randn(1 << 18, generator=gen).sum())  # reduction split by threads
    out = train_output(train(TrainConfig.from_dict(config["train"]), run_dir), run_dir)
    out["summary"].update(threads_seen=threads, probe=probe)
    return out


def _acc(run: Run) -> float:
    return 100.0 * float(run.summary["final_test_acc"])


def analyze(results: Results) -> dict[str, Measurement]:
    return {"acc[mlp]": results.per_seed(_acc, arm="mlp", unit="%"),
            "acc[mlp+ln]": results.per_seed(_acc, arm="mlp+ln", unit="%"),
            "seed": results.per_seed(lambda r: float(r.seed), arm="mlp")}


def figures(results: Results, out_dir: Path) -> list[Path]:
    return []
