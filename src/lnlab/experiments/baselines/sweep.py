"""The baselines settings: three arms × two datasets, one row of epochs per scale."""

from __future__ import annotations

from typing import Any

from lnlab.runner.config import expand_grid

__all__ = ["ARMS", "DATASETS", "EXTRA_SCALES", "RECIPE", "SETTINGS", "sweep"]

ARMS = {  # name → model spec ("linear" = logistic regression, built in `run`)
    "logistic": "linear",
    "mlp": "mlp:depth=2,width=100,norm=none",
    "mlp+ln": "mlp:depth=2,width=100,norm=layernorm",
}
DATASETS = ("mnist1d", "digits")
RECIPE: dict[str, Any] = {"optimizer": "adam", "lr": 1e-2, "batch_size": 100,
                          "weight_decay": 0.0, "schedule": "constant", "checkpoint_every": 25}
EXTRA_SCALES = ("tiny",)

# scale → dataset → epochs. MNIST-1D: the paper's 6000 steps (150 epochs of 40 batches).
# Every claim reads MNIST-1D, so "quick" runs only it (digits is a second look, in "full").
# "tiny" is a seconds-long smoke run.
SETTINGS: dict[str, dict[str, int]] = {
    "tiny": {"mnist1d": 1},
    "quick": {"mnist1d": 150},
    "full": {"mnist1d": 150, "digits": 150},
}


def sweep(scale: str, seeds: list[int]) -> list[dict[str, Any]]:
    """Arms × the scale's datasets × seeds, with the paper's recipe."""
    configs = []
    for dataset, epochs in SETTINGS[scale].items():
        base = {"dataset": dataset, "train": {**RECIPE, "data": dataset, "epochs": epochs}}
        arms = [{"arm": arm, "train.model": spec} for arm, spec in ARMS.items()]
        configs += expand_grid(base, {"arm": arms}, seeds=seeds, seed_path="train.seed")
    return configs
