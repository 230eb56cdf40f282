"""Run configs: canonical JSON, the stable run key, and grid expansion.

A run is identified by *what it computes*, not by when or where it ran: the key is a hash of
the experiment name and the full config in canonical JSON (sorted keys, no whitespace). Running
the same sweep twice therefore finds the same keys and skips what is already done, and changing
any field (including a default that ends up in the config) makes a new run.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lnlab.errors import LnlabError

__all__ = [
    "canonical_json",
    "check_config",
    "expand_grid",
    "flatten",
    "get_path",
    "run_key",
    "set_path",
]

KEY_LENGTH = 16  # hex digits of sha256: 64 bits, collisions irrelevant at sweep sizes


def check_config(config: Any, where: str = "config") -> None:
    """Raise LnlabError unless ``config`` is plain JSON data (dict/list/str/int/float/bool/None).

    Configs are hashed and stored, so anything that does not survive a JSON round trip
    unchanged (tuples, numpy scalars, NaN, non-string keys) would give unstable keys.
    """
    if isinstance(config, Mapping):
        for k, v in config.items():
            if not isinstance(k, str):
                raise LnlabError(f"{where}: key {k!r} is not a string")
            check_config(v, f"{where}.{k}")
    elif isinstance(config, list):
        for i, v in enumerate(config):
            check_config(v, f"{where}[{i}]")
    elif isinstance(config, float):
        if not math.isfinite(config):
            raise LnlabError(f"{where}: {config!r} is not a finite number")
    elif not (config is None or isinstance(config, str | int | bool)):
        raise LnlabError(f"{where}: {type(config).__name__} value {config!r} is not JSON data")


def canonical_json(obj: Any) -> str:
    """Sorted-key, whitespace-free JSON: the same data always gives the same string."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def run_key(experiment: str, config: Mapping[str, Any]) -> str:
    """Stable hex key of (experiment, config); equal configs give equal keys in any process."""
    check_config(dict(config))
    blob = canonical_json({"experiment": experiment, "config": config})
    return hashlib.sha256(blob.encode()).hexdigest()[:KEY_LENGTH]


def get_path(config: Mapping[str, Any], path: str, default: Any = KeyError) -> Any:
    """``get_path(cfg, "train.lr")`` = ``cfg["train"]["lr"]``; ``default`` if absent."""
    node: Any = config
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif default is KeyError:
            raise KeyError(f"config has no field {path!r}")
        else:
            return default
    return node


def set_path(config: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted field in place, creating intermediate dicts."""
    parts = path.split(".")
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise LnlabError(f"cannot set {path!r}: {part!r} is not a section")
    node[parts[-1]] = value


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → ``{"train.lr": 0.01, ...}`` (lists stay values); for tables and CSV."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def expand_grid(
    base: Mapping[str, Any],
    axes: Mapping[str, Sequence[Any]] | None = None,
    *,
    seeds: Iterable[int] = (0,),
    seed_path: str = "seed",
) -> list[dict[str, Any]]:
    """The full grid: every combination of ``axes`` values × every seed, applied to ``base``.

    Axis names are dotted paths (``{"train.weight_decay": [0, 1e-4]}``); a value that is a
    dict is merged into ``base`` instead (so one axis can change several fields together,
    e.g. ``{"arm": [{"arm": "mlp", "train.model": "mlp:..."}, ...]}`` — keys inside it are
    dotted paths too). Seeds vary fastest, so runs of one setting sit next to each other.
    """
    axes = dict(axes or {})
    for name, values in axes.items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise LnlabError(f"grid axis {name!r} needs a non-empty list of values")
    seeds = list(seeds)
    if not seeds:
        raise LnlabError("a sweep needs at least one seed")
    configs = []
    for combo in itertools.product(*axes.values()):
        for seed in seeds:
            cfg = copy.deepcopy(dict(base))
            for name, value in zip(axes, combo, strict=True):
                if isinstance(value, Mapping):
                    for sub, v in value.items():
                        set_path(cfg, sub, copy.deepcopy(v))
                else:
                    set_path(cfg, name, copy.deepcopy(value))
            set_path(cfg, seed_path, int(seed))
            check_config(cfg)
            configs.append(cfg)
    return configs
