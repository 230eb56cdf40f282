"""Options that several commands share, declared once so that one concept has one name.

The conventions every command follows (``tests/test_cli_consistency.py`` walks the commands
and checks them):

- a boolean option is a real flag, ``--NAME/--no-NAME``: it never takes a value;
- ``--json`` always prints machine-readable JSON to stdout; a file a command writes is named
  ``--FORMAT-out FILE`` (``--json-out``, ``--csv-out``), a directory ``--out DIR``;
- a count of classes is ``--num-classes``, an example batch ``--batch-size``, the block count
  of an ``hf:ARCH`` tiny config ``--layers`` (default: :data:`lnlab.models.HF_DEFAULTS`).

An old spelling stays accepted as a hidden, deprecated alias (:func:`deprecated_alias`).
"""

from __future__ import annotations

from typing import Any

import typer

from lnlab.errors import LnlabError
from lnlab.models import HF_DEFAULTS

__all__ = ["HF_LAYERS_HELP", "deprecated_alias", "flag", "json_flag", "with_label"]

HF_LAYERS_HELP = (f"blocks of an hf:ARCH tiny config (default {HF_DEFAULTS['layers']}, same "
                  f"as hf:ARCH:layers=N)")


def flag(name: str, help: str, default: bool = False) -> Any:
    """A boolean flag ``--NAME/--no-NAME``.

    ``metavar=""`` keeps the help from showing a ``<bool>`` value that the flag does not take.
    """
    if not name.startswith("--"):
        raise ValueError(f"flag name must start with '--', got {name!r}")
    return typer.Option(default, f"{name}/--no-{name[2:]}", help=help, metavar="",
                        show_default=False)


def json_flag(help: str = "print machine-readable JSON to stdout") -> Any:
    """``--json/--no-json``: the same meaning in every command."""
    return flag("--json", help)


def deprecated_alias(old: str, new: str, dest: str) -> Any:
    """A hidden option ``old`` that sets the parameter ``dest`` (the option ``new``).

    The value goes through ``new``'s own conversion and checks (it becomes that option's
    default for this invocation), so the command body only ever sees ``dest``; ``new`` given
    as well wins. Declare it as a parameter the body ignores, e.g.
    ``_classes: int | None = deprecated_alias("--classes", "--num-classes", "num_classes")``.
    """
    def _forward(ctx: typer.Context, param: Any, value: Any) -> Any:
        if value is not None and value != ():
            typer.echo(f"lnlab: warning: {old} is deprecated; use {new}", err=True)
            ctx.default_map = {**(ctx.default_map or {}), dest: value}
        return value

    return typer.Option(None, old, hidden=True, is_eager=True, expose_value=False,
                        callback=_forward, help=f"deprecated spelling of {new}")


def with_label(data: str, label: str | None) -> str:
    """``--data FILE --label COLUMN`` as the one spec string ``FILE:label=COLUMN``.

    The run records a single dataset spec, so the flag is folded into it; a spec that names
    its label column itself as well is an error rather than a silent choice.
    """
    if label is None:
        return data
    from lnlab.data import available
    from lnlab.data.base import split_spec

    if not label or label != label.strip() or any(c in label for c in ",:[]"):
        raise LnlabError(f"--label {label!r}: give a column name without surrounding spaces "
                         f"or any of , : [ ]")
    name, items = split_spec(data, available())
    if "label" in items:
        raise LnlabError(f"--label {label!r} and label={items['label']} in --data {data!r} "
                         f"both name the label column; give one")
    return f"{name}:" + ",".join([*(f"{k}={v}" for k, v in items.items()), f"label={label}"])
