"""Model spec strings: ``"mlp:depth=4,width=256,norm=layernorm,residual=pre"``.

A model spec is a model name, optionally followed by ``:`` and comma-separated ``option=value``
pairs, exactly like a norm spec (grammar and option types: :mod:`lnlab.specs`). A norm spec
nested as the value of ``norm=`` contains ``:`` and ``,`` itself, so inside a model spec it is
written in one of two equivalent ways:

* with ``;`` in place of the norm's own separators: ``norm=groupln;groups=4`` or
  ``norm=adanorm;C=2;k=0.1`` (the first ``;`` stands for ``:`` and the others for ``,``;
  ``norm=adanorm:C=2;k=0.1`` also works);
* in square brackets, verbatim: ``norm=[adanorm:C=2,k=0.1]``.

Hugging Face models are specs too:

* ``hf:ARCH[:layers=3,dim=32,heads=4,dropout=0]`` -- a tiny randomly initialised model of that
  architecture (``bert``, ``gpt2``, ``llama``, ...; see :data:`lnlab.models.hf.TINY_ARCHS`),
  built from a config, no download. These defaults are the one default for every command
  (``inspect``, ``audit``, ``train``) and experiment.
* ``hf:PATH`` -- a local checkpoint directory (``config.json``, and ``model.safetensors`` if
  its weights are to be loaded). A path is anything containing ``/`` or ``\\``, starting with
  ``.`` or ``~``, or an existing directory; it takes no options (its config decides).

``str(spec)`` prints the canonical short form (defaults left out, nested norms in the ``;``
form); ``spec.full()`` prints every option, which is what a results hash should use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lnlab.norms import NormSpec, parse_spec
from lnlab.specs import (
    Option,
    SpecError,
    expand_path,
    format_value,
    parse_bool,
    parse_options,
    split_spec,
)

__all__ = [
    "HF_DEFAULTS",
    "ModelInfo",
    "ModelOption",
    "ModelSpec",
    "available_models",
    "describe_models",
    "parse_model_spec",
]

ModelOption = Option
"""Model options are :class:`lnlab.specs.Option` (the name is kept for old imports)."""


def _auto_bool(v: str) -> str:
    s = v.strip().lower()
    if s == "auto":
        return "auto"
    return "true" if parse_bool(s) else "false"


def unescape_norm(value: str) -> str:
    """Turn a nested norm spec written inside a model spec back into a registry spec."""
    v = value.strip()
    if v.startswith("[") and v.endswith("]"):
        return v[1:-1].strip()
    if ";" not in v:
        return v
    if ":" not in v:
        v = v.replace(";", ":", 1)
    return v.replace(";", ",")


def escape_norm(spec: str | NormSpec) -> str:
    """The ``;`` form of a norm spec, safe to nest in a model spec."""
    return str(parse_spec(spec)).replace(":", ";").replace(",", ";")


def _norm(v: str) -> str:
    return str(parse_spec(unescape_norm(v)))


@dataclass(frozen=True)
class ModelInfo:
    """One model family: its name, what it is, and the options its spec takes."""

    name: str
    summary: str
    options: tuple[Option, ...] = field(default_factory=tuple)


_SIZE = 2**20   # widths, dims, channels: beyond a million per layer is a typo, not a model
_DEPTH = 10_000  # blocks


def _count(name: str, default: int, help: str, hi: int = _SIZE) -> Option:
    return Option(name, "int", default, help, lo=1, hi=hi)


_ACTS = ("relu", "gelu", "tanh", "silu", "identity")
_NORM = Option("norm", "str", "layernorm",
               "any norm registry spec, nested as name;opt=v;... or [name:opt=v,...]",
               convert=_norm)
_RATIO = {"kind": "float", "lo": 0.0, "lo_open": True, "hi": 1024.0}

_MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo("mlp", "MLP: Linear->Norm->act stacks, or pre/post/branch residual blocks", (
            _count("depth", 4, "number of hidden blocks", _DEPTH),
            _count("width", 256, "hidden width"),
            _NORM,
            Option("residual", "choice", "none", "where the norm sits",
                   ("none", "pre", "post", "branch")),
            Option("final_norm", "bool", False, "a norm before the readout"),
            Option("act", "choice", "relu", "activation", _ACTS),
            Option("mlp_ratio", default=1.0,
                   help="hidden width of a residual branch F, as a multiple of width", **_RATIO),
            Option("bias", "bool", True, "biases in the Linear layers"),
        )),
        ModelInfo("lnnet", "LN-Net (Ni et al. 2024): Linear and norm alternating, no activation", (
            _count("depth", 6, "number of Linear->Norm layers", _DEPTH),
            _count("width", 3, "width of every layer"),
            _NORM,
            Option("bias", "bool", True, "biases in the Linear layers"),
        )),
        ModelInfo("transformer", "Transformer encoder classifier (tokens or ViT-style patches)", (
            _count("layers", 6, "number of blocks", _DEPTH),
            _count("dim", 128, "model width"),
            _count("heads", 4, "attention heads; must divide dim"),
            Option("ln", "choice", "pre", "norm placement", ("pre", "post")),
            Option("mlp_ratio", default=4.0, help="FFN hidden width / dim", **_RATIO),
            Option("dropout", "float", 0.0, "dropout on attention and residual branches",
                   lo=0.0, hi=1.0, hi_open=True),
            Option("pool", "choice", "cls", "CLS token or mean over tokens", ("cls", "mean")),
            _count("patch", 4, "patch size for real-valued inputs (per side for images)"),
            _NORM,
            Option("final_norm", "str", "auto",
                   "norm before the head: auto = yes for ln=pre, no for ln=post",
                   ("auto", "true", "false"), convert=_auto_bool),
            Option("embed_norm", "bool", False, "norm after the embedding (BERT style)"),
            Option("act", "choice", "gelu", "FFN activation", _ACTS),
            Option("causal", "bool", False,
                   "causal attention and per-position logits (a language model)"),
        )),
        ModelInfo("cnn", "small CNN; its norm acts over channels at each position", (
            _count("channels", 32, "channels of every conv layer"),
            _count("layers", 3, "number of conv blocks", _DEPTH),
            _NORM,
            _count("kernel", 3, "kernel size (odd)", 1025),
            Option("act", "choice", "relu", "activation", _ACTS),
            Option("downsample", "bool", True,
                   "max-pool by 2 after each block while the size allows"),
        )),
        ModelInfo("hf", "Hugging Face model: hf:ARCH (tiny random init from a config, no "
                  "download) or hf:PATH (a local checkpoint directory; no options)", (
            _count("layers", 3, "blocks of the tiny config", _DEPTH),
            _count("dim", 32, "hidden size of the tiny config"),
            _count("heads", 4, "attention heads; must divide dim"),
            Option("dropout", "float", 0.0, "every dropout of the config (HF's default is 0.1; "
                   "off so tiny runs fit their training set quickly)",
                   lo=0.0, hi=1.0, hi_open=True),
        )),
    )
}

HF_DEFAULTS: dict[str, Any] = {o.name: o.default for o in _MODELS["hf"].options}
"""The one default tiny Hugging Face size: ``hf:ARCH`` means ``hf:ARCH:layers=3,dim=32,...``."""

_ALIASES = {"vit": "transformer", "ln_net": "lnnet", "ln-net": "lnnet", "convnet": "cnn"}


def available_models() -> list[str]:
    """Names of the model families (``hf`` is the Hugging Face one)."""
    return list(_MODELS)


def describe_models() -> list[ModelInfo]:
    """Model families with their options, for documentation and the CLI."""
    return list(_MODELS.values())


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: canonical name and typed options (defaults filled in).

    Nested norm specs are stored canonically in registry form (``"groupln:groups=4"``). For
    ``hf`` specs ``source`` is the architecture (canonical ``model_type``) or, with ``path``
    true, the checkpoint directory; a path spec has no options.
    """

    name: str
    options: dict[str, Any]
    source: str | None = None
    path: bool = False

    def _items(self, full: bool) -> list[str]:
        out = []
        for o in _MODELS[self.name].options:
            if o.name not in self.options:
                continue
            v = self.options[o.name]
            if not full and v == o.default:
                continue
            out.append(f"{o.name}={escape_norm(v) if o.name == 'norm' else format_value(v)}")
        return out

    def _head(self) -> str:
        return self.name if self.source is None else f"{self.name}:{self.source}"

    def __str__(self) -> str:
        items = self._items(full=False)
        return self._head() + (":" + ",".join(items) if items else "")

    def full(self) -> str:
        """Every option spelled out, in declaration order: stable input for a hash."""
        items = self._items(full=True)
        return self._head() + (":" + ",".join(items) if items or not self.source else "")

    def to_dict(self) -> dict[str, Any]:
        extra = {} if self.source is None else {"source": self.source, "path": self.path}
        return {"name": self.name, **extra, **self.options}

    def __hash__(self) -> int:  # options is a dict; hash the canonical full string
        return hash(self.full())


