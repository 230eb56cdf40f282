"""String registry of the norm zoo: ``make_norm("adanorm:C=2,k=0.1", 256)``.

A spec is a name, optionally followed by ``:`` and comma-separated ``option=value`` pairs.
Experiments and models take specs so that a config file (and a results hash) can name any
variant; unknown names and options fail with a message that lists the valid ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lnlab.errors import LnlabError
from lnlab.norms.modules import (
    AdaNorm,
    DetachNorm,
    GroupLayerNorm,
    LayerNorm,
    LayerNormSimple,
    NoNorm,
    RMSNorm,
)

__all__ = [
    "NormInfo",
    "NormSpec",
    "available",
    "describe",
    "make_norm",
    "parse_bool",
    "parse_spec",
]


def parse_bool(v: str) -> bool:
    """A spec option's boolean: true/false, yes/no, on/off, 1/0 (any case)."""
    s = v.strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise LnlabError(f"expected a boolean (true/false), got {v!r}")


@dataclass(frozen=True)
class Option:
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], bool] | None = None
    check_msg: str = ""


@dataclass(frozen=True)
class NormInfo:
    """One registry entry: what the variant computes and which options it takes."""

    name: str
    cls: type[nn.Module]
    formula: str
    source: str
    options: tuple[Option, ...] = field(default_factory=tuple)


def _nonneg(v: float) -> bool:
    return math.isfinite(v) and v >= 0


_EPS = Option("eps", float, 1e-5, "added to the variance inside the square root",
              check=_nonneg, check_msg="must be a finite number >= 0")
_AFFINE = Option("affine", parse_bool, True, "learn a per-feature gain (and bias)")
_BIAS = Option("bias", parse_bool, True, "learn a per-feature bias (with affine)")

_REGISTRY: dict[str, NormInfo] = {
    info.name: info
    for info in (
        NormInfo("layernorm", LayerNorm, "g * (x - mean) / std + b", "Ba et al. 2016",
                 (_EPS, _AFFINE, _BIAS)),
        NormInfo("layernorm_simple", LayerNormSimple, "(x - mean) / std", "Xu et al. 2019",
                 (_EPS,)),
        NormInfo("detachnorm", DetachNorm,
                 "(x - mean) / std, mean and/or std constant in backward", "Xu et al. 2019",
                 (Option("detach", str, "both", "which statistic is detached",
                         ("both", "mean", "std")),
                  _EPS,
                  Option("affine", parse_bool, False, "add a per-feature gain and bias"))),
        NormInfo("adanorm", AdaNorm, "C * (1 - k*y) * y, y = (x - mean)/std, factor detached",
                 "Xu et al. 2019",
                 (Option("C", float, 1.0, "scale of the adaptive factor",
                         check=math.isfinite, check_msg="must be finite"),
                  Option("k", float, 0.1, "slope of the adaptive factor",
                         check=math.isfinite, check_msg="must be finite"), _EPS)),
        NormInfo("groupln", GroupLayerNorm,
                 "LayerNorm on each of G contiguous feature groups, then g * . + b",
                 "Ni et al. 2024 (LN-G)",
                 (Option("groups", int, 1, "number of groups; must divide the dimension",
                         check=lambda g: g >= 1, check_msg="must be >= 1"),
                  _EPS, _AFFINE, _BIAS)),
        NormInfo("rmsnorm", RMSNorm, "g * x / sqrt(mean(x^2) + eps)", "Zhang & Sennrich 2019",
                 (Option("eps", float, 1e-6, "added to the mean square", check=_nonneg,
                         check_msg="must be a finite number >= 0"), _AFFINE,
                  Option("bias", parse_bool, False, "learn a per-feature bias (with affine)"))),
        NormInfo("none", NoNorm, "x (identity)", "no-normalization baseline", ()),
    )
}

