"""One grammar for every ``name[:option=value,...]`` string lnlab reads.

Norm specs (``groupln:groups=4``), model specs (``mlp:depth=4,norm=rmsnorm``), dataset specs
(``clusters:n=500`` or ``data.csv:label=y``) and Hugging Face specs (``hf:bert:layers=2``) are
all split by :func:`split_spec` and typed by :class:`Option` here, so they accept the same
spellings and fail with the same error, :class:`SpecError` (a user error: one line, exit 2).

Grammar: a name, optionally ``:`` and comma-separated ``key=value`` items. Commas inside
``[...]`` belong to the value (a nested spec). Values are ASCII: full-width digits such as
``groups=１`` (which Python's ``int`` would read as 1) are refused, as are NaN and, unless an
option allows it, infinity. Integers are bounded (:data:`MAX_INT` unless an option says less) so
an absurd size fails here with a message instead of later in an allocator; numbers must be
finite.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lnlab.errors import LnlabError

__all__ = [
    "MAX_INT",
    "Option",
    "SpecError",
    "format_value",
    "parse_bool",
    "parse_float",
    "parse_int",
    "parse_options",
    "split_items",
    "split_spec",
]

MAX_INT = 2**31 - 1
"""Largest integer any spec option accepts (sizes beyond it cannot be allocated anyway)."""

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?inf(?:inity)?",
                    re.IGNORECASE)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SpecError(LnlabError):
    """A spec string that does not parse or names an unknown thing or an out-of-range value."""


def _ascii(text: str) -> str:
    s = text.strip()
    if not s.isascii():
        bad = next(ch for ch in s if not ch.isascii())
        raise SpecError(f"{text!r} contains the non-ASCII character {bad!r} "
                        f"(U+{ord(bad):04X}); write values in plain ASCII")
    return s


def parse_int(text: str) -> int:
    """A plain ASCII decimal integer (no ``_``, no full-width digits, no ``1e3``)."""
    s = _ascii(text)
    if not _INT.fullmatch(s):
        raise SpecError(f"expected an integer, got {text!r}")
    if len(s.lstrip("+-")) > 30:
        raise SpecError(f"{s[:20]}... is far too large")
    return int(s)


def parse_float(text: str) -> float:
    """A plain ASCII decimal number (``0.1``, ``1e-5``; ``inf`` parses, options refuse it)."""
    s = _ascii(text)
    if not _FLOAT.fullmatch(s):
        raise SpecError(f"expected a number, got {text!r}")
    return float(s)


def parse_bool(text: str) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case)."""
    s = _ascii(text).lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise SpecError(f"expected a boolean (true/false), got {text!r}")


