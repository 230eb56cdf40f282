"""``lnlab runs DIR``: list the runs in a results store, or export them as CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lnlab.commands.options import deprecated_alias

STATUS_STYLE = {"finished": "green", "diverged": "yellow", "failed": "red",
                "running": "cyan", "pending": "dim"}


def runs_csv(rows: list, epochs: dict | None = None) -> str:  # type: ignore[type-arg]
    """One row per run: key, experiment, status, timings, ``config.*`` and ``summary.*``."""
    from lnlab.runner.config import flatten

    flat = []
    for r in rows:
        d = {"key": r.key, "experiment": r.experiment, "status": r.status,
             "error": r.error or "", "wall_time": r.wall_time, "host": r.host,
             "started": r.started, "finished": r.finished, "attempts": r.attempts}
        d.update({f"config.{k}": json.dumps(v) if isinstance(v, list) else v
                  for k, v in flatten(r.config).items()})
        d.update({f"summary.{k}": json.dumps(v) if isinstance(v, list) else v
                  for k, v in flatten(r.summary).items()})
        flat.append(d)
    cols: dict[str, None] = {}
    for d in flat:
        cols.update(dict.fromkeys(d))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(cols), lineterminator="\n")
    w.writeheader()
    w.writerows(flat)
    return buf.getvalue()


def epochs_csv(store, rows: list) -> str:  # type: ignore[no-untyped-def, type-arg]
    """Long format: key, experiment, epoch, metric, value."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "experiment", "epoch", "metric", "value"])
    for r in rows:
        for e in store.epochs(r.key):
            for name, v in e.items():
                if name != "epoch":
                    w.writerow([r.key, r.experiment, e["epoch"], name, v])
    return buf.getvalue()


def setting_columns(flats: list[dict], limit: int = 5) -> list[str]:  # type: ignore[type-arg]
    """Config fields that vary between runs, minus those an earlier column already fixes
    (``train.model`` when ``arm`` is shown): the columns that tell runs apart."""
    def val(f: dict, k: str) -> str:  # type: ignore[type-arg]
        return json.dumps(f.get(k), sort_keys=True)

    kept: list[str] = []
    for k in dict.fromkeys(k for f in flats for k in f):
        if len({val(f, k) for f in flats}) < 2:
            continue
        before = {tuple(val(f, c) for c in kept) for f in flats}
        after = {(*(val(f, c) for c in kept), val(f, k)) for f in flats}
        if len(after) > len(before):
            kept.append(k)
    return kept[:limit]


def headline(summary: dict) -> str:  # type: ignore[type-arg]
    from lnlab.runner.driver import HEADLINE_METRICS

    for k in HEADLINE_METRICS:
        v = summary.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return f"{k}={v:.4g}"
    return ""


def register(app: typer.Typer) -> None:
    @app.command("runs")
    def runs_cmd(
        out: Annotated[Path, typer.Argument(help="output directory with results.sqlite")],
        experiment: str = typer.Option(None, "--experiment", "-e", help="only this experiment"),
        status: Annotated[list[str] | None, typer.Option(
            "--status", help="only these statuses (repeatable): pending running finished "
            "diverged failed")] = None,
        csv_path: Annotated[Path | None, typer.Option(
            "--csv-out", help="write one row per run to this CSV file")] = None,
        _csv: str | None = deprecated_alias("--csv", "--csv-out", "csv_path"),
        epochs_path: Annotated[Path | None, typer.Option(
            "--epochs-csv-out", help="write per-epoch metrics (long format) to this CSV "
            "file")] = None,
        _epochs_csv: str | None = deprecated_alias("--epochs-csv", "--epochs-csv-out",
                                                    "epochs_path"),
    ) -> None:
        """List runs (status, setting, headline metric), or export them as CSV."""
        from lnlab.report.files import write_atomic
        from lnlab.runner.config import flatten
        from lnlab.runner.store import Store

        console = Console()
        with Store.open(out) as store:
            rows = store.runs(experiment=experiment, status=status or None)
            if csv_path:
                write_atomic(csv_path, runs_csv(rows))
                console.print(f"wrote {len(rows)} runs to {csv_path}", soft_wrap=True)
            if epochs_path:
                write_atomic(epochs_path, epochs_csv(store, rows))
                console.print(f"wrote per-epoch metrics of {len(rows)} runs to {epochs_path}",
                              soft_wrap=True)
            if csv_path or epochs_path:
                return
        flats = [flatten(r.config) for r in rows]
        varying = setting_columns(flats)
        table = Table(title=f"{len(rows)} runs in {out}")
        for col in ("key", "experiment", "status", *varying, "result", "time"):
            table.add_column(col, no_wrap=col in ("key", "status"), overflow="fold")
        for r, f in zip(rows, flats, strict=True):
            st = STATUS_STYLE.get(r.status, "")
            result = r.error or headline(r.summary)
            table.add_row(r.key, r.experiment, f"[{st}]{r.status}[/]",
                          *(escape(str(f.get(k, ""))) for k in varying), escape(result),
                          f"{r.wall_time:.1f}s" if r.wall_time else "")
        console.print(table)
        counts = {s: sum(r.status == s for r in rows) for s in STATUS_STYLE}
        console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no runs")
