"""Norm surgery on any ``nn.Module``: find the norms, strip their affine parameters, swap them.

>>> sites = find_norms(model)                       # forward-ordered NormSite list
>>> print(strip_affine(model, "early"))             # Singhal & Kim's "LN removal", early blocks
>>> print(swap_norms(model, "adanorm", "blocks"))   # Xu et al.'s variant in every block

What counts as a norm: ``torch.nn.LayerNorm``/``RMSNorm`` (and subclasses), every lnlab norm
class, and any class whose name ends in ``LayerNorm`` or ``RMSNorm`` and that holds a ``weight``
tensor (Hugging Face's ``Qwen2RMSNorm``, ``LlamaRMSNorm``, ``T5LayerNorm``, ...). The search
never descends into a norm.

Blocks come from the model's own numbering, not from counting: a site named
``encoder.layer.3.output.LayerNorm`` is in block 3 of the stack ``encoder.layer`` (an
``nn.ModuleList`` is preferred as the stack; an encoder-decoder has two stacks). With ``N``
blocks, block ``i`` is ``early``/``middle``/``later`` when the centre ``(i + 1/2) / N`` lies in
the first/middle/last third (exact thirds when 3 divides N: Singhal & Kim's groups). A norm
outside the blocks is ``embedding`` if it runs before a stack and ``final`` if it runs after one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lnlab.errors import LnlabError
from lnlab.norms import LNLAB_NORM_TYPES, NormSpec, make_norm, parse_spec
from lnlab.norms import modules as _lm

__all__ = [
    "GROUPS",
    "Change",
    "NormSite",
    "Placement",
    "SurgeryReport",
    "find_norms",
    "format_sites",
    "is_norm",
    "norm_placement",
    "select_sites",
    "strip_affine",
    "swap_norms",
]

GROUPS = ("early", "middle", "later", "embedding", "final")
"""Site groups; ``where=`` also takes ``all`` and ``blocks`` (= early + middle + later)."""

_WHERE = ("all", "blocks", *GROUPS)

_LNLAB_KIND: dict[type, str] = {
    _lm.LayerNormSimple: "layernorm_simple",
    _lm.LayerNorm: "layernorm",
    _lm.DetachNorm: "detachnorm",
    _lm.AdaNorm: "adanorm",
    _lm.GroupLayerNorm: "groupln",
    _lm.RMSNorm: "rmsnorm",
    _lm.NoNorm: "none",
}

# Hugging Face classes named "...LayerNorm" that are really RMS norms (no centering).
_RMS_NAMED_LAYERNORM = ("T5LayerNorm", "Pix2StructLayerNorm", "Pop2PianoLayerNorm",
                        "SwitchTransformersLayerNorm", "UdopLayerNorm")


@dataclass
class NormSite:
    """One norm in a model, as :func:`find_norms` sees it."""

    name: str
    """Qualified module name (``model.get_submodule(name)``)."""
    cls: str
    """Where the class comes from and its name: ``torch.nn.LayerNorm``, ``lnlab.AdaNorm``,
    ``transformers.Qwen2RMSNorm``, ..."""
    kind: str
    """What it computes: ``layernorm`` or ``rmsnorm`` (torch and Hugging Face classes), or the
    lnlab registry name (``adanorm``, ``groupln``, ...)."""
    source: str
    """``torch``, ``lnlab``, ``hf`` (defined in ``transformers``) or ``custom``."""
    shape: tuple[int, ...]
    eps: float | None
    has_gain: bool
    """A trainable ``weight`` (gain) parameter is present."""
    has_bias: bool
    """A trainable ``bias`` parameter is present."""
    block: int | None
    """Index in the model's own layer numbering (``layer.3`` -> 3); None outside the blocks."""
    n_blocks: int | None
    stack: str | None
    """Qualified name of the numbered container holding the block (``encoder.layer``)."""
    group: str
    """``early``, ``middle``, ``later``, ``embedding`` or ``final``."""
    order: int
    """Position in forward order (0 = first norm applied)."""
    called: bool | None = None
    """With an example input: whether the forward pass used this norm (None: not traced)."""
    module: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in self.__dict__.items() if k != "module"}


