"""Atomic run files: safetensors for tensors, JSON for everything else; never pickle.

A checkpoint is a versioned ``ckpt/epoch-NNNNNN.safetensors`` plus ``checkpoint.json`` that
names it.  The tensor file is written first and the JSON last, each via a temporary file and
``os.replace``, so a process killed at any instant leaves either the previous complete
checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lnlab.errors import LnlabError
from lnlab.io import json_safe, validated, write_json, write_with
from lnlab.io import read_json as _read_json

__all__ = ["json_safe", "load_checkpoint", "read_json", "save_checkpoint", "write_json",
           "write_tensors"]

CKPT_JSON = "checkpoint.json"
CKPT_DIR = "ckpt"


def read_json(path: str | Path) -> Any:
    return _read_json(path, "run file")


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors atomically (each tensor copied, so shared storage is ok)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    write_with(path, lambda tmp: save_file(flat, tmp, metadata=metadata))


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise LnlabError(f"could not read tensors from {path}: no such file") from None
    except Exception as e:  # safetensors raises its own error types for damaged files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LnlabError(f"could not read tensors from {path} (damaged?): {msg}") from None


# -- nested state (optimizer state dicts, RNG states) <-> tensors + JSON skeleton ---------------

def encode_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested structure into ``tensors``; return a JSON skeleton."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": [[k, encode_state(v, f"{prefix}/{k}", tensors)]
                                 for k, v in obj.items()]}
        if all(isinstance(k, int) for k in obj):
            return {"__intdict__": [[k, encode_state(v, f"{prefix}/{k}", tensors)]
                                    for k, v in obj.items()]}
        raise TypeError(f"cannot encode dict keys of mixed types at {prefix}")
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_state(v, f"{prefix}/{i}", tensors)
                              for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_state(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot encode {type(obj).__name__} at {prefix}")


def decode_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_state`."""
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: decode_state(v, tensors) for k, v in obj["__dict__"]}
        if "__intdict__" in obj:
            return {int(k): decode_state(v, tensors) for k, v in obj["__intdict__"]}
        if "__tuple__" in obj:
            return tuple(decode_state(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
    return obj


def save_checkpoint(run_dir: Path, epoch: int, tensors: dict[str, torch.Tensor],
                    state: dict[str, Any]) -> None:
    """Write checkpoint ``epoch``: tensor file, then the JSON that points to it; prune old."""
    name = f"{CKPT_DIR}/epoch-{epoch:06d}.safetensors"
    write_tensors(run_dir / name, tensors)
    write_json(run_dir / CKPT_JSON, {**state, "epoch": epoch, "tensors": name})
    for old in (run_dir / CKPT_DIR).glob("epoch-*.safetensors"):
        if old.name != Path(name).name:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()


@dataclass(frozen=True)
class CheckpointState:
    """The schema of ``checkpoint.json`` (what a resume relies on)."""

    config: dict[str, Any]
    epoch: int
    step: int
    history: list[dict[str, Any]]
    optimizer: Any
    store: Any
    wall_s: float
    loop_s: float
    tensors: str


@dataclass(frozen=True)
class FinishedRun:
    """The schema of a finished run's ``result.json``."""

    status: str
    epochs: list[dict[str, Any]]
    summary: dict[str, Any]
    config: dict[str, Any]
    info: dict[str, Any] | None = None


def confined(run_dir: Path, name: str, where: Path) -> Path:
    """``run_dir / name``, refusing a name that leaves the run directory (``../``, absolute
    paths, symlinks out of it): a checkpoint must never resume from another run's files."""
    root = run_dir.resolve()
    path = (run_dir / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(root):
        raise LnlabError(f"{where} is damaged: tensor file {name!r} is outside the run "
                         f"directory {run_dir}")
    return path


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """The last complete checkpoint of ``run_dir`` (state, tensors), or None.

    The JSON is validated against :class:`CheckpointState`; a damaged checkpoint is an
    :class:`LnlabError` that names it and says what to do (its files are left untouched).
    """
    path = run_dir / CKPT_JSON
    if not path.is_file():
        return None
    try:
        state = validated(CheckpointState, read_json(path), path)
        if state.epoch < 0 or state.step < 0:
            raise LnlabError(f"{path} is damaged: negative epoch or step")
        tensors = read_tensors(confined(run_dir, state.tensors, path))
    except LnlabError as e:
        raise LnlabError(f"{e}; move {path} aside to restart the run from scratch") from None
    return dataclasses.asdict(state), tensors


def decode_checkpoint(skeleton: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    """:func:`decode_state` that names the file when the skeleton does not fit the tensors."""
    try:
        return decode_state(skeleton, tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise LnlabError(f"{where} is damaged: cannot decode its state ({type(e).__name__}: "
                         f"{e}); move it aside to restart the run from scratch") from None


def remove_checkpoints(run_dir: Path) -> None:
    """Delete checkpoint files once the final result is safely written."""
    with contextlib.suppress(FileNotFoundError):
        (run_dir / CKPT_JSON).unlink()
    d = run_dir / CKPT_DIR
    if d.is_dir():
        for f in d.glob("*"):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        with contextlib.suppress(OSError):
            d.rmdir()
