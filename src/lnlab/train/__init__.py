"""The training engine: config, loop, optimizers with parameter groups, checkpoints.

>>> from lnlab.train import TrainConfig, train
>>> cfg = TrainConfig(model="mlp", data="mnist1d", noise=0.1, epochs=20, seed=1)
>>> result = train(cfg, "runs/mlp-noise")   # resumes if runs/mlp-noise has a checkpoint
>>> result.status, result.summary["final_test_acc"], result.epochs[-1]["mem"]
"""

from lnlab.train.config import OPTIMIZERS, PARAM_GROUPS, SCHEDULES, TrainConfig
from lnlab.train.loop import (
    Evaluation,
    Hook,
    StepHook,
    TrainResult,
    TrainState,
    derive_seed,
    evaluate,
    make_labels,
    make_model,
    train,
)
from lnlab.train.optim import WeightNorms, build_optimizer, lr_factor, param_tags

__all__ = [
    "OPTIMIZERS",
    "PARAM_GROUPS",
    "SCHEDULES",
    "Evaluation",
    "Hook",
    "StepHook",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "WeightNorms",
    "build_optimizer",
    "derive_seed",
    "evaluate",
    "lr_factor",
    "make_labels",
    "make_model",
    "param_tags",
    "train",
]
