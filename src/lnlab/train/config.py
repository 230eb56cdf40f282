"""The training configuration: one flat dataclass of JSON values.

Flat and JSON-only so that a run can be keyed by the hash of its config, stored next to its
results, and rebuilt exactly with ``TrainConfig.from_dict``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lnlab.errors import LnlabError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
DEVICES = ("cpu", "auto", "cuda")
PARAM_GROUPS = ("norm", "bias", "embedding", "readout", "weight")


@dataclass
class TrainConfig:
    """Everything that determines a training run (with the seed, the results on CPU)."""

    model: str = "mlp"
    norm: str | None = None            # overrides the norm named in the model spec
    data: str = "mnist1d"
    data_seed: int = 0                 # seed for synthetic data and random file splits
    noise: float = 0.0                 # share of training labels flipped to another class
    noise_seed: int | None = None      # None: use `seed`
    random_labels: bool = False        # redraw every training label
    optimizer: str = "adam"            # sgd | adam | adamw
    lr: float = 1e-3
    momentum: float = 0.9              # sgd only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    wd_exclude: list[str] = field(default_factory=list)  # groups (norm|bias|embedding|
    #                                    readout) or parameter-name globs kept free of decay
    schedule: str = "constant"         # constant | step | cosine (per step)
    warmup_epochs: float = 0.0         # linear warm-up, in epochs (fractions allowed)
    step_size: int = 30                # step schedule: epochs between decays
    gamma: float = 0.1                 # step schedule: decay factor
    epochs: int = 10
    batch_size: int = 100
    stop_at_train_acc: float | None = None  # stop once train accuracy (noisy labels) >= this
    clip_grad_norm: float | None = None
    seed: int = 0
    eval_every: int = 1                # epochs between evaluations (the last is always done)
    checkpoint_every: int = 10         # epochs between checkpoints (with a run dir); 0 = never
    device: str = "cpu"                # cpu | auto | cuda
    threads: int | None = 1            # torch CPU threads during the run. Results depend on
    #                                    it (a reduction split over n threads sums in another
    #                                    order), so it is part of the config and the run key;
    #                                    None leaves the process's setting alone

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(d["betas"])
        d["wd_exclude"] = list(d["wd_exclude"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise LnlabError(f"unknown training config field {unknown[0]!r}")
        cfg = cls(**d)
        cfg.betas = list(cfg.betas)
        cfg.wd_exclude = list(cfg.wd_exclude)
        return cfg

    def validate(self) -> TrainConfig:
        """Raise LnlabError on any out-of-range value; returns self for chaining."""
        def bad(msg: str) -> LnlabError:
            return LnlabError(f"bad training config: {msg}")

        if not isinstance(self.model, str) or not self.model.strip():
            raise bad("model must be a non-empty spec string")
        if not isinstance(self.data, str) or not self.data.strip():
            raise bad("data must be a non-empty spec string")
        if not isinstance(self.noise, (int, float)) or not (
                math.isfinite(self.noise) and 0 <= self.noise < 1):
            raise LnlabError(f"noise rate must be in [0, 1), got {self.noise}")
        if self.random_labels and self.noise:
            raise bad("use either noise or random_labels, not both")
        if self.optimizer not in OPTIMIZERS:
            raise bad(f"optimizer {self.optimizer!r} must be one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise bad(f"schedule {self.schedule!r} must be one of {', '.join(SCHEDULES)}")
        if self.device not in DEVICES:
            raise bad(f"device {self.device!r} must be one of {', '.join(DEVICES)}")
        for name in ("lr",):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise bad(f"{name} must be a positive number, got {v}")
        for name in ("momentum", "weight_decay", "warmup_epochs", "gamma"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise bad(f"{name} must be a non-negative number, got {v}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise bad(f"betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("epochs", "batch_size", "eval_every", "step_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(f"{name} must be a positive integer, got {v}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise bad(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.stop_at_train_acc is not None and not 0 < self.stop_at_train_acc <= 1:
            raise bad(f"stop_at_train_acc must be in (0, 1], got {self.stop_at_train_acc}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise bad(f"clip_grad_norm must be positive, got {self.clip_grad_norm}")
        if self.threads is not None and (not isinstance(self.threads, int) or isinstance(
                self.threads, bool) or self.threads < 1):
            raise bad(f"threads must be a positive integer or None, got {self.threads}")
        if not isinstance(self.wd_exclude, list) or not all(
                isinstance(s, str) and s for s in self.wd_exclude):
            raise bad("wd_exclude must be a list of group names or parameter-name globs")
        return self