def format_value(v: Any) -> str:
    """How a typed value is written back into a canonical spec string."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) < 1e15 else repr(v)
    return str(v)


@dataclass(frozen=True)
class Option:
    """One typed option of a spec, with its default and its allowed values.

    ``kind`` is ``int``, ``float``, ``bool``, ``choice`` (one of ``choices``, any case) or
    ``str``; ``convert`` replaces the parser for values with their own grammar (a nested norm
    spec). ``lo``/``hi`` bound numbers (``lo_open``/``hi_open`` make a bound exclusive);
    ``check`` is an extra predicate whose failure prints ``check_msg``.
    """

    name: str
    kind: str
    default: Any
    help: str = ""
    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    convert: Callable[[str], Any] | None = None
    check: Callable[[Any], bool] | None = None
    check_msg: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("int", "float", "bool", "choice", "str"):
            raise TypeError(f"option kind {self.kind!r}")

    def _range(self) -> str:
        hi = self.hi
        if self.lo is None and hi is None:
            return "finite"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {format_value(hi)}"
        if hi is None:
            return f"{'>' if self.lo_open else '>='} {format_value(self.lo)}"
        lb = "(" if self.lo_open else "["
        rb = ")" if self.hi_open else "]"
        return f"in {lb}{format_value(self.lo)}, {format_value(hi)}{rb}"

    def parse(self, raw: str, owner: str = "") -> Any:
        """The typed value of ``raw``, or :class:`SpecError` naming ``owner`` and the option."""
        where = f"{owner} option" if owner else "option"
        try:
            if self.convert is not None:
                _ascii(raw)
                val: Any = self.convert(raw.strip())
            elif self.kind == "int":
                val = parse_int(raw)
            elif self.kind == "float":
                val = parse_float(raw)
            elif self.kind == "bool":
                val = parse_bool(raw)
            elif self.kind == "choice":
                val = _ascii(raw).lower()
            else:
                val = _ascii(raw)
        except ValueError as e:  # SpecError, or a converter's ValueError
            raise SpecError(f"bad value for {where} {self.name!r}: {e}") from None
        if self.choices and val not in self.choices:
            raise SpecError(f"{where} {self.name} must be one of "
                            f"{', '.join(self.choices)}, got {raw!r}")
        if self.kind in ("int", "float") and self.convert is None:
            lo_bad = self.lo is not None and (val <= self.lo if self.lo_open else val < self.lo)
            hi_bad = self.hi is not None and (val >= self.hi if self.hi_open else val > self.hi)
            if isinstance(val, float) and not math.isfinite(val):
                raise SpecError(f"{where} {self.name} must be a finite number, "
                                f"got {raw.strip()!r}")
            if lo_bad or hi_bad:
                shown = raw.strip() if len(raw.strip()) <= 24 else raw.strip()[:21] + "..."
                raise SpecError(f"{where} {self.name}={shown} is out of range; it must be "
                                f"{self._range()}")
            if self.kind == "int" and abs(val) > MAX_INT:
                raise SpecError(f"{where} {self.name}={raw.strip()[:24]} is far too large "
                                f"(no option takes more than {MAX_INT} in size)")
        if self.check is not None and not self.check(val):
            raise SpecError(f"bad value for {where} {self.name}={raw.strip()}: {self.check_msg}")
        return val


def split_items(rest: str, *, spec: str = "", what: str = "") -> list[tuple[str, str]]:
    """``"a=1,b=[x:y=2,z=3]"`` -> ``[("a", "1"), ("b", "[x:y=2,z=3]")]``.

    Commas inside square brackets do not split; an item without ``=`` or a key given twice
    is an error.
    """
    parts, depth, cur = [], 0, []
    for ch in rest:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced ']' in {spec or rest!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SpecError(f"unbalanced '[' in {spec or rest!r}")
    parts.append("".join(cur))
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    label = f"{what} option" if what else "option"
    for item in (p.strip() for p in parts):
        if not item:
            continue
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise SpecError(f"{label} {item!r} in {spec or rest!r} must look like name=value")
        if key in seen:
            raise SpecError(f"{label} {key!r} given twice in {spec or rest!r}")
        seen.add(key)
        out.append((key, raw.strip()))
    return out


def split_spec(spec: Any, *, what: str, known: Collection[str] = (),
               path_like: bool = False) -> tuple[str, list[tuple[str, str]]]:
    """Split a spec into its name and its ``(key, raw value)`` items.

    With ``path_like`` the name may be a file path that itself contains ``:`` (``C:\\d.csv``):
    unless the name before the first ``:`` is in ``known``, the options are what follows the
    *last* ``:``, and only when that looks like ``key=value`` items.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"a {what} spec must be a non-empty string, got {spec!r}")
    text = spec.strip()
    first, sep0, after = text.partition(":")
    name, rest = first, after
    if path_like and not (sep0 and first.strip().lower() in known):
        head, sep, tail = text.rpartition(":")
        if sep and (tail == "" or "=" in tail.split(",")[0]):
            name, rest = head, tail
        else:
            name, rest = text, ""
    name = name.strip()
    if not name:
        raise SpecError(f"{what} spec {spec!r} has no name")
    return name, split_items(rest, spec=text, what=what)


def parse_options(items: Sequence[tuple[str, str]], options: Sequence[Any], *,
                  owner: str, what: str = "") -> dict[str, Any]:
    """Typed values for every option (defaults filled in) from ``split_spec``'s items.

    ``options`` are :class:`Option` objects, or any objects with ``name``, ``default`` and a
    one-argument ``type`` (plus optional ``choices``, ``check``, ``check_msg``), which are
    read through the same strict converters (``int`` and ``float`` become
    :func:`parse_int` and :func:`parse_float`). ``owner`` names the thing (``groupln``) and
    ``what`` its kind (``norm``) in messages.
    """
    table = {o.name: o for o in options}
    values = {o.name: o.default for o in options}
    for key, raw in items:
        if key not in table:
            valid = ", ".join(table) or "none"
            whose = f"{what} {owner!r}" if what else repr(owner)
            raise SpecError(f"unknown option {key!r} for {whose}; valid options: {valid}")
        values[key] = as_option(table[key]).parse(raw, owner)
    return values


def as_option(o: Any) -> Option:
    """An :class:`Option` for a table entry that describes its type with a callable."""
    if isinstance(o, Option):
        return o
    fn = getattr(o, "type", str)
    choices = tuple(getattr(o, "choices", None) or ())
    check, msg = getattr(o, "check", None), getattr(o, "check_msg", "")
    if fn is int:
        return Option(o.name, "int", o.default, choices=choices, check=check, check_msg=msg)
    if fn is float:
        # NaN never parses; a finite check, if any, comes from the table.
        return Option(o.name, "float", o.default, choices=choices, check=check, check_msg=msg)
    if fn is parse_bool or getattr(fn, "__name__", "") == "parse_bool":
        return Option(o.name, "bool", o.default, choices=choices, check=check, check_msg=msg)
    if fn is str:
        return Option(o.name, "choice" if choices else "str", o.default, choices=choices,
                      check=check, check_msg=msg)
    return Option(o.name, "str", o.default, choices=choices, convert=fn, check=check,
                  check_msg=msg)


def expand_path(text: str) -> Path:
    """``Path(text).expanduser()``, with ``~user`` naming no user a :class:`SpecError`
    (pathlib raises a bare RuntimeError for it)."""
    try:
        return Path(text).expanduser()
    except RuntimeError as e:
        raise SpecError(f"cannot expand {text!r}: {e}") from None
