"""Atomic run files: safetensors for tensors, JSON for everything else; never pickle.

A checkpoint is a versioned ``ckpt/epoch-NNNNNN.safetensors`` plus ``checkpoint.json`` that
names it.  The tensor file is written first and the JSON last, each via a temporary file and
``os.replace``, so a process killed at any instant leaves either the previous complete
checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lnlab.errors import LnlabError

CKPT_JSON = "checkpoint.json"
CKPT_DIR = "ckpt"


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def json_safe(obj: Any) -> Any:
    """Replace non-finite floats by None (strict JSON readers reject NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically."""
    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False)
    _atomic(Path(path), w)


def read_json(path: str | Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise LnlabError(f"could not read {path}: {e}") from None


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors atomically (each tensor copied, so shared storage is ok)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(flat, tmp, metadata=metadata))


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:
        raise LnlabError(f"could not read tensors from {path}: {e}") from None


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


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """The last complete checkpoint of ``run_dir`` (state, tensors), or None."""
    path = run_dir / CKPT_JSON
    if not path.is_file():
        return None
    state = read_json(path)
    return state, read_tensors(run_dir / state["tensors"])


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