@dataclass(frozen=True)
class Placement:
    """Where the norms sit relative to the residual stream, and how that was decided."""

    kind: str
    """``pre``, ``post``, ``branch``, ``none`` (no residual) or ``unknown``."""
    evidence: str

    @property
    def label(self) -> str:
        return {"pre": "Pre-LN", "post": "Post-LN", "branch": "branch-norm (h + LN(F(h)))",
                "none": "no residual stream", "unknown": "unknown"}[self.kind]

    def __str__(self) -> str:
        return f"{self.label} ({self.evidence})"


@dataclass(frozen=True)
class Change:
    """One edit made by a surgery call."""

    site: str
    before: str
    after: str
    params_removed: int = 0
    note: str = ""


@dataclass
class SurgeryReport:
    """What a surgery call changed; prints as a table, iterates over :class:`Change`."""

    operation: str
    changes: list[Change] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(site, reason) for selected sites left as they were."""

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def __getitem__(self, i: int) -> Change:
        return self.changes[i]

    @property
    def params_removed(self) -> int:
        return sum(c.params_removed for c in self.changes)

    def to_dict(self) -> dict[str, Any]:
        return {"operation": self.operation, "params_removed": self.params_removed,
                "changes": [c.__dict__ for c in self.changes],
                "skipped": [{"site": s, "reason": r} for s, r in self.skipped]}

    def __str__(self) -> str:
        head = (f"{self.operation}: {len(self.changes)} site(s) changed, "
                f"{self.params_removed} trainable parameter(s) removed")
        rows = [("site", "before", "after", "note")]
        rows += [(c.site, c.before, c.after, c.note) for c in self.changes]
        lines = [head, *_table(rows)] if self.changes else [head]
        lines += [f"  skipped {s}: {r}" for s, r in self.skipped]
        return "\n".join(lines)


def _table(rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    out = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
           for r in cells]
    out.insert(1, "  " + "  ".join("-" * w for w in widths))
    return out


# --------------------------------------------------------------------------- recognition

def _classify(m: nn.Module) -> tuple[str, str, str] | None:
    """(cls, kind, source) if ``m`` is a norm, else None."""
    t = type(m)
    if isinstance(m, LNLAB_NORM_TYPES):
        kind = next(k for c, k in _LNLAB_KIND.items() if isinstance(m, c))
        return f"lnlab.{t.__name__}", kind, "lnlab"
    mod = t.__module__ or ""
    source = ("torch" if mod.startswith("torch.") else
              "hf" if mod.startswith("transformers") else "custom")
    prefix = {"torch": "torch.nn", "hf": "transformers"}.get(source, mod)
    if isinstance(m, nn.LayerNorm):
        return f"{prefix}.{t.__name__}", "layernorm", source
    if hasattr(nn, "RMSNorm") and isinstance(m, nn.RMSNorm):
        return f"{prefix}.{t.__name__}", "rmsnorm", source
    lname = t.__name__.lower()
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
    rms = "rms" in lname or any(t.__name__.endswith(n) for n in _RMS_NAMED_LAYERNORM)
    return f"{prefix}.{t.__name__}", "rmsnorm" if rms else "layernorm", source


def is_norm(module: nn.Module) -> bool:
    """Whether surgery treats ``module`` as a norm site."""
    return _classify(module) is not None


def _shape(m: nn.Module) -> tuple[int, ...]:
    ns = getattr(m, "normalized_shape", None)
    if ns is not None:
        return (int(ns),) if isinstance(ns, int) else tuple(int(s) for s in ns)
    w = getattr(m, "weight", None)
    if isinstance(w, Tensor):
        return tuple(w.shape)
    hs = getattr(m, "hidden_size", None)
    return (int(hs),) if isinstance(hs, int) else ()


def _eps(m: nn.Module) -> float | None:
    for attr in ("eps", "variance_epsilon", "epsilon"):
        v = getattr(m, attr, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _is_param(m: nn.Module, name: str) -> bool:
    return isinstance(m._parameters.get(name), nn.Parameter)


def _walk(module: nn.Module, prefix: str, seen: set[int]) -> Iterator[tuple[str, nn.Module]]:
    for name, child in module._modules.items():
        if child is None or id(child) in seen:
            continue
        seen.add(id(child))
        full = f"{prefix}.{name}" if prefix else name
        if _classify(child) is not None:
            yield full, child
        else:
            yield from _walk(child, full, seen)


# --------------------------------------------------------------------------- blocks

def _find_stacks(model: nn.Module, names: list[str],
                 own_index: bool = False) -> dict[str, tuple[str, int]]:
    """Map site name -> (stack, block index) from numeric path components.

    A norm that is itself a numbered child (``nn.Sequential(Linear, LayerNorm, ...)``) only
    counts when nothing else is numbered (``own_index``): then its position is its block.
    """
    cands: dict[str, dict[int, set[str]]] = {}
    for n in names:
        parts = n.split(".")
        for j, p in enumerate(parts if own_index else parts[:-1]):
            if p.isdigit():
                cands.setdefault(".".join(parts[:j]), {}).setdefault(int(p), set()).add(n)
    assigned: dict[str, tuple[str, int]] = {}
    chosen: list[str] = []

    def related(a: str, b: str) -> bool:
        return a == b or a == "" or b == "" or a.startswith(b + ".") or b.startswith(a + ".")

    while True:
        best, best_key = None, None
        for cont, idx in cands.items():
            if any(related(cont, c) for c in chosen):
                continue
            rem = {i: {s for s in ss if s not in assigned} for i, ss in idx.items()}
            rem = {i: ss for i, ss in rem.items() if ss}
            if not rem:
                continue
            mod = model.get_submodule(cont) if cont else model
            is_list = isinstance(mod, nn.ModuleList)
            if len(rem) < 2 and not is_list:
                continue
            key = (is_list, len(rem), sum(map(len, rem.values())), -cont.count("."))
            if best_key is None or key > best_key:
                best, best_key = cont, key
        if best is None:
            if not assigned and not own_index:
                return _find_stacks(model, names, own_index=True)
            return assigned
        chosen.append(best)
        for i, ss in cands[best].items():
            for s in ss:
                assigned.setdefault(s, (best, i))


def _n_blocks(model: nn.Module, stack: str, indices: Iterable[int]) -> int:
    mod = model.get_submodule(stack) if stack else model
    if isinstance(mod, (nn.ModuleList, nn.Sequential)):
        return len(mod)
    return max(indices) + 1


def _third(i: int, n: int) -> str:
    return ("early", "middle", "later")[min(2, math.floor(3 * (i + 0.5) / n))]


# --------------------------------------------------------------------------- tracing

def _call(model: nn.Module, example: Any) -> Any:
    if isinstance(example, Mapping):
        return model(**example)
    if isinstance(example, (tuple, list)):
        return model(*example)
    return model(example)


def _first_tensor(x: Any) -> Tensor | None:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, Mapping):
        x = list(x.values())
    if isinstance(x, (tuple, list)):
        for v in x:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


@dataclass
class _Trace:
    order: dict[str, int] = field(default_factory=dict)
    norm_in: dict[str, Tensor] = field(default_factory=dict)
    norm_out: dict[str, Tensor] = field(default_factory=dict)
    block_in: dict[tuple[str, int], Tensor] = field(default_factory=dict)
    block_out: dict[tuple[str, int], Tensor] = field(default_factory=dict)


def _trace(model: nn.Module, example: Any, norms: list[tuple[str, nn.Module]],
           blocks: dict[tuple[str, int], nn.Module]) -> _Trace:
    """Run one forward pass with hooks; eval mode but grad on (so torch's fused encoder fast
    path, which skips the norm modules, stays off); every module's mode is restored."""
    tr = _Trace()
    handles = []

    def norm_hook(name: str):
        def hook(_m, args, out):
            if name not in tr.order:
                tr.order[name] = len(tr.order)
                tr.norm_in[name] = _first_tensor(args)
                tr.norm_out[name] = _first_tensor(out)
        return hook

    def block_pre(key: tuple[str, int]):
        def hook(_m, args, kwargs):
            if key not in tr.block_in:
                t = _first_tensor(args)
                tr.block_in[key] = t if t is not None else _first_tensor(kwargs)
        return hook

    def block_post(key: tuple[str, int]):
        def hook(_m, _args, out):
            if key not in tr.block_out:
                tr.block_out[key] = _first_tensor(out)
        return hook

    modes = {m: m.training for m in model.modules()}
    try:
        for name, m in norms:
            handles.append(m.register_forward_hook(norm_hook(name)))
        for key, m in blocks.items():
            handles.append(m.register_forward_pre_hook(block_pre(key), with_kwargs=True))
            handles.append(m.register_forward_hook(block_post(key)))
        model.eval()
        with torch.enable_grad():
            _call(model, example)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return tr


