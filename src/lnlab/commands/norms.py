"""``lnlab norms``: the table of norm variants and their options."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lnlab.commands.options import json_flag
from lnlab.norms import describe, kernel_status


def register(app: typer.Typer) -> None:
    @app.command("norms")
    def norms_cmd(
        as_json: bool = json_flag(),
    ) -> None:
        """List the norm variants, their formulas and spec options (``impl`` picks the code
        path: auto, the fused kernel, or plain autograd code)."""
        infos = describe()
        if as_json:
            rows = [
                {"name": i.name, "class": f"lnlab.{i.cls.__name__}", "formula": i.formula,
                 "source": i.source,
                 "options": {o.name: {"default": o.default, "help": o.help,
                                      "choices": list(o.choices) if o.choices else None}
                             for o in i.options}}
                for i in infos
            ]
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="lnlab norm zoo  (spec: name[:option=value,...])")
        table.add_column("name", style="bold")
        table.add_column("computes")
        table.add_column("options (default)", min_width=24)
        table.add_column("source", max_width=14)
        for i in infos:
            opts = ", ".join(
                f"{o.name}={o.default}" + (f" [{'|'.join(o.choices)}]" if o.choices else "")
                for o in i.options
            )
            table.add_row(i.name, i.formula, escape(opts) or "-", i.source)
        console = Console()
        console.print(table)
        st = kernel_status()
        console.print(
            f"fused CPU kernels: {'on' if st.available else 'off'} ({st.reason})",
            style="dim",
        )
