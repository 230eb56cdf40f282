"""``lnlab report DIR``: rebuild claims.json, report.md and report.html from the store."""

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
    ) -> None:
        """Write the claims table, results tables and figures of an output directory."""
        from lnlab.report import build_report

        paths = build_report(out)
        doc = json.loads(paths["claims.json"].read_text())
        console = Console(soft_wrap=True)
        console.print("claims: " + ", ".join(f"{n} {v}" for v, n in doc["verdicts"].items()))
        console.print("checks: " + ", ".join(f"{n} {v}"
                                             for v, n in doc.get("check_outcomes", {}).items()))
        for p in paths.values():
            console.print(f"wrote {p}")