# --------------------------------------------------------------------------- find

def _collect(model: nn.Module, example_input: Any = None
             ) -> tuple[list[NormSite], _Trace | None, dict[tuple[str, int], nn.Module]]:
    root = _classify(model) is not None
    found = [("", model)] if root else list(_walk(model, "", {id(model)}))
    stacks = _find_stacks(model, [n for n, _ in found])
    by_stack: dict[str, set[int]] = {}
    for st, i in stacks.values():
        by_stack.setdefault(st, set()).add(i)
    nblocks = {st: _n_blocks(model, st, idx) for st, idx in by_stack.items()}
    blocks = {(st, i): model.get_submodule(f"{st}.{i}" if st else str(i))
              for st, idx in by_stack.items() for i in idx}
    trace = None
    order = list(range(len(found)))
    if example_input is not None:
        trace = _trace(model, example_input, found, blocks)
        # forward order for the norms that ran, registration order for the rest after them
        order = sorted(range(len(found)),
                       key=lambda k: (trace.order.get(found[k][0], len(found) + k)))
    sites: list[NormSite] = []
    for pos, k in enumerate(order):
        name, m = found[k]
        cls, kind, source = _classify(m)  # type: ignore[misc]
        st, idx = stacks.get(name, (None, None))
        sites.append(NormSite(
            name=name, cls=cls, kind=kind, source=source, shape=_shape(m), eps=_eps(m),
            has_gain=_is_param(m, "weight"), has_bias=_is_param(m, "bias"),
            block=idx, n_blocks=nblocks.get(st) if st is not None else None, stack=st,
            group=_third(idx, nblocks[st]) if st is not None else "", order=pos,
            called=(name in trace.order) if trace is not None else None, module=m,
        ))
    _assign_outside(sites)
    return sites, trace, blocks


