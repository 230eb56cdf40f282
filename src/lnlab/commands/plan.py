"""``lnlab plan``: what a sweep will ask of a cluster, before anything runs.

The numbers in the distributed-runs documentation come from here, not from hand counts:
run counts per experiment at a scale, the CPU/GPU request of each run (the experiment's
``resources``, as the backends get it), and the summed training epochs as a rough size of
the job.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lnlab.commands.options import json_flag
from lnlab.errors import LnlabError

__all__ = ["ExperimentPlan", "plan_sweeps", "register"]


@dataclass(frozen=True)
class ExperimentPlan:
    """One experiment's sweep at one scale, as a cluster sees it."""

    experiment: str
    scale: str
    seeds: int
    runs: int
    resources: dict[str, int] = field(default_factory=dict)  # "1 CPU" → number of runs
    cpu_slots: float = 0.0  # Σ CPUs requested over all runs
    gpu_slots: float = 0.0
    epochs: int = 0  # Σ train.epochs over all runs (0 for runs that do not train)


def _label(res: dict[str, float]) -> str:
    text = f"{res['cpus']:g} CPU"
    return text + (f" + {res['gpus']:g} GPU" if res.get("gpus") else "")


def plan_sweeps(scale: str = "full", *, names: list[str] | None = None,
                seeds: int | None = None, device: str = "cpu") -> list[ExperimentPlan]:
    """Expand each experiment's sweep (nothing runs) and count runs and requested resources.

    ``device`` is ``cpu`` or ``cuda`` (what ``--device`` resolves to on the cluster).
    """
    from lnlab.experiments import available, get_experiment
    from lnlab.runner.config import get_path, run_key

    if device not in ("cpu", "cuda"):
        raise LnlabError(f"plan: --device must be cpu or cuda (got {device!r})")
    out = []
    for name in names or available():
        exp = get_experiment(name)
        configs, seed_list = exp.configs(scale, seeds)
        configs = exp.with_device(configs, device)
        unique = {run_key(exp.name, c): c for c in configs}  # the driver runs duplicates once
        counts: Counter[str] = Counter()
        cpus = gpus = 0.0
        epochs = 0
        for cfg in unique.values():
            res = exp.resources(cfg).request()
            counts[_label(res)] += 1
            cpus += res["cpus"]
            gpus += res["gpus"]
            e = get_path(cfg, "train.epochs", 0)
            epochs += int(e) if isinstance(e, int) else 0
        out.append(ExperimentPlan(exp.name, scale, len(seed_list), len(unique), dict(counts),
                                  cpus, gpus, epochs))
    return out


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(
        scale: str = typer.Option("full", help="quick | full"),
        experiment: Annotated[list[str] | None, typer.Option(
            "--experiment", "-e", help="only these experiments (repeatable; default: all)")]
            = None,
        seeds: int = typer.Option(None, help="number of seeds (default: each experiment's)"),
        device: str = typer.Option("cpu", help="cpu | cuda: what the runs will ask for"),
        as_json: bool = json_flag("print JSON to stdout instead of a table"),
    ) -> None:
        """Count the runs and per-run resources of sweeps (nothing runs)."""
        plans = plan_sweeps(scale, names=experiment, seeds=seeds, device=device)
        if as_json:
            typer.echo(json.dumps([asdict(p) for p in plans], indent=2))
            return
        table = Table(title=f"sweeps at scale {scale!r} (--device {device})")
        for col in ("experiment", "seeds", "runs", "per run", "CPU·runs", "GPU·runs",
                    "epochs"):
            table.add_column(col, justify="left" if col in ("experiment", "per run")
                             else "right", no_wrap=True)
        for p in plans:
            per_run = ", ".join(f"{n}×({r})" if len(p.resources) > 1 else r
                                for r, n in p.resources.items())
            table.add_row(p.experiment, str(p.seeds), str(p.runs), per_run, f"{p.cpu_slots:g}",
                          f"{p.gpu_slots:g}", str(p.epochs))
        table.add_row("total", "", str(sum(p.runs for p in plans)), "",
                      f"{sum(p.cpu_slots for p in plans):g}",
                      f"{sum(p.gpu_slots for p in plans):g}",
                      str(sum(p.epochs for p in plans)), style="bold")
        Console(soft_wrap=True).print(table)
