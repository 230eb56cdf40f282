"""Model spec strings: ``"mlp:depth=4,width=256,norm=layernorm,residual=pre"``.

A model spec is a model name, optionally followed by ``:`` and comma-separated ``option=value``
pairs, exactly like a norm spec. A norm spec nested as the value of ``norm=`` contains ``:`` and
``,`` itself, so inside a model spec it is written in one of two equivalent ways:

* with ``;`` in place of the norm's own separators: ``norm=groupln;groups=4`` or
  ``norm=adanorm;C=2;k=0.1`` (the first ``;`` stands for ``:`` and the others for ``,``;
  ``norm=adanorm:C=2;k=0.1`` also works);
* in square brackets, verbatim: ``norm=[adanorm:C=2,k=0.1]``.

``str(spec)`` prints the canonical short form (defaults left out, nested norms in the ``;``
form); ``spec.full()`` prints every option, which is what a results hash should use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lnlab.errors import LnlabError
from lnlab.norms import NormSpec, parse_spec
from lnlab.norms.registry import parse_bool

__all__ = [
    "ModelInfo",
    "ModelOption",
    "ModelSpec",
    "available_models",
    "describe_models",
    "parse_model_spec",
]


def _auto_bool(v: str) -> str:
    s = v.strip().lower()
    if s == "auto":
        return "auto"
    return "true" if parse_bool(s) else "false"


def _pos_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise ValueError(f"expected a positive integer, got {v!r}")
    return n


def _nonneg_int(v: str) -> int:
    n = int(v)
    if n < 0:
        raise ValueError(f"expected a non-negative integer, got {v!r}")
    return n


def _pos_float(v: str) -> float:
    x = float(v)
    if not x > 0:
        raise ValueError(f"expected a positive number, got {v!r}")
    return x


def _prob(v: str) -> float:
    x = float(v)
    if not 0.0 <= x < 1.0:
        raise ValueError(f"expected a probability in [0, 1), got {v!r}")
    return x


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
    try:
        return str(parse_spec(unescape_norm(v)))
    except ValueError as e:
        raise ValueError(str(e)) from None


@dataclass(frozen=True)
class ModelOption:
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModelInfo:
    """One model family: its name, what it is, and the options its spec takes."""

    name: str
    summary: str
    options: tuple[ModelOption, ...] = field(default_factory=tuple)


_ACTS = ("relu", "gelu", "tanh", "silu", "identity")
_NORM = ModelOption("norm", _norm, "layernorm",
                    "any norm registry spec, nested as name;opt=v;... or [name:opt=v,...]")

_MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo("mlp", "MLP: Linear->Norm->act stacks, or pre/post/branch residual blocks", (
            ModelOption("depth", _pos_int, 4, "number of hidden blocks"),
            ModelOption("width", _pos_int, 256, "hidden width"),
            _NORM,
            ModelOption("residual", str, "none", "where the norm sits",
                        ("none", "pre", "post", "branch")),
            ModelOption("final_norm", parse_bool, False, "a norm before the readout"),
            ModelOption("act", str, "relu", "activation", _ACTS),
            ModelOption("mlp_ratio", _pos_float, 1.0,
                        "hidden width of a residual branch F, as a multiple of width"),
            ModelOption("bias", parse_bool, True, "biases in the Linear layers"),
        )),
        ModelInfo("lnnet", "LN-Net (Ni et al. 2024): Linear and norm alternating, no activation", (
            ModelOption("depth", _pos_int, 6, "number of Linear->Norm layers"),
            ModelOption("width", _pos_int, 3, "width of every layer"),
            _NORM,
            ModelOption("bias", parse_bool, True, "biases in the Linear layers"),
        )),
        ModelInfo("transformer", "Transformer encoder classifier (tokens or ViT-style patches)", (
            ModelOption("layers", _pos_int, 6, "number of blocks"),
            ModelOption("dim", _pos_int, 128, "model width"),
            ModelOption("heads", _pos_int, 4, "attention heads; must divide dim"),
            ModelOption("ln", str, "pre", "norm placement", ("pre", "post")),
            ModelOption("mlp_ratio", _pos_float, 4.0, "FFN hidden width / dim"),
            ModelOption("dropout", _prob, 0.0, "dropout on attention and residual branches"),
            ModelOption("pool", str, "cls", "CLS token or mean over tokens", ("cls", "mean")),
            ModelOption("patch", _pos_int, 4,
                        "patch size for real-valued inputs (per side for images)"),
            _NORM,
            ModelOption("final_norm", _auto_bool, "auto",
                        "norm before the head: auto = yes for ln=pre, no for ln=post",
                        ("auto", "true", "false")),
            ModelOption("embed_norm", parse_bool, False, "norm after the embedding (BERT style)"),
            ModelOption("act", str, "gelu", "FFN activation", _ACTS),
            ModelOption("causal", parse_bool, False,
                        "causal attention and per-position logits (a language model)"),
        )),
        ModelInfo("cnn", "small CNN; its norm acts over channels at each position", (
            ModelOption("channels", _pos_int, 32, "channels of every conv layer"),
            ModelOption("layers", _pos_int, 3, "number of conv blocks"),
            _NORM,
            ModelOption("kernel", _pos_int, 3, "kernel size (odd)"),
            ModelOption("act", str, "relu", "activation", _ACTS),
            ModelOption("downsample", parse_bool, True,
                        "max-pool by 2 after each block while the size allows"),
        )),
    )
}

_ALIASES = {"vit": "transformer", "ln_net": "lnnet", "ln-net": "lnnet", "convnet": "cnn"}


def available_models() -> list[str]:
    """Names of the reference model families."""
    return list(_MODELS)


def describe_models() -> list[ModelInfo]:
    """Model families with their options, for documentation and the CLI."""
    return list(_MODELS.values())


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) < 1e15 else repr(v)
    return str(v)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: canonical name and typed options (defaults filled in).

    Nested norm specs are stored canonically in registry form (``"groupln:groups=4"``).
    """

    name: str
    options: dict[str, Any]

    def _items(self, full: bool) -> list[str]:
        out = []
        for o in _MODELS[self.name].options:
            v = self.options[o.name]
            if not full and v == o.default:
                continue
            out.append(f"{o.name}={escape_norm(v) if o.name == 'norm' else _fmt(v)}")
        return out

    def __str__(self) -> str:
        items = self._items(full=False)
        return self.name + (":" + ",".join(items) if items else "")

    def full(self) -> str:
        """Every option spelled out, in declaration order: stable input for a hash."""
        return self.name + ":" + ",".join(self._items(full=True))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}

    def __hash__(self) -> int:  # options is a dict; hash the canonical full string
        return hash(self.full())