def _assign_outside(sites: list[NormSite]) -> None:
    """Name the groups of sites outside the blocks by where they run relative to a stack."""
    in_block = [s.order for s in sites if s.stack is not None]
    for s in sites:
        if s.stack is not None:
            continue
        if not in_block or s.order < min(in_block):
            s.group = "embedding"
            continue
        if s.order > max(in_block):
            s.group = "final"
            continue
        prev = max((t for t in sites if t.stack is not None and t.order < s.order),
                   key=lambda t: t.order)
        s.group = "final" if prev.block == (prev.n_blocks or 0) - 1 else "embedding"


def find_norms(model: nn.Module, example_input: Any = None) -> list[NormSite]:
    """Every norm site of ``model`` in forward order.

    Without ``example_input`` the order is module registration order. With it (a tensor, a
    tuple of positional arguments or a dict of keyword arguments), one forward pass with hooks
    checks that order: sites are returned in the order they actually ran, unused ones last with
    ``called=False``.
    """
    return _collect(model, example_input)[0]


def format_sites(sites: Sequence[NormSite]) -> str:
    """A plain-text table of sites (for logs; the CLI prints a rich table)."""
    rows = [("#", "name", "class", "shape", "eps", "gain", "bias", "block", "group")]
    for s in sites:
        blk = "-" if s.block is None else f"{s.block}/{s.n_blocks}"
        rows.append((s.order, s.name or "(root)", s.cls, "x".join(map(str, s.shape)),
                     "-" if s.eps is None else f"{s.eps:g}", "yes" if s.has_gain else "no",
                     "yes" if s.has_bias else "no", blk, s.group))
    return "\n".join(_table(rows))


