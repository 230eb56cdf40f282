"""Norm surgery on any ``nn.Module``: find the norms, strip their affine parameters, swap them.

>>> sites = find_norms(model)                       # forward-ordered NormSite list
>>> print(strip_affine(model, "early"))             # Singhal & Kim's "LN removal", early blocks
>>> print(swap_norms(model, "adanorm", "blocks"))   # Xu et al.'s variant in every block

What counts as a norm is decided in one place, :func:`lnlab.norms.norm_form`: every class of the
norm table, torch's norms, and any class whose name ends in ``LayerNorm`` or ``RMSNorm`` and that
holds a ``weight`` tensor (Hugging Face's ``Qwen2RMSNorm``, ``LlamaRMSNorm``, ``T5LayerNorm``,
...). Surgery's sites are the norms that act on each sample's trailing features (family
``layer``, and lnlab's ``none`` placeholder); torch's channel norms (``GroupNorm``,
``BatchNorm``) are norms but not sites. The search never descends into a site.

Blocks come from the model's own numbering, not from counting: a site named
``encoder.layer.3.output.LayerNorm`` is in block 3 of the stack ``encoder.layer`` (an
``nn.ModuleList`` is preferred as the stack; an encoder-decoder has two stacks). With ``N``
blocks, block ``i`` is ``early``/``middle``/``later`` when the centre ``(i + 1/2) / N`` lies in
the first/middle/last third (exact thirds when 3 divides N: Singhal & Kim's groups). A norm
outside the blocks is ``embedding`` if it runs before a stack and ``final`` if it runs after one.

Hugging Face models keep their surgery: it is recorded in ``model.config`` and saved with it.
:func:`save_pretrained` / :func:`from_pretrained` round-trip a modified model exactly;
:func:`export_plain_hf` writes a checkpoint stock transformers loads unchanged (stripped gains
become 1 and biases 0; swapped variants are refused), and transformers' own
``save_pretrained`` on a modified model warns (:class:`SurgeryNotSavedWarning`).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lnlab.errors import LnlabError
from lnlab.norms import NormForm, NormSpec, is_norm, make_norm, norm_form, parse_spec
from lnlab.norms.registry import explicit_options

__all__ = [
    "GROUPS",
    "Change",
    "NormSite",
    "Placement",
    "SurgeryNotSavedWarning",
    "SurgeryReport",
    "export_plain_hf",
    "find_norms",
    "format_sites",
    "from_pretrained",
    "is_norm",
    "norm_placement",
    "save_pretrained",
    "select_sites",
    "strip_affine",
    "swap_norms",
]

GROUPS = ("early", "middle", "later", "embedding", "final")
"""Site groups; ``where=`` also takes ``all`` and ``blocks`` (= early + middle + later)."""

_WHERE = ("all", "blocks", *GROUPS)


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

def _site_form(m: nn.Module) -> NormForm | None:
    """The norm form of ``m`` if surgery treats it as a site (module doc), else None."""
    form = norm_form(m)
    return form if form is not None and form.trailing else None


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
    form = norm_form(m)
    v = getattr(m, form.eps_attr) if form is not None and form.eps_attr else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _is_param(m: nn.Module, name: str) -> bool:
    return isinstance(m._parameters.get(name), nn.Parameter)


def _walk(module: nn.Module, prefix: str, seen: set[int]) -> Iterator[tuple[str, nn.Module]]:
    for name, child in module._modules.items():
        if child is None or id(child) in seen:
            continue
        seen.add(id(child))
        full = f"{prefix}.{name}" if prefix else name
        if _site_form(child) is not None:
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
    root = _site_form(model) is not None
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
        form = _site_form(m)
        assert form is not None
        st, idx = stacks.get(name, (None, None))
        sites.append(NormSite(
            name=name, cls=form.cls, kind=form.kind, source=form.source, shape=_shape(m),
            eps=_eps(m), has_gain=form.has_gain, has_bias=form.has_bias,
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
    if any(_site_form(m) is not None for m in blocks.values()):
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
    form = norm_form(m)
    name = form.cls if form is not None else type(m).__name__
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
    form = norm_form(m)
    if (form is not None and form.source == "lnlab") or type(m).forward in _NATIVE_FORWARDS:
        # These forwards (the norm table's classes too, by contract) accept weight=None and
        # bias=None and then skip the affine step.
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
    _record_surgery(model, [(c.site, {"op": "strip_affine"}) for c in report.changes])
    return report


# --------------------------------------------------------------------------- swap

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
    if _site_form(model) is not None:
        raise LnlabError("swap_norms needs a model that contains norms, not a norm itself")
    try:
        ns = parse_spec(spec)
    except ValueError as e:
        raise LnlabError(str(e)) from None
    explicit = explicit_options(spec)
    report = SurgeryReport(f"swap_norms({ns})")
    swapped: list[tuple[str, dict[str, Any]]] = []
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
        swapped.append((s.name, {"op": "swap_norms", "norm": ns.name, "options": opts}))
    _record_surgery(model, swapped)
    return report


# --------------------------------------------------------------------------- HF save / load
#
# Surgery on a Hugging Face model is recorded in ``model.config.lnlab_surgery`` (so it travels
# with every ``save_pretrained``), as site names relative to the outermost HF model that holds
# them. ``from_pretrained`` rebuilds the architecture, replays the record and then loads the
# weights; ``export_plain_hf`` writes what stock transformers can load unchanged.

_RECORD_KEY = "lnlab_surgery"


class SurgeryNotSavedWarning(UserWarning):
    """A surgically modified HF model was saved in a way transformers alone cannot reload."""


def _transformers_module() -> Any:
    import sys

    return sys.modules.get("transformers")


def _is_hf_model(m: nn.Module) -> bool:
    tf = _transformers_module()
    return tf is not None and isinstance(m, tf.PreTrainedModel)


def _hf_root(model: nn.Module, site: str) -> tuple[str, nn.Module] | None:
    """The outermost HF model inside ``model`` whose subtree holds ``site``: (prefix, module)."""
    for prefix, m in model.named_modules():  # parents come before children
        if _is_hf_model(m) and (not prefix or site == prefix or site.startswith(prefix + ".")):
            return prefix, m
    return None


def _warning_save(self: Any, *args: Any, **kwargs: Any) -> Any:
    warnings.warn(
        f"{type(self).__name__} was changed by lnlab surgery; transformers' from_pretrained "
        "rebuilds the unmodified architecture from this checkpoint (swapped norms come back as "
        "the original class, stripped gains as trainable). Reload it with "
        "lnlab.surgery.from_pretrained(path), or write a checkpoint that transformers loads "
        "unchanged with lnlab.surgery.export_plain_hf(model, path).",
        SurgeryNotSavedWarning, stacklevel=2)
    return type(self)._lnlab_plain_class.save_pretrained(self, *args, **kwargs)


def _reduce_marked(self: Any, protocol: int) -> tuple[Any, ...]:
    # The per-instance subclass is not importable; pickle (and deepcopy) the plain class
    # and mark the copy again.
    return (_restore_marked, (type(self)._lnlab_plain_class,), self.__dict__.copy())


def _restore_marked(plain: type) -> nn.Module:
    obj = plain.__new__(plain)
    _mark_modified(obj)
    return obj


def _mark_modified(hf: nn.Module) -> None:
    """Give one HF model instance a subclass (same name) whose save_pretrained warns."""
    cls = type(hf)
    if "_lnlab_plain_class" in cls.__dict__:
        return
    sub = type(cls.__name__, (cls,), {"save_pretrained": _warning_save,
                                      "__reduce_ex__": _reduce_marked,
                                      "_lnlab_plain_class": cls,
                                      "__module__": cls.__module__,
                                      "__qualname__": cls.__qualname__})
    hf.__class__ = sub


def _plain_class(hf: nn.Module) -> type:
    return type(hf).__dict__.get("_lnlab_plain_class", type(hf))


def _record_surgery(model: nn.Module, entries: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Append ``(site, op)`` entries to the record of the HF model holding each site."""
    for site, op in entries:
        found = _hf_root(model, site)
        if found is None:
            continue
        prefix, hf = found
        rel = site[len(prefix) + 1:] if prefix else site
        record = getattr(hf.config, _RECORD_KEY, None) or []
        record.append({"root": _plain_class(hf).__name__, "site": rel, **op})
        setattr(hf.config, _RECORD_KEY, record)
        _mark_modified(hf)