_ALIASES = {
    "ln": "layernorm",
    "layer_norm": "layernorm",
    "lnsimple": "layernorm_simple",
    "ln_simple": "layernorm_simple",
    "layernormsimple": "layernorm_simple",
    "detach": "detachnorm",
    "ada": "adanorm",
    "lng": "groupln",
    "ln_g": "groupln",
    "grouplayernorm": "groupln",
    "rms": "rmsnorm",
    "identity": "none",
    "nonorm": "none",
    "no_norm": "none",
}


@dataclass(frozen=True)
class NormSpec:
    """A parsed spec: canonical name plus fully typed options (defaults filled in)."""

    name: str
    options: dict[str, Any]

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.options.items()))))

    def __str__(self) -> str:
        info = _REGISTRY[self.name]
        changed = [f"{o.name}={self.options[o.name]}" for o in info.options
                   if self.options[o.name] != o.default]
        return self.name + (":" + ",".join(changed) if changed else "")


def available() -> list[str]:
    """Canonical names of every variant in the registry."""
    return list(_REGISTRY)


def describe() -> list[NormInfo]:
    """Registry entries, for documentation and ``lnlab norms``."""
    return list(_REGISTRY.values())


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise LnlabError(f"unknown norm {name!r}; valid names: {', '.join(available())}")
    return key


def parse_spec(spec: str | NormSpec) -> NormSpec:
    """Parse ``"name[:opt=value,...]"`` into a NormSpec, validating names, options and values."""
    if isinstance(spec, NormSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise LnlabError(f"a norm spec must be a non-empty string, got {spec!r}")
    name, _, rest = spec.partition(":")
    canon = _canonical(name)
    info = _REGISTRY[canon]
    opts = {o.name: o for o in info.options}
    values = {o.name: o.default for o in info.options}
    seen: set[str] = set()
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise LnlabError(f"norm option {item!r} in {spec!r} must look like name=value")
        if key in seen:
            raise LnlabError(f"norm option {key!r} given twice in {spec!r}")
        seen.add(key)
        if key not in opts:
            valid = ", ".join(opts) or "none"
            raise LnlabError(f"unknown option {key!r} for norm {canon!r}; valid options: {valid}")
        opt = opts[key]
        if not raw.isascii():  # int() would read full-width and other Unicode digits
            raise LnlabError(f"bad value for {canon} option {key}={raw.strip()}: not ASCII")
        try:
            val = opt.type(raw.strip())
        except ValueError as e:
            raise LnlabError(f"bad value for {canon} option {key!r}: {e}") from None
        if opt.choices and val not in opt.choices:
            raise LnlabError(f"{canon} option {key} must be one of {', '.join(opt.choices)}")
        if opt.check is not None and not opt.check(val):
            raise LnlabError(f"bad value for {canon} option {key}={raw.strip()}: {opt.check_msg}")
        values[key] = val
    return NormSpec(canon, values)


def make_norm(spec: str | NormSpec, dim: int, **kwargs: Any) -> nn.Module:
    """Build the norm named by ``spec`` over a trailing feature dimension of size ``dim``.

    Extra keyword arguments (e.g. ``device``, ``dtype``) go to the module's constructor.
    """
    ns = parse_spec(spec)
    o = dict(ns.options)
    if ns.name == "none":
        return NoNorm(dim)
    if ns.name == "layernorm":
        return LayerNorm(dim, o["eps"], o["affine"], o["bias"], **kwargs)
    if ns.name == "layernorm_simple":
        return LayerNormSimple(dim, o["eps"], **kwargs)
    if ns.name == "detachnorm":
        return DetachNorm(dim, o["eps"], o["affine"], True, o["detach"], **kwargs)
    if ns.name == "adanorm":
        return AdaNorm(dim, o["eps"], C=o["C"], k=o["k"], **kwargs)
    if ns.name == "groupln":
        return GroupLayerNorm(dim, o["groups"], o["eps"], o["affine"], o["bias"], **kwargs)
    if ns.name == "rmsnorm":
        return RMSNorm(dim, o["eps"], o["affine"], o["bias"], **kwargs)
    raise AssertionError(ns.name)  # unreachable: parse_spec validated the name
