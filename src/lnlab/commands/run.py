"""``lnlab run`` and ``lnlab reproduce``: run experiments' sweeps, then write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from lnlab.commands.config_file import CONFIG_OPTION
from lnlab.commands.options import flag
from lnlab.errors import LnlabError
from lnlab.experiments import EXPERIMENTS

OUT = Path("results")
BACKEND_HELP = "where runs execute: local (processes here) | ray (a Ray instance or cluster)"
ADDRESS_HELP = ("--backend ray: the cluster to join (HOST:PORT or 'auto'); default: start a "
                "local Ray instance")
STORAGE_HELP = ("directory for the run directories (checkpoints); with a cluster, a path every "
                "node sees (default: --out)")
DEVICE_HELP = ("auto (CUDA if the backend has a GPU) | cpu | cuda; cpu keeps run keys "
               "unchanged, cuda runs are separate runs")
REPLICATE_HELP = ("also run the sweep on a second, disjoint seed set (seeds 1000, 1001, …) and "
                  "report each claim's verdict on both sets and whether they agree")
# A flag without a value (metavar "" keeps the help from showing one).
NO_PROGRESS: Any = typer.Option(False, "--no-progress", help="no progress bar", metavar="",
                                show_default=False)


def _parse_options(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise LnlabError(f"bad --option {item!r}: expected NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def _named_options(**named: str | None) -> dict[str, str]:
    """``--model/--data/--init`` are experiment options under their own flags; an experiment
    without such an option rejects them as it rejects an unknown ``-o``."""
    return {k: v for k, v in named.items() if v is not None}


def _summary_line(res) -> str:  # type: ignore[no-untyped-def]
    parts = [f"{n} {k}" for k in ("finished", "diverged", "failed")
             if (n := getattr(res, k))]
    if res.skipped:
        parts.append(f"{res.skipped} already done")
    name = f"{res.experiment} (replication)" if res.replicate else res.experiment
    return (f"{name}: {res.total} runs ({', '.join(parts) or 'nothing to do'}) "
            f"in {res.wall_time:.1f} s")


def _finish(console: Console, out: Path, results: list) -> None:  # type: ignore[type-arg]
    from lnlab.report import build_report

    for res in results:
        console.print(_summary_line(res))
        for key, err in list(res.errors.items())[:5]:
            console.print(f"  [red]failed[/] {key}: {err}", highlight=False)
    paths = build_report(out)
    console.print(f"report: {paths['report.html']}  ({paths['report.md'].name}, "
                  f"{paths['claims.json'].name})")


def _check_device(device: str) -> None:
    from lnlab.runner.backends import DEVICES

    if device not in DEVICES:
        raise LnlabError(f"unknown --device {device!r}: use {', '.join(DEVICES)}")


def _check_dirs(out: Path, storage: Path | None) -> None:
    """--out and --storage must be directories (or not exist yet), checked before any run."""
    for opt, d in (("--out", out), ("--storage", storage)):
        if d is not None and d.exists() and not d.is_dir():
            raise LnlabError(f"{opt} {d} exists and is not a directory")


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        experiment: str = typer.Argument(..., help=f"experiment: {', '.join(EXPERIMENTS)}"),
        config: Path | None = CONFIG_OPTION,
        scale: str = typer.Option("quick", help="quick (CPU minutes) | full (paper-sized) | "
                                  "tiny (seconds: a smoke run) | paper (memorization only: "
                                  "the pretrained regimes)"),
        seeds: int = typer.Option(None, help="number of seeds (default: the experiment's)"),
        out: Annotated[Path, typer.Option(help="output directory (store + report)")] = OUT,
        workers: int = typer.Option(None, help="worker processes (default: CPU cores; "
                                    "1 = run in this process)"),
        option: Annotated[list[str] | None, typer.Option(
            "--option", "-o", help="experiment option NAME=VALUE (repeatable)")] = None,
        backend: str = typer.Option("local", help=BACKEND_HELP),
        address: str = typer.Option(None, help=ADDRESS_HELP),
        storage: Annotated[Path | None, typer.Option(help=STORAGE_HELP)] = None,
        device: str = typer.Option("cpu", help=DEVICE_HELP),
        no_progress: bool = NO_PROGRESS,
        model: str = typer.Option(None, help="your model(s), for experiments that take one "
                                  "(same as -o model=...)"),
        data: str = typer.Option(None, help="your dataset spec or path (same as -o data=...)"),
        init: str = typer.Option(None, help="a local checkpoint to start from "
                                 "(same as -o init=...)"),
        replicate: bool = flag("--replicate", help=REPLICATE_HELP),
    ) -> None:
        """Run one experiment's sweep (skipping finished runs), then write the report."""
        from lnlab.experiments import get_experiment, run_experiment
        from lnlab.runner import make_backend

        console = Console(soft_wrap=True)
        opts = _parse_options(option)
        opts.update(_named_options(model=model, data=data, init=init))
        _check_device(device)
        _check_dirs(out, storage)
        get_experiment(experiment).configs(scale, seeds, opts)  # bad input: fail before Ray
        with make_backend(backend, workers=workers, address=address) as be:
            results = [run_experiment(experiment, out, scale=scale, seeds=seeds, options=opts,
                                      backend=be, progress=not no_progress, storage=storage,
                                      device=device, replicate=second)
                       for second in ((False, True) if replicate else (False,))]
        _finish(console, out, results)

    @app.command("reproduce")
    def reproduce_cmd(
        scale: str = typer.Option("quick", help="quick (CPU minutes) | full (paper-sized) | "
                                  "tiny (seconds: a smoke run)"),
        out: Annotated[Path, typer.Option(help="output directory (store + report)")] = OUT,
        workers: int = typer.Option(None, help="worker processes (default: CPU cores)"),
        backend: str = typer.Option("local", help=BACKEND_HELP),
        address: str = typer.Option(None, help=ADDRESS_HELP),
        storage: Annotated[Path | None, typer.Option(help=STORAGE_HELP)] = None,
        device: str = typer.Option("cpu", help=DEVICE_HELP),
        no_progress: bool = NO_PROGRESS,
        replicate: bool = flag("--replicate", help=REPLICATE_HELP),
    ) -> None:
        """Run every registered experiment at one scale, then write the report."""
        from lnlab.experiments import available, get_experiment, run_experiment
        from lnlab.runner import make_backend

        console = Console(soft_wrap=True)
        names = available()
        _check_device(device)
        _check_dirs(out, storage)
        for name in names:  # all input checked before anything runs
            get_experiment(name).configs(scale)
        # one backend for every experiment: a Ray instance starts (or joins) once
        with make_backend(backend, workers=workers, address=address) as be:
            # every primary sweep first: an interrupted replication leaves a full report
            results = [run_experiment(name, out, scale=scale, backend=be, storage=storage,
                                      device=device, progress=not no_progress,
                                      replicate=second)
                       for second in ((False, True) if replicate else (False,))
                       for name in names]
        _finish(console, out, results)
