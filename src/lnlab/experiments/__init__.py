"""Registered experiments and the one call that runs one into an output directory.

To add an experiment: write ``lnlab/experiments/<name>.py`` following the contract in
``lnlab.experiments.framework`` and add one line to ``EXPERIMENTS`` below. Registration is a
name → module-path table (imported lazily), so a broken or slow experiment module never slows
down or breaks the others, and worker processes import only what they run.
"""

from __future__ import annotations

import contextlib
import importlib
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from types import MappingProxyType

from lnlab.errors import LnlabError
from lnlab.experiments.claims import (
    Check,
    CheckBound,
    Claim,
    ClaimResult,
    Effect,
    Equivalence,
    Measurement,
    NonInferiority,
    compare_verdicts,
    evaluate,
)
from lnlab.experiments.framework import (
    SCALES,
    Experiment,
    Results,
    Run,
    train_output,
    train_run,
)
from lnlab.runner.backends import Backend, make_backend, resolve_device, with_device
from lnlab.runner.driver import SweepResult, run_sweep

__all__ = [
    "EXPERIMENTS",
    "SCALES",
    "Check",
    "CheckBound",
    "Claim",
    "ClaimResult",
    "Effect",
    "Equivalence",
    "Experiment",
    "Measurement",
    "NonInferiority",
    "Results",
    "Run",
    "available",
    "compare_verdicts",
    "environment",
    "evaluate",
    "get_experiment",
    "run_experiment",
    "train_output",
    "train_run",
]

# name → module. Order = order in `lnlab reproduce` and in the report.
EXPERIMENTS: Mapping[str, str] = MappingProxyType({
    "baselines": "lnlab.experiments.baselines",
    "memorization": "lnlab.experiments.memorization",
    "ablation": "lnlab.experiments.ablation",
    "weight-decay": "lnlab.experiments.weight_decay",
    "capacity": "lnlab.experiments.capacity",
})


def available() -> list[str]:
    return list(EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    """The experiment registered under ``name``; unknown names list the valid ones."""
    if name not in EXPERIMENTS:
        raise LnlabError(f"unknown experiment {name!r}: available: {', '.join(EXPERIMENTS)}")
    exp = Experiment.from_module(importlib.import_module(EXPERIMENTS[name]))
    if exp.name != name:
        raise TypeError(f"{EXPERIMENTS[name]}.NAME is {exp.name!r}, registered as {name!r}")
    return exp


def environment() -> dict[str, str]:
    """Versions that a result depends on, stored with every sweep and shown in the report."""
    import lnlab

    out = {"lnlab": lnlab.__version__, "python": platform.python_version(),
           "platform": platform.platform(terse=True)}
    for dist in ("torch", "numpy", "mnist1d", "scikit-learn", "matplotlib"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def run_experiment(
    name: str,
    out_dir: str | Path,
    *,
    scale: str = "quick",
    seeds: int | None = None,
    workers: int | None = None,
    options: Mapping[str, str] | None = None,
    backend: Backend | str = "local",
    progress: bool = True,
    storage: str | Path | None = None,
    device: str = "cpu",
) -> SweepResult:
    """Expand the experiment's sweep and run it into ``out_dir`` (skipping finished runs).

    All input is checked (name, scale, seeds, options, configs) before the directory is
    touched, so bad input leaves nothing behind. ``storage`` holds the run directories
    (default ``out_dir``; a path all nodes share for a cluster backend). ``device`` (auto |
    cpu | cuda) is resolved against the backend; ``cpu`` keeps every run key unchanged.
    """
    exp = get_experiment(name)
    configs, seed_list = exp.configs(scale, seeds, options)
    own = isinstance(backend, str)
    if isinstance(backend, str):
        backend = make_backend(backend, workers=workers)
    try:
        configs = with_device(configs, resolve_device(device, backend))
        return run_sweep(out_dir, exp.name, exp.module, configs, scale=scale, seeds=seed_list,
                         options=dict(options or {}), backend=backend,
                         versions=environment(), progress=progress,
                         claims=[c.to_dict() for c in exp.claims],
                         headline_metric=exp.headline_metric, storage=storage)
    finally:
        if own:
            backend.close()
