"""The norm table: ``make_norm("adanorm:C=2,k=0.1", 256)``, and what any module is as a norm.

One table (``_REGISTRY``) drives everything about the zoo's variants: each row names a variant,
its module class, its formula, its source and its spec options. ``make_norm`` looks the class up,
validates the options and constructs it; ``lnlab norms`` prints the table; :func:`norm_form`
recognises the class again inside any model, for surgery, the optimizer's parameter groups, the
weight-decay audit and the gradient analysis. Adding a variant = its class in ``modules.py`` and
one row here (docs/adding-a-norm.md).

A spec is a name, optionally followed by ``:`` and comma-separated ``option=value`` pairs.
Experiments and models take specs so that a config file (and a results hash) can name any
variant; unknown names and options fail with a message that lists the valid ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from lnlab.norms.modules import (
    IMPLS,
    AdaNorm,
    DetachNorm,
    GroupLayerNorm,
    LayerNorm,
    LayerNormSimple,
    NoNorm,
    NormMath,
    RMSNorm,
)
from lnlab.specs import SpecError, parse_bool, parse_options, split_spec

__all__ = [
    "NormForm",
    "NormInfo",
    "NormSpec",
    "Option",
    "available",
    "describe",
    "explicit_options",
    "is_norm",
    "make_norm",
    "norm_form",
    "parse_bool",
    "parse_spec",
]


@dataclass(frozen=True)
class Option:
    """One spec option: its type (a parser from the spec's text), default and checks.

    ``kwarg`` is the constructor argument it fills (default: the option's own name).
    """

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], bool] | None = None
    check_msg: str = ""
    kwarg: str | None = None

    @property
    def argument(self) -> str:
        return self.kwarg or self.name


@dataclass(frozen=True)
class NormInfo:
    """One table row: the variant's class, what it computes and which options it takes.

    ``make_norm`` calls ``cls(dim, **{option.argument: value}, **kwargs)``. ``family`` says how
    it normalizes (see :class:`NormForm`): "layer" for the zoo's variants, "identity" for none.
    """

    name: str
    cls: type[nn.Module]
    formula: str
    source: str
    options: tuple[Option, ...] = field(default_factory=tuple)
    family: str = "layer"


def _nonneg(v: float) -> bool:
    return math.isfinite(v) and v >= 0


_EPS = Option("eps", float, 1e-5, "added to the variance inside the square root",
              check=_nonneg, check_msg="must be a finite number >= 0")
_AFFINE = Option("affine", parse_bool, True, "learn a per-feature gain (and bias)",
                 kwarg="elementwise_affine")
_BIAS = Option("bias", parse_bool, True, "learn a per-feature bias (with affine)")
_IMPL = Option("impl", str, "auto", "code path: fastest that applies, fused kernel, or plain "
               "autograd code", IMPLS)

_REGISTRY: dict[str, NormInfo] = {
    info.name: info
    for info in (
        NormInfo("layernorm", LayerNorm, "g * (x - mean) / std + b", "Ba et al. 2016",
                 (_EPS, _AFFINE, _BIAS, _IMPL)),
        NormInfo("layernorm_simple", LayerNormSimple, "(x - mean) / std", "Xu et al. 2019",
                 (_EPS, _IMPL)),
        NormInfo("detachnorm", DetachNorm,
                 "(x - mean) / std, mean and/or std constant in backward", "Xu et al. 2019",
                 (Option("detach", str, "both", "which statistic is detached",
                         ("both", "mean", "std")),
                  _EPS,
                  Option("affine", parse_bool, False, "add a per-feature gain and bias",
                         kwarg="elementwise_affine"),
                  _IMPL)),
        NormInfo("adanorm", AdaNorm, "C * (1 - k*y) * y, y = (x - mean)/std, factor detached",
                 "Xu et al. 2019",
                 (Option("C", float, 1.0, "scale of the adaptive factor",
                         check=math.isfinite, check_msg="must be finite"),
                  Option("k", float, 0.1, "slope of the adaptive factor",
                         check=math.isfinite, check_msg="must be finite"), _EPS, _IMPL)),
        NormInfo("groupln", GroupLayerNorm,
                 "LayerNorm on each of G contiguous feature groups, then g * . + b",
                 "Ni et al. 2024 (LN-G)",
                 (Option("groups", int, 1, "number of groups; must divide the dimension",
                         check=lambda g: g >= 1, check_msg="must be >= 1"),
                  _EPS, _AFFINE, _BIAS, _IMPL)),
        NormInfo("rmsnorm", RMSNorm, "g * x / sqrt(mean(x^2) + eps)", "Zhang & Sennrich 2019",
                 (Option("eps", float, 1e-6, "added to the mean square", check=_nonneg,
                         check_msg="must be a finite number >= 0"), _AFFINE,
                  Option("bias", parse_bool, False, "learn a per-feature bias (with affine)"),
                  _IMPL)),
        NormInfo("none", NoNorm, "x (identity)", "no-normalization baseline", (),
                 family="identity"),
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
        raise SpecError(f"unknown norm {name!r}; valid names: {', '.join(available())}")
    return key


# --------------------------------------------------------------------------- specs

def _unknown(info: NormInfo, key: str) -> SpecError:
    valid = ", ".join(o.name for o in info.options) or "none"
    return SpecError(f"unknown option {key!r} for norm {info.name!r}; valid options: {valid}")


def _check_value(info: NormInfo, opt: Option, val: Any, shown: str) -> None:
    if opt.choices and val not in opt.choices:
        raise SpecError(f"{info.name} option {opt.name} must be one of {', '.join(opt.choices)}")
    if opt.check is not None and not opt.check(val):
        raise SpecError(f"bad value for {info.name} option {opt.name}={shown}: {opt.check_msg}")


def parse_spec(spec: str | NormSpec) -> NormSpec:
    """Parse ``"name[:opt=value,...]"`` into a NormSpec, validating names, options and values
    (grammar and types: :mod:`lnlab.specs`; errors are :class:`lnlab.specs.SpecError`)."""
    if isinstance(spec, NormSpec):
        return spec
    name, items = split_spec(spec, what="norm")
    canon = _canonical(name)
    return NormSpec(canon, parse_options(items, _REGISTRY[canon].options,
                                         owner=canon, what="norm"))


def explicit_options(spec: str | NormSpec) -> set[str]:
    """The options a spec sets itself (a NormSpec counts as setting all of them)."""
    if isinstance(spec, NormSpec):
        return set(spec.options)
    return {key for key, _ in split_spec(spec, what="norm")[1]}


def make_norm(spec: str | NormSpec, dim: int | tuple[int, ...], **kwargs: Any) -> nn.Module:
    """Build the norm named by ``spec`` over trailing features of size ``dim``: the table row's
    class, constructed with the validated options.

    Extra keyword arguments (``device``, ``dtype``) go to the module's constructor; options
    belong in the spec. Bad names, options or values raise ``ValueError`` listing the valid ones.

    >>> make_norm("groupln:groups=4,impl=composite", 256)
    GroupLayerNorm((256,), eps=1e-05, elementwise_affine=True, bias=True, groups=4)
    """
    ns = parse_spec(spec)
    info = _REGISTRY.get(ns.name)
    if info is None:
        raise ValueError(f"unknown norm {ns.name!r}; valid names: {', '.join(available())}")
    opts = {o.name: o for o in info.options}
    for key, val in ns.options.items():  # a NormSpec built by hand is checked here too
        if key not in opts:
            raise _unknown(info, key)
        _check_value(info, opts[key], val, str(val))
    args = {o.argument: ns.options.get(o.name, o.default) for o in info.options}
    clash = [o.name for o in info.options if o.argument in kwargs]
    if clash:
        raise ValueError(f"set {', '.join(clash)} in the spec (e.g. '{ns.name}:{clash[0]}=...'),"
                         " not as a keyword argument of make_norm")
    return info.cls(dim, **args, **kwargs)


# --------------------------------------------------------------------------- recognition

@dataclass(frozen=True)
class NormForm:
    """What a module is, as a norm (see :func:`norm_form` for the rules)."""

    kind: str
    """What it computes: the table's name for the zoo's classes (``adanorm``, ``groupln``,
    ...); ``layernorm`` or ``rmsnorm`` for torch's and Hugging Face's feature norms;
    ``groupnorm``, ``instancenorm`` or ``batchnorm`` for torch's channel norms."""
    family: str
    """``layer`` (each sample over its trailing features), ``identity`` (the ``none``
    placeholder), ``group``, ``instance`` or ``batch`` (torch's channel norms)."""
    source: str
    """``lnlab`` (a table class), ``torch``, ``hf`` (defined in ``transformers``), ``custom``."""
    cls: str
    """Where the class comes from and its name: ``torch.nn.LayerNorm``, ``lnlab.AdaNorm``."""
    has_gain: bool
    """A trainable ``weight`` (gain) parameter is present."""
    has_bias: bool
    """A trainable ``bias`` parameter is present."""
    eps_attr: str | None
    """The attribute holding eps (``eps``, ``variance_epsilon``, ``epsilon``), if any."""
    math: NormMath | None
    """The computation as ``normalize`` switches; None where it has no such form."""

    @property
    def affine(self) -> bool:
        return self.has_gain or self.has_bias

    @property
    def trailing(self) -> bool:
        """Acts on each sample's trailing features (or is the identity placeholder): the sites
        surgery finds, strips and swaps, and the gradient analysis measures."""
        return self.family in ("layer", "identity")


# torch's norm classes, most specific first (InstanceNorm derives from batchnorm's _NormBase).
_TORCH_NORMS: tuple[tuple[type[nn.Module], str, str, NormMath | None], ...] = (
    (nn.LayerNorm, "layernorm", "layer", NormMath()),
    (nn.RMSNorm, "rmsnorm", "layer", NormMath(center=False)),
    (nn.GroupNorm, "groupnorm", "group", None),
    (nn.modules.instancenorm._InstanceNorm, "instancenorm", "instance", None),
    (nn.modules.batchnorm._NormBase, "batchnorm", "batch", None),
)
# Hugging Face classes named "...LayerNorm" that are really RMS norms (no centering).
_RMS_NAMED_LAYERNORM = ("T5LayerNorm", "Pix2StructLayerNorm", "Pop2PianoLayerNorm",
                        "SwitchTransformersLayerNorm", "UdopLayerNorm")
_EPS_ATTRS = ("eps", "variance_epsilon", "epsilon")


def _is_param(m: nn.Module, name: str) -> bool:
    return isinstance(m._parameters.get(name), nn.Parameter)


def _eps_attr(m: nn.Module) -> str | None:
    for attr in _EPS_ATTRS:
        if hasattr(m, attr):
            v = getattr(m, attr)
            if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
                return attr
    return None


def _table_row(t: type) -> NormInfo | None:
    by_cls = {info.cls: info for info in _REGISTRY.values()}
    return next((by_cls[c] for c in t.__mro__ if c in by_cls), None)


def _named_like_a_norm(m: nn.Module) -> str | None:
    """The name rule for classes outside lnlab and torch (module doc of :func:`norm_form`)."""
    name = type(m).__name__
    lname = name.lower()
    if not (lname.endswith("layernorm") or lname.endswith("rmsnorm")):
        return None
    w = getattr(m, "weight", None)
    if isinstance(w, Tensor):
        if w.dim() < 1:
            return None
    elif not hasattr(m, "normalized_shape"):
        return None
    if any(True for c in m.children() for _p in c.parameters()):
        return None  # a container that happens to be named like a norm
    rms = "rms" in lname or any(name.endswith(n) for n in _RMS_NAMED_LAYERNORM)
    return "rmsnorm" if rms else "layernorm"


def norm_form(module: nn.Module) -> NormForm | None:
    """What ``module`` is as a norm, or None if it is not one. The rules, in order:

    1. A class in the norm table (or a subclass of one): the row's name and family, the
       module's ``norm_math()``.
    2. torch's ``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``InstanceNorm*`` and ``BatchNorm*``
       (and subclasses).
    3. Any other class whose name ends in ``LayerNorm`` or ``RMSNorm`` (any case), holds a
       ``weight`` tensor (dim >= 1) or a ``normalized_shape``, and has no child with parameters
       (Hugging Face's ``LlamaRMSNorm``, ``T5LayerNorm``, ...): ``rmsnorm`` when the name has
       "rms" in it or it is a T5-style norm, else ``layernorm``.

    Nothing else is a norm: a name merely containing "Norm" does not count.
    """
    t = type(module)
    has_gain, has_bias = _is_param(module, "weight"), _is_param(module, "bias")
    row = _table_row(t)
    if row is not None:
        get_math = getattr(module, "norm_math", None)
        return NormForm(row.name, row.family, "lnlab", f"lnlab.{t.__name__}", has_gain,
                        has_bias, _eps_attr(module), get_math() if callable(get_math) else None)
    mod = t.__module__ or ""
    source = ("torch" if mod.startswith("torch.") else
              "hf" if mod.startswith("transformers") else "custom")
    prefix = {"torch": "torch.nn", "hf": "transformers"}.get(source, mod)
    cls = f"{prefix}.{t.__name__}"
    for base, kind, family, nmath in _TORCH_NORMS:
        if isinstance(module, base):
            return NormForm(kind, family, source, cls, has_gain, has_bias, _eps_attr(module),
                            nmath)
    kind = _named_like_a_norm(module)
    if kind is None:
        return None
    nmath = NormMath(center=kind != "rmsnorm")
    return NormForm(kind, "layer", source, cls, has_gain, has_bias, _eps_attr(module), nmath)


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer (:func:`norm_form` says which)."""
    return norm_form(module) is not None
