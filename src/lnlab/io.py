"""Files lnlab writes and reads: one home for atomic writes, JSON-safe values and JSON files.

Why atomic: a result file is read by resumed runs and by the report, so a process killed at
any instant must leave either the previous complete file or the new one, never half of one.
Every writer goes through :func:`atomic_path` (temporary file in the same directory, fsync,
``os.replace``). Why JSON-safe: strict JSON readers reject NaN/inf, and numpy/torch scalars
are not JSON; :func:`json_safe` is the single conversion used before any ``json.dump``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from lnlab.errors import LnlabError

__all__ = [
    "atomic_path",
    "dir_lock",
    "json_safe",
    "read_json",
    "save_npz",
    "validated",
    "write_atomic",
    "write_json",
    "write_with",
]

T = TypeVar("T")


def _cannot_write(path: Path, e: OSError) -> LnlabError:
    why = e.strerror or type(e).__name__
    if isinstance(e, IsADirectoryError) or path.is_dir():
        why = "it is a directory"
    return LnlabError(f"cannot write {path}: {why}")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, mode: int = 0o644) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over it.

    On any error the temporary file is removed and ``path`` is untouched. A path that cannot
    be written (a directory, a read-only folder, a full disk) is an :class:`LnlabError`
    naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise LnlabError(f"cannot write {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _cannot_write(path, e) from None
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; results are meant to be shared and read
        os.replace(tmp, path)
    except OSError as e:
        raise _cannot_write(path, e) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` atomically; returns ``path``."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(raw)
    return Path(path)


def write_with(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Atomic write through a library writer that takes a file name (safetensors, numpy)."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def save_npz(path: str | Path, **arrays: Any) -> None:
    """``np.savez`` to exactly ``path`` (given a name, numpy would append ``.npz``)."""
    import numpy as np

    with open(path, "wb") as f:
        np.savez(f, **arrays)


def json_safe(obj: Any, *, nonfinite: str = "null") -> Any:
    """JSON-safe copy: tuples -> lists, numpy/torch scalars -> Python numbers, mapping keys ->
    str, paths and other objects -> str; non-finite floats -> None (``nonfinite="null"``,
    what stored results use) or the strings "nan"/"inf"/"-inf" (``"str"``, for printed
    results where an infinite ratio is a finding, not a missing value)."""
    def go(o: Any) -> Any:
        if isinstance(o, Mapping):
            return {str(k): go(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [go(v) for v in o]
        if isinstance(o, bool) or o is None or isinstance(o, str | int):
            return o
        if isinstance(o, float):
            if math.isfinite(o):
                return o
            return None if nonfinite == "null" else ("nan" if o != o else str(o))
        if hasattr(o, "item") and callable(o.item):  # numpy / torch scalar
            try:
                return go(o.item())
            except (TypeError, ValueError, RuntimeError):
                pass
        return str(o)

    if nonfinite not in ("null", "str"):
        raise ValueError(f"nonfinite must be 'null' or 'str', got {nonfinite!r}")
    return go(obj)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 1) -> Path:
    """Write ``json_safe(obj)`` as strict JSON, atomically."""
    text = json.dumps(json_safe(obj), indent=indent, allow_nan=False)
    return write_atomic(path, text + "\n")


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; an unreadable or malformed one is an :class:`LnlabError` that
    names it (the file itself is left as it is)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise LnlabError(f"could not read {what} {path}: {reason.splitlines()[0]}") from None


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:  # JSON writes 1.0 as 1.0 but a hand-edited file may say 1
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        k, v = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(
            _type_ok(a, k) and _type_ok(b, v) for a, b in value.items())
    return isinstance(value, origin or tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def validated(cls: type[T], data: Any, where: str | Path) -> T:
    """Build dataclass ``cls`` from parsed JSON, checking every field's type.

    A file whose content does not match (a missing field, a string where a number belongs,
    a list instead of an object) is an :class:`LnlabError` naming the file and the field.
    Unknown fields are ignored so that newer files stay readable.
    """
    if not isinstance(data, dict):
        raise LnlabError(f"{where} is damaged: expected a JSON object, found "
                         f"{type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            if (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING):
                raise LnlabError(f"{where} is damaged: field {f.name!r} is missing")
            continue
        value, tp = data[f.name], hints[f.name]
        if not _type_ok(value, tp):
            raise LnlabError(f"{where} is damaged: field {f.name!r} should be "
                             f"{_type_name(tp)}, found {type(value).__name__} "
                             f"{json.dumps(value)[:40]}")
        kwargs[f.name] = value
    return cls(**kwargs)


@contextlib.contextmanager
def dir_lock(directory: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (``.lnlab.lock``) for one writer process.

    A second process asking for it is refused at once with an :class:`LnlabError`, so two
    sweeps or two trainers never race on the same files. The kernel drops the lock when the
    process dies, so a killed process never leaves a stale lock behind. The lock file is
    removed on release (while still locked; a process that locked a file that was removed
    meanwhile sees a different inode and is refused), so a finished or refused command
    leaves no file behind.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise LnlabError(f"{d} exists and is not a directory")
    path = d / ".lnlab.lock"
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _cannot_write(path, e) from None
    busy = LnlabError(f"another lnlab process is {what} in {d}; wait for it to finish or use "
                      f"another directory")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder released and removed it between our open and flock
            raise busy
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        os.close(fd)  # closing releases the lock
