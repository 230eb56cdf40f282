"""The ``lnlab`` command line.

Each sub-command lives in ``lnlab.commands.<name>`` and registers itself with ``register(app)``;
this file only assembles them and turns user errors into a one-line message with exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from lnlab.errors import LnlabError

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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; bad input ends with one line on stderr and exit code 2."""
    try:
        app(args=argv, prog_name="lnlab", standalone_mode=False)
    except (LnlabError, ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"lnlab: error: {msg}", file=sys.stderr)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        print("lnlab: aborted", file=sys.stderr)
        return 130
    except Exception as e:
        # Usage errors from the CLI layer (typer vendors click) know how to show themselves.
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            return int(e.exit_code)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
