"""``lnlab report DIR``: rebuild claims.json, report.md and report.html from the store;
``--docs DOCS`` also writes the results pages for ``docs/`` from the same analysis, and
``--with DIR2`` combines another output directory into the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        out: Annotated[Path, typer.Argument(help="output directory of `lnlab run`")],
        docs: Annotated[Path | None, typer.Option(
            "--docs", help="also write the results pages (README.md and one page per "
                           "experiment, with commit, date and versions) into this folder, "
                           "e.g. docs/results")] = None,
        also: Annotated[list[Path] | None, typer.Option(
            "--with", help="another output directory to combine into this report (read "
                           "only; repeatable), e.g. a `--scale paper` run beside a quick "
                           "reproduction")] = None,
    ) -> None:
        """Write the claims table, results tables and figures of an output directory."""
        from lnlab.report import build_report

        paths = build_report(out, docs_dir=docs, others=also or ())
        doc = json.loads(paths["claims.json"].read_text())
        console = Console(soft_wrap=True)
        console.print("claims: " + ", ".join(f"{n} {v}" for v, n in doc["verdicts"].items()))
        console.print("checks: " + ", ".join(f"{n} {v}"
                                             for v, n in doc.get("check_outcomes", {}).items()))
        for p in paths.values():
            console.print(f"wrote {p}")