def _exists(path: str, *, is_dir: bool = False) -> bool:
    try:
        return Path(path).is_dir() if is_dir else Path(path).exists()
    except (OSError, ValueError):  # a name too long or unrepresentable names nothing
        return False


def _is_path(text: str) -> bool:
    t = text.strip()
    return any(c in t for c in "/\\") or t.startswith((".", "~")) or _exists(t, is_dir=True)


_ARCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _parse_hf(spec: str) -> ModelSpec:
    from lnlab.models.hf import arch_key

    rest = spec.strip()[3:]
    if not rest.strip():
        raise SpecError("hf: needs an architecture name (hf:bert, hf:gpt2, ...) or a local "
                        "checkpoint directory (hf:PATH)")
    if _is_path(rest):
        path = rest.strip()
        _, sep, tail = path.rpartition(":")
        if sep and "=" in tail and not _exists(path):
            raise SpecError(f"hf:PATH takes no options (got {tail!r}); the checkpoint's "
                            "config.json decides the architecture")
        return ModelSpec("hf", {}, str(expand_path(path)), path=True)
    arch, items = split_spec(rest, what="hf model")
    if not _ARCH.fullmatch(arch) or len(arch) > 100:
        raise SpecError(f"{arch[:40]!r} is not an architecture name (hf:bert, hf:gpt2, ...) "
                        "nor a path (write ./NAME for a directory here)")
    values = parse_options(items, _MODELS["hf"].options, owner="hf", what="model")
    return ModelSpec("hf", values, arch_key(arch))


def parse_model_spec(spec: str | ModelSpec) -> ModelSpec:
    """Parse ``"name[:opt=value,...]"``, ``"hf:ARCH[:opt=value,...]"`` or ``"hf:PATH"``;
    unknown names or options raise :class:`lnlab.specs.SpecError` listing the valid ones."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, str) and spec.strip()[:3].lower() == "hf:":
        return _parse_hf(spec)
    name, items = split_spec(spec, what="model")
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _MODELS or key == "hf":
        raise SpecError(f"unknown model {name!r}; valid models: "
                        f"{', '.join(m for m in available_models() if m != 'hf')}, "
                        "hf:ARCH or hf:PATH")
    return ModelSpec(key, parse_options(items, _MODELS[key].options, owner=key, what="model"))
