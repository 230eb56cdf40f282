"""``lnlab export DIR --to FORMAT DEST``: copy a results store's runs to another tool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

FORMAT_HELP = ("csv (runs.csv + metrics.csv) | parquet (same, needs pyarrow) | tensorboard "
               "(event files per run) | mlflow (an MLflow SQLite store)")


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        out: Annotated[Path, typer.Argument(help="output directory with results.sqlite")],
        to: Annotated[str, typer.Option("--to", help=FORMAT_HELP)],
        dest: Annotated[Path | None, typer.Option(
            "--dest", help="where to write (default: DIR/export-FORMAT)")] = None,
        experiment: str = typer.Option(None, "--experiment", "-e", help="only this experiment"),
        status: Annotated[list[str] | None, typer.Option(
            "--status", help="only these statuses (repeatable): pending running finished "
            "diverged failed")] = None,
    ) -> None:
        """Export runs, configs and per-epoch metrics for TensorBoard, MLflow, CSV or Parquet."""
        from lnlab.export import export_runs

        fmt = to.strip().lower()
        res = export_runs(out, dest or out / f"export-{fmt}", fmt, experiment=experiment,
                          status=tuple(status) if status else None)
        console = Console(soft_wrap=True)
        console.print(f"exported {res.runs} runs ({res.values} metric values) as {res.fmt} "
                      f"to {res.dest}")
        if fmt == "tensorboard":
            console.print(f"view: tensorboard --logdir {res.dest}")
        elif fmt == "mlflow":
            console.print(f"view: mlflow ui --backend-store-uri sqlite:///{res.paths[0]}")