# --------------------------------------------------------------------------- placement

def _same(a: Tensor | None, b: Tensor | None) -> bool:
    return (a is not None and b is not None and a.shape == b.shape
            and bool(torch.equal(a.detach(), b.detach())))


def norm_placement(model: nn.Module, example_input: Any = None) -> Placement:
    """Pre-LN or Post-LN? Decided, in this order, by what the model declares (lnlab's
    ``norm_placement``, torch's ``norm_first``), by a traced forward pass when an example input
    is given (Pre-LN: each block's first norm reads the block input; Post-LN: each block's
    last norm writes the block output), or by structure (a final norm after the last block
    means Pre-LN)."""
    declared = getattr(model, "norm_placement", None)
    if declared in ("pre", "post", "branch", "none"):
        return Placement(declared, "declared by the model")
    sites, trace, blocks = _collect(model, example_input)
    block_sites = [s for s in sites if s.stack is not None]
    if not block_sites:
        return Placement("unknown", "no norms inside numbered blocks")
    if any(_classify(m) is not None for m in blocks.values()):
        return Placement("unknown", "the norms are layers of a plain stack, not inside blocks")
    firsts = {getattr(m, "norm_first", None) for m in blocks.values()}
    if firsts in ({True}, {False}):
        nf = firsts.pop()
        return Placement("pre" if nf else "post", f"blocks declare norm_first={nf}")
    if trace is not None:
        pre, post = [], []
        for key in blocks:
            mine = sorted((s for s in block_sites if (s.stack, s.block) == key and s.called),
                          key=lambda s: s.order)
            if not mine:
                continue
            pre.append(_same(trace.norm_in.get(mine[0].name), trace.block_in.get(key)))
            post.append(_same(trace.norm_out.get(mine[-1].name), trace.block_out.get(key)))
        if pre and all(pre) and not any(post):
            return Placement("pre", "traced: each block's first norm reads the block input")
        if post and all(post) and not any(pre):
            return Placement("post", "traced: each block's last norm writes the block output")
    if any(s.group == "final" for s in sites):
        return Placement("pre", "a final norm follows the last block")
    return Placement("post", "no final norm after the blocks")


# --------------------------------------------------------------------------- selection

def select_sites(sites: Sequence[NormSite],
                 where: str | Sequence[str] | Callable[[NormSite], bool] = "all"
                 ) -> list[NormSite]:
    """Sites chosen by a group name (``all``, ``blocks``, ``early``, ``middle``, ``later``,
    ``embedding``, ``final``), a list of them, or a predicate on a :class:`NormSite`."""
    if callable(where):
        return [s for s in sites if where(s)]
    names = [where] if isinstance(where, str) else list(where)
    wanted: set[str] = set()
    for w in names:
        key = str(w).strip().lower()
        if key not in _WHERE:
            raise LnlabError(f"unknown site group {w!r}; valid: {', '.join(_WHERE)}")
        wanted |= set(GROUPS) if key == "all" else (
            {"early", "middle", "later"} if key == "blocks" else {key})
    return [s for s in sites if s.group in wanted]


def _describe(m: nn.Module) -> str:
    c = _classify(m)
    name = c[0] if c else type(m).__name__
    parts = ["x".join(map(str, _shape(m)))]
    eps = _eps(m)
    if eps is not None:
        parts.append(f"eps={eps:g}")
    aff = [p for p in ("weight", "bias") if _is_param(m, p)]
    parts.append("affine=" + ("+".join(aff) if aff else "none"))
    return f"{name}({', '.join(parts)})"


# --------------------------------------------------------------------------- strip

