"""``lnlab run`` and ``lnlab reproduce``: run experiments' sweeps, then write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lnlab.errors import LnlabError
from lnlab.experiments import EXPERIMENTS

OUT = Path("results")


def _parse_options(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise LnlabError(f"bad --option {item!r}: expected NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def _summary_line(res) -> str:  # type: ignore[no-untyped-def]
    parts = [f"{n} {k}" for k in ("finished", "diverged", "failed")
             if (n := getattr(res, k))]
    if res.skipped:
        parts.append(f"{res.skipped} already done")
    return (f"{res.experiment}: {res.total} runs ({', '.join(parts) or 'nothing to do'}) "
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


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        experiment: str = typer.Argument(..., help=f"experiment: {', '.join(EXPERIMENTS)}"),
        scale: str = typer.Option("quick", help="quick (CPU minutes) | full (paper-sized)"),
        seeds: int = typer.Option(None, help="number of seeds (default: the experiment's)"),
        out: Annotated[Path, typer.Option(help="output directory (store + report)")] = OUT,
        workers: int = typer.Option(None, help="worker processes (default: CPU cores; "
                                    "1 = run in this process)"),
        option: Annotated[list[str] | None, typer.Option(
            "--option", "-o", help="experiment option NAME=VALUE (repeatable)")] = None,
        backend: str = typer.Option("local", help="where runs execute: local"),
        no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
    ) -> None:
        """Run one experiment's sweep (skipping finished runs), then write the report."""
        from lnlab.experiments import run_experiment

        console = Console(soft_wrap=True)
        opts = _parse_options(option)
        res = run_experiment(experiment, out, scale=scale, seeds=seeds, workers=workers,
                             options=opts, backend=backend, progress=not no_progress)
        _finish(console, out, [res])

    @app.command("reproduce")
    def reproduce_cmd(
        scale: str = typer.Option("quick", help="quick (CPU minutes) | full (paper-sized)"),
        out: Annotated[Path, typer.Option(help="output directory (store + report)")] = OUT,
        workers: int = typer.Option(None, help="worker processes (default: CPU cores)"),
        backend: str = typer.Option("local", help="where runs execute: local"),
        no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
    ) -> None:
        """Run every registered experiment at one scale, then write the report."""
        from lnlab.experiments import available, get_experiment, run_experiment
        from lnlab.runner import make_backend

        console = Console(soft_wrap=True)
        names = available()
        for name in names:  # all input checked before anything runs
            get_experiment(name).configs(scale)
        make_backend(backend, workers=workers).close()  # bad --backend/--workers: fail now
        results = [run_experiment(name, out, scale=scale, workers=workers, backend=backend,
                                  progress=not no_progress) for name in names]
        _finish(console, out, results)
