"""Registered experiments and the one call that runs one into an output directory.

To add an experiment: write ``lnlab/experiments/<name>.py`` following the contract in
``lnlab.experiments.framework`` and add one line to ``EXPERIMENTS`` below. Registration is a
name → module-path table (imported lazily), so a broken or slow experiment module never slows
down or breaks the others, and worker processes import only what they run.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
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
from lnlab.experiments.replicate import REPLICATE_FIRST_SEED
from lnlab.runner.backends import Backend, make_backend, resolve_device
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
    """Versions that a result depends on, stored with every sweep and shown in the report.

    Each run also records the versions and CPU of the worker that computed it (see
    ``lnlab.runner.environment``); this is the driver's view, plus the plotting library.
    """
    import platform

    from lnlab.runner.environment import cpu_capability, versions

    return {**versions(extra=("matplotlib",)), "platform": platform.platform(terse=True),
            "cpu_capability": cpu_capability()}


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
    replicate: bool = False,
) -> SweepResult:
    """Expand the experiment's sweep and run it into ``out_dir`` (skipping finished runs).

    All input is checked (name, scale, seeds, options, configs) before the directory is
    touched, so bad input leaves nothing behind. ``storage`` holds the run directories
    (default ``out_dir``; a path all nodes share for a cluster backend). ``device`` (auto |
    cpu | cuda) is resolved against the backend; ``cpu`` keeps every run key unchanged.
    ``replicate`` runs the replication instead: the same sweep on the seeds
    ``REPLICATE_FIRST_SEED, …`` (disjoint from the primary ``0, 1, …``), stored as the
    experiment's replication sweep.
    """
    exp = get_experiment(name)
    first = REPLICATE_FIRST_SEED if replicate else 0
    configs, seed_list = exp.configs(scale, seeds, options, first_seed=first)
    if replicate and len(seed_list) > REPLICATE_FIRST_SEED:
        raise LnlabError(f"--replicate needs at most {REPLICATE_FIRST_SEED} seeds (the two "
                         f"seed sets would overlap)")
    own = isinstance(backend, str)
    if isinstance(backend, str):
        backend = make_backend(backend, workers=workers)
    try:
        configs = exp.with_device(configs, resolve_device(device, backend))
        return run_sweep(out_dir, exp.name, exp.module, configs, scale=scale, seeds=seed_list,
                         options=dict(options or {}), backend=backend,
                         versions=environment(), progress=progress,
                         claims=[c.to_dict() for c in exp.claims],
                         headline_metric=exp.headline_metric, storage=storage,
                         resources=exp.resources, replicate=replicate)
    finally:
        if own:
            backend.close()