def _ref_norm(x: Tensor, shape: tuple[int, ...], eps: float, center: bool) -> Tensor:
    dims = tuple(range(-len(shape), 0))
    x = x.double()
    if center:
        x = x - x.mean(dims, keepdim=True)
    return x / torch.sqrt(x.square().mean(dims, keepdim=True) + eps)


def _neutral_gain(m: nn.Module, shape: tuple[int, ...], eps: float | None) -> float:
    """The stored gain value that makes an unknown class's gain a no-op: 1 for ``w * y``,
    0 for Gemma-style ``(1 + w) * y``. Found by probing a copy of the module."""
    probe = copy.deepcopy(m)
    w = probe._parameters["weight"]
    ref_dtype = w.dtype if w.is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((4, *shape), generator=gen, dtype=torch.float64).to(w.device, ref_dtype)
    refs = [_ref_norm(x, shape, eps or 0.0, c) for c in (True, False)]
    for value in (1.0, 0.0):
        with torch.no_grad():
            w.fill_(value)
            b = probe._parameters.get("bias")
            if b is not None:
                b.zero_()
            y = _first_tensor(probe(x))
        tol = max(1e-3, 10 * torch.finfo(ref_dtype).eps)  # loose enough for bf16 modules
        if y is not None and any(torch.allclose(y.double(), r, atol=tol, rtol=tol)
                                 for r in refs):
            return value
    raise LnlabError(f"cannot tell how {type(m).__name__} applies its gain, so its affine "
                     "parameters cannot be stripped safely; use swap_norms instead")


_NATIVE_FORWARDS = (nn.LayerNorm.forward, *((nn.RMSNorm.forward,) if hasattr(nn, "RMSNorm")
                                            else ()))


def _strip_module(m: nn.Module, shape: tuple[int, ...], eps: float | None) -> tuple[int, str]:
    """Remove the trainable gain/bias of one norm; returns (#params removed, how)."""
    removed = sum(m._parameters[p].numel() for p in ("weight", "bias") if _is_param(m, p))
    if isinstance(m, LNLAB_NORM_TYPES) or type(m).forward in _NATIVE_FORWARDS:
        # These forwards accept weight=None/bias=None and then skip the affine step.
        for p in ("weight", "bias"):
            if _is_param(m, p):
                setattr(m, p, None)
        if hasattr(m, "elementwise_affine"):
            m.elementwise_affine = False
        return removed, "set to None"
    # Custom forward that reads self.weight / self.bias: fixed, non-trainable buffers.
    neutral = _neutral_gain(m, shape, eps) if _is_param(m, "weight") else 1.0
    for p, value in (("weight", neutral), ("bias", 0.0)):
        if _is_param(m, p):
            old = m._parameters.pop(p)
            m.register_buffer(p, torch.full_like(old.detach(), value), persistent=False)
    how = "buffers (gain=1, bias=0)" if neutral == 1.0 else "buffers (stored gain=0 for 1+w)"
    return removed, how


def strip_affine(model: nn.Module,
                 where: str | Sequence[str] | Callable[[NormSite], bool] = "all",
                 *, example_input: Any = None) -> SurgeryReport:
    """Remove the learnable gain and bias of the selected norm sites.

    The result computes exactly what the model computed with gain 1 and bias 0 (Singhal &
    Kim's "LN removal": the normalisation stays), and those values are no longer trainable:
    they leave ``model.parameters()``. Torch and lnlab norms get ``weight = bias = None``;
    classes with their own forward (Hugging Face's RMSNorms) get non-persistent buffers.
    """
    sites = select_sites(find_norms(model, example_input), where)
    report = SurgeryReport("strip_affine")
    for s in sites:
        m = s.module
        if not (s.has_gain or s.has_bias):
            report.skipped.append((s.name, "no trainable gain or bias"))
            continue
        before = _describe(m)
        n, how = _strip_module(m, s.shape, s.eps)
        how = ", ".join(filter(None, (how, _disable_fused_path(model, s.name))))
        report.changes.append(Change(s.name, before, _describe(m), n, how))
    return report


