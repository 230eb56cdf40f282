"""The ``lnlab`` command line.

Each sub-command lives in ``lnlab.commands.<name>`` and registers itself with ``register(app)``;
this file only assembles them and turns errors into exit codes by kind (see :func:`main`).
"""

from __future__ import annotations

import importlib
import sys
import traceback

import typer

from lnlab.errors import LnlabError, one_line

app = typer.Typer(
    name="lnlab",
    help="A toolkit for studying and using Layer Normalization.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def version() -> str:
    """The installed distribution's version (``lnlab.__version__`` when run from a checkout
    that is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("lnlab")
    except PackageNotFoundError:
        from lnlab import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"lnlab {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", help="print lnlab's version and exit",
                                      is_eager=True, callback=_print_version, metavar="",
                                      show_default=False),
) -> None:
    """A toolkit for studying and using Layer Normalization."""


# Sub-command modules, in the order they appear in --help.
COMMAND_MODULES = [
    "norms",
    "bench",
    "train",
    "inspect",
    "run",
    "plan",
    "report",
    "runs",
    "audit",
    "lnnet",
    "export",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"lnlab.commands.{_name}").register(app)


BUG_LINE = ("lnlab: internal error: this is a bug in lnlab, not in your input; please report "
            "it with the command you ran and the traceback above")


def _usage_error(e: Exception) -> int | None:
    """Show a command-line usage error (typer's vendored click raises them) in one line;
    None if ``e`` is not one."""
    if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
        return None
    if type(e).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
        e.show()  # type: ignore[attr-defined]
        return int(e.exit_code)
    ctx = getattr(e, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    print(f"lnlab: error: {one_line(e.format_message())}{hint}", file=sys.stderr)
    return int(e.exit_code)


def main(argv: list[str] | None = None) -> int:
    """Entry point. Errors by kind: bad input (:class:`LnlabError`) is one line on stderr and
    exit code 2; anything else is a bug, shown with its traceback and exit code 1."""
    try:
        app(args=argv, prog_name="lnlab", standalone_mode=False)
    except LnlabError as e:
        print(f"lnlab: error: {one_line(e)}", file=sys.stderr)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("lnlab: aborted", file=sys.stderr)
        return 130
    except Exception as e:
        code = _usage_error(e)
        if code is not None:
            return code
        traceback.print_exc()
        print(BUG_LINE, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
