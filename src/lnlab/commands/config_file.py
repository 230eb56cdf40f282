"""``--config FILE.yaml``: option values from a file, for commands with many options.

Researchers keep run settings in YAML next to their code. The file holds the same fields as
the command line — each key is an option's name (``batch-size``, ``batch_size`` or the flag's
own spelling such as ``json``) — and becomes that command's defaults, so a flag given on the
command line still wins. A key that is no option of the command is an error naming the key
and the file, so a typo never silently falls back to a default.

The mechanism is the command line's ``default_map`` (typer's click): the eager ``--config``
callback fills it before any other option is read, and every value goes through the option's
own type conversion.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from lnlab.errors import LnlabError

__all__ = ["CONFIG_OPTION", "read_config"]

HELP = ("YAML file of option values (keys = option names, e.g. 'batch-size: 50'); options "
        "given on the command line override it")


def _names(param: Any) -> list[str]:
    """Every spelling a file may use for ``param``: its name and its flags without dashes.

    A flag's negative form (``--no-json``) is left out: ``no-json: true`` would read as
    ``json: true``; the file writes ``json: false``.
    """
    names = {param.name or ""}
    for opt in param.opts:
        if opt.startswith("--"):
            names.add(opt[2:])
    return sorted(n for n in names if n)


def _value(param: Any, value: Any) -> Any:
    """A repeatable option takes a list (a single value is a list of one; a mapping such as
    ``option: {lr: 0.1}`` becomes ``NAME=VALUE`` items)."""
    if not param.multiple:
        return value
    if isinstance(value, Mapping):
        return [f"{k}={v}" for k, v in value.items()]
    return list(value) if isinstance(value, list | tuple) else [value]


def read_config(path: str | Path, command: Any,
                ctx: typer.Context | None = None) -> dict[str, Any]:
    """The file's values keyed by the parameter names of ``command`` (a typer/click command);
    with ``ctx``, each value is also converted and checked by its option's own type."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LnlabError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:  # one line: the problem and where it is
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise LnlabError(f"cannot read config file {path}: "
                         f"{getattr(e, 'problem', None) or 'not YAML'}{where}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LnlabError(f"cannot read config file {path}: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise LnlabError(f"config file {path} must be a mapping of option names to values, "
                         f"not a {type(doc).__name__}")
    params = {}
    for p in command.params:
        if p.name == "config" or p.name is None:
            continue
        for n in _names(p):
            params[n] = params[n.replace("-", "_")] = p
    out: dict[str, Any] = {}
    for key, value in doc.items():
        p = params.get(str(key)) or params.get(str(key).replace("-", "_"))
        if p is None:
            known = sorted({(q.opts[0].lstrip("-") if q.opts else q.name) or ""
                            for q in params.values()})
            raise LnlabError(f"unknown key {key!r} in config file {path}: "
                             f"`lnlab {command.name}` takes {', '.join(known)}")
        assert p.name is not None
        if p.name in out:
            raise LnlabError(f"config file {path} sets {p.name!r} twice (as {key!r})")
        if value is None:
            continue  # "key: null" = the option's own default
        out[p.name] = _value(p, value)
        if ctx is not None:
            try:
                p.process_value(ctx, out[p.name])
            except typer.BadParameter as e:
                raise LnlabError(f"bad value for {key!r} in config file {path}: "
                                 f"{e.message}") from None
    return out


def _load(ctx: typer.Context, value: Path | None) -> Path | None:
    if value is not None:
        assert ctx.command is not None
        ctx.default_map = {**(ctx.default_map or {}), **read_config(value, ctx.command, ctx)}
    return value


# ``config: Path | None = CONFIG_OPTION`` in a command's parameters adds ``--config FILE``.
CONFIG_OPTION: Any = typer.Option(None, "--config", help=HELP, is_eager=True, callback=_load,
                                  dir_okay=False, show_default=False)