def _split_top(rest: str) -> list[str]:
    """Split on commas that are not inside ``[...]``."""
    parts, depth, cur = [], 0, []
    for ch in rest:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_model_spec(spec: str | ModelSpec) -> ModelSpec:
    """Parse ``"name[:opt=value,...]"``; unknown names or options raise LnlabError that lists
    the valid ones."""
    if isinstance(spec, ModelSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise LnlabError(f"a model spec must be a non-empty string, got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _MODELS:
        raise LnlabError(f"unknown model {name!r}; valid models: {', '.join(available_models())}")
    info = _MODELS[key]
    opts = {o.name: o for o in info.options}
    values = {o.name: o.default for o in info.options}
    for item in _split_top(rest):
        k, eq, raw = item.partition("=")
        k = k.strip()
        if not eq:
            raise LnlabError(f"model option {item!r} in {spec!r} must look like name=value")
        if k not in opts:
            raise LnlabError(
                f"unknown option {k!r} for model {key!r}; valid options: {', '.join(opts)}"
            )
        opt = opts[k]
        if not raw.isascii():  # int() would read full-width and other Unicode digits
            raise LnlabError(f"bad value for {key} option {k!r}: {raw.strip()!r} is not ASCII")
        try:
            val = opt.type(raw.strip())
        except ValueError as e:
            raise LnlabError(f"bad value for {key} option {k!r}: {e}") from None
        if opt.choices and val not in opt.choices:
            raise LnlabError(f"{key} option {k} must be one of {', '.join(opt.choices)}, "
                             f"got {raw.strip()!r}")
        values[k] = val
    return ModelSpec(key, values)
