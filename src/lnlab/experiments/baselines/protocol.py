"""One baselines run: train one model with the MNIST-1D paper's recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["run"]


def run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train one model; "linear" is built here, every other spec by the trainer."""
    from lnlab.experiments.framework import train_output, train_run

    if config["train"]["model"] != "linear":
        return train_run(config, run_dir)
    import torch
    from torch import nn

    from lnlab.data import load_dataset
    from lnlab.train import TrainConfig, derive_seed, train

    cfg = TrainConfig.from_dict(config["train"])
    info = load_dataset(cfg.data, seed=cfg.data_seed).info
    n_in = 1
    for d in info.input_shape:
        n_in *= int(d)
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(cfg.seed, "logistic-init"))
        model = nn.Sequential(nn.Flatten(), nn.Linear(n_in, info.num_classes))
    return train_output(train(cfg, run_dir, model=model), run_dir)