def _unwrap_hf(model: nn.Module) -> nn.Module:
    """The outermost HF model in ``model`` (itself, or the one lnlab's HFClassifier wraps)."""
    roots = [m for _, m in model.named_modules() if _is_hf_model(m)]
    if not roots:
        raise LnlabError(f"{type(model).__name__} holds no Hugging Face model")
    return roots[0]


def save_pretrained(model: nn.Module, path: str | Path) -> Path:
    """Save a (possibly surgically modified) HF model, or lnlab's wrapper of one, with its
    surgery record in ``config.json``; reload it with :func:`from_pretrained`."""
    hf = _unwrap_hf(model)
    return _write_checkpoint(lambda d: _plain_class(hf).save_pretrained(hf, d), path)


def _write_checkpoint(write: Callable[[str], Any], path: str | Path) -> Path:
    """Let ``write`` fill a temporary sibling directory, then move each file into ``path``
    with an atomic rename, so a crash never leaves a half-written file there."""
    import os
    import shutil
    import tempfile

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(str(tmp))
        for f in sorted(tmp.iterdir()):  # config.json last: it names the weights
            if f.name != "config.json":
                os.replace(f, out / f.name)
        if (tmp / "config.json").exists():
            os.replace(tmp / "config.json", out / "config.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _site_in(model: nn.Module, entry: Mapping[str, Any]) -> str:
    """The entry's site name inside ``model`` (which may be the record's root or hold it)."""
    site = str(entry["site"])
    if type(model).__name__ == entry.get("root"):
        return site
    for prefix, m in model.named_modules():
        if prefix and type(m).__name__ == entry.get("root"):
            return f"{prefix}.{site}"
    raise LnlabError(f"the surgery record names {entry.get('root')}, which is not part of "
                     f"{type(model).__name__}; save the model the surgery was applied to")


def _replay(model: nn.Module, record: Sequence[Mapping[str, Any]]) -> None:
    for entry in record:
        if not isinstance(entry, Mapping) or "op" not in entry or "site" not in entry:
            raise LnlabError(f"malformed {_RECORD_KEY} entry in the config: {entry!r}")
        site = _site_in(model, entry)

        def only(s: NormSite, name: str = site) -> bool:
            return s.name == name

        if entry["op"] == "strip_affine":
            report = strip_affine(model, only)
        elif entry["op"] == "swap_norms":
            ns = NormSpec(str(entry["norm"]), dict(entry["options"]))
            report = swap_norms(model, ns, only, copy_affine=False)
        else:
            raise LnlabError(f"unknown surgery {entry['op']!r} in the config's {_RECORD_KEY}")
        if len(report) != 1:
            raise LnlabError(f"the recorded {entry['op']} of {site} does not apply to this "
                             "architecture (no such norm site with affine parameters)")


def _load_safetensors(model: nn.Module, files: Sequence[Path]) -> None:
    from safetensors.torch import load_file

    state: dict[str, Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise LnlabError(f"{f}: not a readable safetensors file ({e}); move it aside and "
                             "save the model again") from None
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise LnlabError(f"the checkpoint has weights the rebuilt model lacks: "
                         f"{', '.join(result.unexpected_keys[:5])}")
    loaded = {t.data_ptr() for k, t in model.state_dict().items() if k in state}
    own = model.state_dict()
    untied = [k for k in result.missing_keys if own[k].data_ptr() not in loaded]
    if untied:
        raise LnlabError(f"the checkpoint lacks weights of the rebuilt model: "
                         f"{', '.join(untied[:5])}")


def from_pretrained(path: str | Path) -> nn.Module:
    """Rebuild an HF model saved after lnlab surgery, exactly: architecture from the config,
    the recorded surgery replayed in order, then the weights (safetensors only; no remote code).

    A checkpoint without a record loads as the plain model. Returns the model in eval mode.
    """
    from lnlab.models.hf import _transformers, checkpoint_files, load_config, read_config_dict

    tf = _transformers()
    record = read_config_dict(path).get(_RECORD_KEY) or []
    if not isinstance(record, list):
        raise LnlabError(f"{path}: {_RECORD_KEY} in config.json must be a list")
    cfg = load_config(path)
    if hasattr(cfg, _RECORD_KEY):
        delattr(cfg, _RECORD_KEY)  # replaying records it again
    arch = (getattr(cfg, "architectures", None) or [None])[0]
    cls = getattr(tf, arch, None) if isinstance(arch, str) else None
    if not (isinstance(cls, type) and issubclass(cls, tf.PreTrainedModel)):
        cls = tf.AutoModel
    model = cls.from_config(cfg) if cls is tf.AutoModel else cls._from_config(cfg)
    _replay(model, record)
    files = checkpoint_files(path)
    if not files:
        raise LnlabError(f"{path}: no model.safetensors to load")
    _load_safetensors(model, files)
    return model.eval()


def export_plain_hf(model: nn.Module, path: str | Path) -> Path:
    """Write a checkpoint that stock ``transformers.AutoModel*.from_pretrained`` loads into a
    model computing exactly what ``model`` computes.

    Stripped sites are written as gain 1 (or the class's neutral stored gain) and bias 0;
    swapped sites cannot be expressed in the original architecture, so they are refused.
    """
    hf = _unwrap_hf(model)
    record = getattr(hf.config, _RECORD_KEY, None) or []
    swapped = [e["site"] for e in record if e.get("op") == "swap_norms"]
    if swapped:
        raise LnlabError(
            f"cannot export a plain transformers checkpoint: {len(swapped)} norm site(s) were "
            f"swapped to another variant (first: {swapped[0]}), which "
            f"{_plain_class(hf).__name__} cannot express; save it with "
            "lnlab.surgery.save_pretrained and reload it with lnlab.surgery.from_pretrained")
    cfg = copy.deepcopy(hf.config)
    if hasattr(cfg, _RECORD_KEY):
        delattr(cfg, _RECORD_KEY)
    plain = _plain_class(hf)._from_config(cfg)
    ref = next(hf.parameters())
    plain.to(device=ref.device, dtype=ref.dtype)
    state = dict(hf.state_dict())
    for entry in record:
        site = _site_in(hf, entry)
        m = hf.get_submodule(site)
        for p, neutral in (("weight", 1.0), ("bias", 0.0)):
            key = f"{site}.{p}"
            if key in state or key not in plain.state_dict():
                continue
            held = getattr(m, p, None)  # a buffer holds the class's own neutral value
            target = plain.state_dict()[key]
            state[key] = (held.detach().clone() if isinstance(held, Tensor)
                          else torch.full_like(target, neutral))
    plain.load_state_dict(state, strict=True)
    return _write_checkpoint(plain.save_pretrained, path)