# --------------------------------------------------------------------------- swap

def _explicit_options(spec: str | NormSpec) -> set[str]:
    if isinstance(spec, NormSpec):
        return set(spec.options)
    _, _, rest = spec.partition(":")
    return {p.split("=", 1)[0].strip() for p in rest.split(",") if "=" in p}


def _disable_fused_path(model: nn.Module, name: str) -> str:
    """torch's ``TransformerEncoderLayer`` has a fused inference path that reads ``norm1.weight``
    etc. directly and never calls the norm modules; after surgery it must be off. Its switch
    is the (otherwise unused) ``activation_relu_or_gelu`` flag."""
    parent = name.rpartition(".")[0]
    owner = model.get_submodule(parent) if parent else model
    if isinstance(owner, nn.TransformerEncoderLayer) and owner.activation_relu_or_gelu:
        owner.activation_relu_or_gelu = 0
        return "torch fused path off"
    return ""


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def swap_norms(model: nn.Module, spec: str | NormSpec,
               where: str | Sequence[str] | Callable[[NormSite], bool] = "all",
               *, example_input: Any = None, copy_affine: bool = True) -> SurgeryReport:
    """Replace the selected norm sites by the registry variant ``spec``.

    Each new module has the site's shape and, unless ``spec`` sets ``eps`` itself, the site's
    eps; it sits on the old module's device and dtype and in its train/eval mode. With
    ``copy_affine`` the gain and bias are copied when both the old and the new module have them.
    """
    if isinstance(model, LNLAB_NORM_TYPES) or _classify(model) is not None:
        raise LnlabError("swap_norms needs a model that contains norms, not a norm itself")
    try:
        ns = parse_spec(spec)
    except ValueError as e:
        raise LnlabError(str(e)) from None
    explicit = _explicit_options(spec)
    report = SurgeryReport(f"swap_norms({ns})")
    for s in select_sites(find_norms(model, example_input), where):
        old = s.module
        opts = dict(ns.options)
        if "eps" in opts and "eps" not in explicit and s.eps is not None:
            opts["eps"] = s.eps
        dim = s.shape[0] if len(s.shape) == 1 else s.shape
        try:
            new = make_norm(NormSpec(ns.name, opts), dim)  # type: ignore[arg-type]
        except ValueError as e:
            raise LnlabError(f"cannot build {ns} for site {s.name} (shape {s.shape}): {e}"
                             ) from None
        ref = next(iter(old.parameters(recurse=False)), None)
        if ref is None:
            ref = next(iter(old.buffers(recurse=False)), None)
        if ref is not None and ref.is_floating_point():
            new = new.to(device=ref.device, dtype=ref.dtype)
        copied, dropped = [], []
        for p in ("weight", "bias"):
            if not _is_param(old, p):
                continue
            same = _is_param(new, p) and new._parameters[p].shape == old._parameters[p].shape
            if copy_affine and same:
                with torch.no_grad():
                    new._parameters[p].copy_(old._parameters[p])
                copied.append("gain" if p == "weight" else "bias")
            else:
                dropped.append("gain" if p == "weight" else "bias")
        new.train(old.training)
        before = _describe(old)
        _set_submodule(model, s.name, new)
        removed = sum(old._parameters[p].numel() for p in ("weight", "bias")
                      if _is_param(old, p)) - sum(new._parameters[p].numel()
                                                  for p in ("weight", "bias")
                                                  if _is_param(new, p))
        note = ", ".join(x for x in (("copied " + "+".join(copied)) if copied else "",
                                     ("dropped " + "+".join(dropped)) if dropped else "",
                                     _disable_fused_path(model, s.name)) if x)
        after = f"{_describe(new)} [{NormSpec(ns.name, opts)}]"
        report.changes.append(Change(s.name, before, after, max(removed, 0), note))
    return report


# --------------------------------------------------------------------------- fold (affine)
# fold_affine lives in its own module (it needs the helpers above); exported from here.
from lnlab.surgery_fold import fold_affine  # noqa: E402

__all__ += ["fold_affine"]
