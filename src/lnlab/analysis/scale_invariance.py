"""Which parameters can weight decay actually constrain?  A numerical scale-invariance audit.

A normalization layer makes everything feeding it positively scale-invariant: N(c·z) = N(z) for
c > 0 (at eps = 0). If a parameter group only reaches the output through such inputs, rescaling
it leaves the function unchanged, so an L2 penalty on it can be driven toward 0 along a
function-preserving path: weight decay cannot regularize it statically (it still acts through
the effective learning rate lr/‖w‖² in training). Whether a group is invariant depends on the
exact block form (pre-/post-norm residuals, final norm, input projection), which is why this
module *measures* it instead of deriving it from the architecture:

1. Groups. A module's direct parameters form one group (a Linear's weight and bias together;
   a norm's gain and bias together). Each group is scaled by every factor c in ``factors`` on a
   float64 copy of the model, once with eps = 0 in every norm and once with the real eps, and
   the max relative output change is recorded.
2. Joint stream group. For each container of repeated blocks (``ModuleList``/``Sequential``) the
   audit looks for the writers of a residual stream: per block, the smallest set of its groups
   S_l with block(c·h; c·S_l) = c·block(h) (tried on the block alone with its captured inputs),
   and before the first block the smallest set S_0 of earlier groups that scales the first
   block's input by c. If every block has one, the union is tested on the whole model like a
   group (it is invariant iff a norm follows the stream, e.g. a final LN).
3. Balancing symmetries. For consecutive groups (g, h) in execution order, and for the stream
   and the first module after it, the audit checks whether g·a with h's weights·1/a (h's biases
   kept) preserves the function (the ReLU / linear rescaling symmetry).
4. Infimum. Every verified symmetry is a vector of log-scale exponents over parameter tensors.
   A tensor can be shrunk to 0 if some non-positive combination of them is negative on it
   (found by propagation); the rest is a small convex problem, min Σ‖θ_u‖²·exp(2(Vt)_u), solved
   by Newton's method. The result is the infimum of Σ‖θ‖² over the symmetries *found*: an upper
   bound on the true infimum when finer symmetries exist (per-unit gains vs readout columns, or
   the bias-only joint groups of post-norm blocks).

Everything is numerical, so it works on any ``nn.Module``: lnlab models,
``torch.nn.TransformerEncoder``, Hugging Face models (pass a dict of inputs; ``logits`` or
``last_hidden_state`` is compared).
"""

from __future__ import annotations

import copy
import inspect
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lnlab.errors import LnlabError
from lnlab.norms import is_norm, norm_form

__all__ = [
    "VERDICTS",
    "AuditReport",
    "GroupResult",
    "Symmetry",
    "angular_update",
    "audit",
    "effective_lr",
    "find_norm_eps",
    "function_change",
    "invariant_groups",
    "li_arora_lr",
    "penalty",
    "rescale_to_min_penalty",
    "set_norm_eps",
    "snapshot",
]

_OUTPUT_KEYS = ("logits", "last_hidden_state", "prediction_logits", "start_logits")
_STRUCT_TOL = 1e-9  # floor of the structural (stream / balancing) tests' tolerance, float64
_STRUCT_FACTORS = (0.37, 2.9)
_MAX_SUBSET = 3
_MAX_PREFIX = 6

VERDICTS = {
    "invariant": "output unchanged at eps=0 (to rtol) and, with the real eps, within approx_rtol",
    "invariant (eps-limited)": "invariant at eps=0, but with the real eps some tested factor "
    "moves the output by more than approx_rtol (the norm's input variance nears eps)",
    "approximately invariant": "changes above rtol but below approx_rtol even at eps=0",
    "not invariant": "rescaling changes the function: weight decay constrains this group",
    "unused": "the output does not depend on these parameters at all",
}
"""What each verdict means (also printed by ``lnlab audit`` and in docs/analyses.md)."""


# ----------------------------------------------------------------------------- helpers


def find_norm_eps(model: nn.Module) -> list[tuple[str, str, float]]:
    """Every norm's eps attribute as (module path, attribute, value); None eps reads as 0.

    A norm is what ``lnlab.norms.norm_form`` recognises (torch's BatchNorm and GroupNorm too).
    """
    found = []
    for name, m in model.named_modules():
        form = norm_form(m)
        if form is None or form.eps_attr is None:
            continue
        v = getattr(m, form.eps_attr)
        found.append((name, form.eps_attr, 0.0 if v is None else float(v)))
    return found


def set_norm_eps(model: nn.Module, value: float) -> int:
    """Set eps of every norm in ``model`` (in place) to ``value``; returns how many were set."""
    n = 0
    mods = dict(model.named_modules())
    for name, attr, _ in find_norm_eps(model):
        setattr(mods[name], attr, float(value))
        n += 1
    return n


def _map_tensors(x: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(x, Tensor):
        return fn(x)
    if isinstance(x, Mapping):
        return {k: _map_tensors(v, fn) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_map_tensors(v, fn) for v in x)
    return x


def _to_double(x: Any) -> Any:
    return _map_tensors(x, lambda t: t.double() if t.is_floating_point() else t)


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (list, tuple)):
        return model(*inputs)
    return model(inputs)


def _primary(out: Any) -> Tensor:
    """The tensor to compare: logits / last_hidden_state of HF outputs, else the first tensor."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        for k in _OUTPUT_KEYS:
            if out.get(k) is not None:
                return out[k]
        for v in out.values():
            if isinstance(v, Tensor):
                return v
    if isinstance(out, (list, tuple)):
        for v in out:
            if isinstance(v, Tensor):
                return v
    raise LnlabError(f"cannot find an output tensor in a {type(out).__name__}")


def _rel_change(ref: Tensor, out: Tensor) -> float:
    if out.shape != ref.shape or not bool(torch.isfinite(out).all()):
        return math.inf
    den = ref.abs().max().item()
    num = (out - ref).abs().max().item()
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def _param_owners(model: nn.Module) -> dict[str, list[str]]:
    """Module path -> names (full) of the parameters it owns directly; shared ones go to the
    first owner, so tied weights are scaled once."""
    seen: set[int] = set()
    owners: dict[str, list[str]] = {}
    for mname, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            owners.setdefault(mname, []).append(f"{mname}.{pname}" if mname else pname)
    return owners


def _params_by_name(model: nn.Module) -> dict[str, nn.Parameter]:
    return dict(model.named_parameters())


@contextmanager
def _scaled(params: Mapping[str, nn.Parameter], exps: Mapping[str, float], c: float) -> Iterator:
    """Temporarily multiply each named tensor by c**exponent (restored exactly afterwards)."""
    saved = {n: params[n].detach().clone() for n in exps}
    try:
        with torch.no_grad():
            for n, e in exps.items():
                params[n].mul_(c**e)
        yield
    finally:
        with torch.no_grad():
            for n, t in saved.items():
                params[n].copy_(t)


def _sq_norm(params: Mapping[str, nn.Parameter], names: Sequence[str]) -> float:
    return float(sum(params[n].detach().double().pow(2).sum().item() for n in names))


def penalty(model: nn.Module) -> float:
    """Σ‖θ‖² over the model's parameters (tied ones once): weight decay's penalty is λ/2 · this."""
    return float(sum(p.detach().double().pow(2).sum().item() for p in model.parameters()))


# ----------------------------------------------------------------------------- results


@dataclass
class GroupResult:
    """One parameter group (or joint group) and how rescaling it moves the output."""

    name: str
    kind: str  # "layer" | "norm" | "embedding" | "joint"
    params: tuple[str, ...]
    sq_norm: float
    change_eps0: dict[float, float]
    change_eps: dict[float, float]
    verdict: str
    can_vanish: bool = False
    inf_sq_norm: float = 0.0

    @property
    def invariant(self) -> bool:
        """Invariant at eps = 0 (with or without the real eps), i.e. weight decay cannot
        constrain it; "unused" groups do not count."""
        return self.verdict.startswith("invariant")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "params": list(self.params),
            "sq_norm": self.sq_norm, "verdict": self.verdict, "invariant": self.invariant,
            "max_change_eps0": max(self.change_eps0.values(), default=0.0),
            "max_change_eps": max(self.change_eps.values(), default=0.0),
            "change_eps0": {str(k): v for k, v in self.change_eps0.items()},
            "change_eps": {str(k): v for k, v in self.change_eps.items()},
            "can_vanish": self.can_vanish, "inf_sq_norm": self.inf_sq_norm,
        }


@dataclass(frozen=True)
class Symmetry:
    """A verified function-preserving rescaling: tensor name -> exponent of the factor."""

    label: str
    exponents: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "exponents": dict(self.exponents)}


@dataclass
class AuditReport:
    """The audit's result; ``print(report)`` shows a table, ``to_dict()`` is JSON-ready."""

    model_name: str
    groups: list[GroupResult]
    joint: list[GroupResult]
    symmetries: list[Symmetry]
    total_sq_norm: float
    unconstrained_sq_norm: float
    infimum_sq_norm: float
    invariant_sq_norm: float
    eps_values: list[float]
    factors: tuple[float, ...]
    rtol: float
    approx_rtol: float
    notes: list[str] = field(default_factory=list)
    # exponents of a direction along which every vanishing tensor shrinks (<= -1 on them) and
    # the balancing exponents that attain the infimum on the rest (used by rescaling)
    vanish_direction: dict[str, float] = field(default_factory=dict, repr=False)
    balance_exponents: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def unconstrained_share(self) -> float:
        """Share of Σ‖θ‖² that function-preserving rescaling can send to 0."""
        return self.unconstrained_sq_norm / self.total_sq_norm if self.total_sq_norm else 0.0

    @property
    def invariant_share(self) -> float:
        """Share of Σ‖θ‖² in groups that are scale-invariant alone or in a joint group."""
        return self.invariant_sq_norm / self.total_sq_norm if self.total_sq_norm else 0.0

    @property
    def infimum_ratio(self) -> float:
        return self.infimum_sq_norm / self.total_sq_norm if self.total_sq_norm else 0.0

    def group(self, name: str) -> GroupResult:
        for g in (*self.groups, *self.joint):
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def verdict(self) -> str:
        """One line for the whole model."""
        inv = [g for g in self.groups if g.invariant]
        jinv = [g for g in self.joint if g.invariant]
        if not inv and not jinv and self.unconstrained_sq_norm == 0.0:
            extra = (f"; balancing symmetries alone lower its infimum to "
                     f"{self.infimum_ratio:.1%} of the current value"
                     if self.infimum_ratio < 0.999 else "")
            return ("weight decay constrains every parameter group: no scale invariance found"
                    + extra)
        parts = [f"{len(inv)} of {len(self.groups)} groups scale-invariant"]
        unused = sum(g.verdict == "unused" for g in self.groups)
        if unused:
            parts.append(f"{unused} unused")
        if jinv:
            parts.append("plus the joint residual-stream group")
        return (f"weight decay cannot constrain {self.unconstrained_share:.1%} of the squared "
                f"weight norm ({', '.join(parts)}); its infimum over function-equivalent "
                f"weights is {self.infimum_ratio:.1%} of the current penalty")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "verdict": self.verdict,
            "total_sq_norm": self.total_sq_norm,
            "unconstrained_sq_norm": self.unconstrained_sq_norm,
            "unconstrained_share": self.unconstrained_share,
            "invariant_share": self.invariant_share,
            "infimum_sq_norm": self.infimum_sq_norm,
            "infimum_ratio": self.infimum_ratio,
            "eps_values": self.eps_values,
            "factors": list(self.factors),
            "rtol": self.rtol,
            "approx_rtol": self.approx_rtol,
            "groups": [g.to_dict() for g in self.groups],
            "joint": [g.to_dict() for g in self.joint],
            "symmetries": [s.to_dict() for s in self.symmetries],
            "notes": list(self.notes),
        }

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        eps = sorted(set(self.eps_values))
        eps_txt = ", ".join(f"{e:g}" for e in eps) if eps else "no norms"
        t = Table(title=f"scale-invariance audit: {self.model_name}  (real eps: {eps_txt})")
        t.add_column("group", style="bold")
        t.add_column("kind")
        t.add_column("‖θ‖²", justify="right")
        t.add_column("max Δ eps=0", justify="right")
        t.add_column("max Δ real eps", justify="right")
        t.add_column("verdict")
        t.add_column("→0?", justify="center")
        t.add_column("‖θ‖² at inf", justify="right")
        style = {"invariant": "green", "invariant (eps-limited)": "yellow",
                 "not invariant": "red", "approximately invariant": "yellow", "unused": "dim"}
        for g in (*self.groups, *self.joint):
            t.add_row(
                Text(g.name), g.kind, f"{g.sq_norm:.4g}",
                f"{max(g.change_eps0.values(), default=0.0):.1e}",
                f"{max(g.change_eps.values(), default=0.0):.1e}",
                Text(g.verdict, style=style.get(g.verdict, "")),
                "yes" if g.can_vanish else "no",
                "-" if g.kind == "joint" else f"{g.inf_sq_norm:.4g}",
            )
        lines = [
            t,
            Text(f"Σ‖θ‖² = {self.total_sq_norm:.4g};  in invariant groups: "
                 f"{self.invariant_share:.1%};  can shrink to 0: {self.unconstrained_share:.1%};  "
                 f"infimum over equivalent weights: {self.infimum_sq_norm:.4g} "
                 f"({self.infimum_ratio:.1%})"),
            Text(f"balancing/stream symmetries verified: {len(self.symmetries)}", style="dim"),
        ]
        lines += [Text(n, style="dim") for n in self.notes]
        lines.append(Text(self.verdict, style="bold"))
        return Group(*lines)

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=150, record=True, file=_NullIO())
        console.print(self)
        return console.export_text()


class _NullIO:
    def write(self, _s: str) -> int:
        return 0

    def flush(self) -> None:
        pass


# ----------------------------------------------------------------------------- the audit


def _signature_params(model: nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


class _Probe:
    """A float64 copy of the model with a fixed input: evaluates the output under rescalings."""

    def __init__(self, model: nn.Module, inputs: Any, eps: float | None,
                 tol: float = _STRUCT_TOL) -> None:
        self.tol = tol
        self.model = copy.deepcopy(model).double().eval()
        if eps is not None:
            set_norm_eps(self.model, eps)
        self.params = _params_by_name(self.model)
        # a KV cache would carry state from one forward (or block re-run) into the next
        if isinstance(inputs, Mapping) and "use_cache" in _signature_params(self.model):
            inputs = {**inputs, "use_cache": False}
        self.inputs = inputs
        # torch's fused encoder fast path (taken under no_grad) is ~100x slower in float64 on
        # CPU than the plain path; keeping autograd on disables it
        self.grad = any(isinstance(m, (nn.TransformerEncoderLayer, nn.MultiheadAttention))
                        for m in self.model.modules())
        self.ref = self.output().clone()

    def output(self) -> Tensor:
        with torch.set_grad_enabled(self.grad):
            return _primary(_call(self.model, self.inputs)).detach()

    def change(self, exps: Mapping[str, float], c: float) -> float:
        with _scaled(self.params, exps, c):
            return _rel_change(self.ref, self.output())


def _verdict(ch0: dict[float, float], ch: dict[float, float], rtol: float, approx: float) -> str:
    m0 = max(ch0.values(), default=0.0)
    m = max(ch.values(), default=0.0)
    if m0 <= rtol:
        return "invariant" if m <= approx else "invariant (eps-limited)"
    if m0 <= approx:
        return "approximately invariant"
    return "not invariant"


def _group_kind(m: nn.Module) -> str:
    if is_norm(m):
        return "norm"
    if isinstance(m, nn.Embedding) or "embedding" in type(m).__name__.lower():
        return "embedding"
    return "layer"


def _execution_order(probe: _Probe, owners: Mapping[str, list[str]]) -> list[str]:
    """Module paths that own parameters, in the order of their first forward call."""
    mods = dict(probe.model.named_modules())
    order: list[str] = []
    handles = []
    for name in owners:
        def hook(_m: nn.Module, _a: Any, name: str = name) -> None:
            if name not in order:
                order.append(name)
        handles.append(mods[name].register_forward_pre_hook(hook))
    try:
        probe.output()
    finally:
        for h in handles:
            h.remove()
    # modules whose parameters are used without calling forward (rare) go last
    return order + [n for n in owners if n not in order]


def _block_containers(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(container path, child paths) for runs of >= 2 consecutive same-class children that
    hold parameters, in ModuleList / Sequential containers."""
    out = []
    for cname, c in model.named_modules():
        if not isinstance(c, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(c.named_children())
        run: list[tuple[str, nn.Module]] = []
        for key, ch in [*children, ("", None)]:
            if (ch is not None and run and type(ch) is type(run[-1][1])
                    and any(True for _ in ch.parameters())):
                run.append((key, ch))
                continue
            if len(run) >= 2:
                out.append((cname, [f"{cname}.{k}" if cname else k for k, _ in run]))
            run = [(key, ch)] if ch is not None and any(True for _ in ch.parameters()) else []
    return out


def _capture_block_io(probe: _Probe, block_paths: Sequence[str]) -> dict[str, tuple]:
    mods = dict(probe.model.named_modules())
    rec: dict[str, tuple] = {}
    handles = []
    for p in block_paths:
        def pre(_m: nn.Module, args: tuple, kwargs: dict, p: str = p) -> None:
            if p not in rec:
                kw = {k: (None if "past_key" in k or k == "layer_past" else v)
                      for k, v in kwargs.items()}
                rec[p] = (args, kw, None)

        def post(_m: nn.Module, _a: tuple, _k: dict, out: Any, p: str = p) -> None:
            if p in rec and rec[p][2] is None:
                rec[p] = (rec[p][0], rec[p][1], out)
        handles.append(mods[p].register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(mods[p].register_forward_hook(post, with_kwargs=True))
    try:
        probe.output()
    finally:
        for h in handles:
            h.remove()
    return rec


def _scale_first_tensor(args: tuple, kwargs: dict, c: float) -> tuple[tuple, dict] | None:
    for i, a in enumerate(args):
        if isinstance(a, Tensor) and a.is_floating_point():
            return (*args[:i], a * c, *args[i + 1:]), kwargs
    for k in ("hidden_states", "x", "src", "input", "h"):
        v = kwargs.get(k)
        if isinstance(v, Tensor) and v.is_floating_point():
            return args, {**kwargs, k: v * c}
    return None


def _first_tensor(args: tuple, kwargs: dict) -> Tensor | None:
    s = _scale_first_tensor(args, kwargs, 1.0)
    if s is None:
        return None
    for a in (*s[0], *s[1].values()):
        if isinstance(a, Tensor) and a.is_floating_point():
            return a
    return None


def _close(a: Tensor, b: Tensor, tol: float) -> bool:
    return a.shape == b.shape and _rel_change(b, a) <= tol


def _find_stream(
    probe: _Probe, owners: Mapping[str, list[str]], order: Sequence[str],
    blocks: Sequence[str], notes: list[str], cname: str,
) -> tuple[list[str], list[list[str]]] | None:
    """(S_0, [S_1..S_L]) as lists of module paths, or None if these blocks are no stream."""
    mods = dict(probe.model.named_modules())
    io = _capture_block_io(probe, blocks)
    per_block: list[list[str]] = []
    for b in blocks:
        if b not in io or io[b][2] is None:
            notes.append(f"{cname}: block {b} was not called; no stream")
            return None
        args, kwargs, out = io[b]
        x = _first_tensor(args, kwargs)
        y = _primary(out)
        if x is None or x.shape != y.shape:
            return None
        cands = [g for g in reversed(order) if g == b or g.startswith(b + ".")]
        found = None
        for size in range(1, _MAX_SUBSET + 1):
            for sub in itertools.combinations(cands, size):
                exps = {n: 1.0 for g in sub for n in owners[g]}
                ok = True
                for c in _STRUCT_FACTORS:
                    a2, k2 = _scale_first_tensor(args, kwargs, c)  # type: ignore[misc]
                    with _scaled(probe.params, exps, c), torch.set_grad_enabled(probe.grad):
                        y2 = _primary(mods[b](*a2, **k2)).detach()
                    if not _close(y2, c * y, probe.tol):
                        ok = False
                        break
                if ok:
                    found = list(sub)
                    break
            if found:
                break
        if not found:
            notes.append(f"{cname}: no subset of block {b}'s groups writes a homogeneous "
                         "residual stream (e.g. post-norm or no residual); no joint group")
            return None
        per_block.append(found)
    # the writers before the first block: groups executed before it, outside every block
    first_mod = next((g for g in order if g.startswith(blocks[0] + ".") or g == blocks[0]), None)
    if first_mod is None:
        return None
    before = order[: order.index(first_mod)]
    before = [g for g in before if not any(g == b or g.startswith(b + ".") for b in blocks)]
    cands = list(reversed(before))[:_MAX_PREFIX]
    x0 = _first_tensor(io[blocks[0]][0], io[blocks[0]][1])
    assert x0 is not None
    b0 = mods[blocks[0]]
    for size in range(1, _MAX_SUBSET + 1):
        for sub in itertools.combinations(cands, size):
            exps = {n: 1.0 for g in sub for n in owners[g]}
            ok = True
            for c in _STRUCT_FACTORS:
                got: list[Tensor] = []

                def grab(_m: nn.Module, args: tuple, kwargs: dict, got: list = got) -> None:
                    t = _first_tensor(args, kwargs)
                    if t is not None and not got:
                        got.append(t.clone())
                h = b0.register_forward_pre_hook(grab, with_kwargs=True)
                try:
                    with _scaled(probe.params, exps, c):
                        probe.output()
                finally:
                    h.remove()
                if not got or not _close(got[0], c * x0, probe.tol):
                    ok = False
                    break
            if ok:
                return list(sub), per_block
    notes.append(f"{cname}: the stream starts from the raw input (no writer before "
                 f"{blocks[0]} scales it), so there is no joint stream symmetry")
    return None


def _weight_names(owners: Mapping[str, list[str]], g: str) -> list[str]:
    return [n for n in owners[g] if not n.rsplit(".", 1)[-1].endswith("bias")]


def _check_symmetry(probe: _Probe, exps: Mapping[str, float]) -> bool:
    return all(probe.change(exps, c) <= probe.tol for c in _STRUCT_FACTORS)


def _vanishing(
    sq: Mapping[str, float], gens: Sequence[Mapping[str, float]]
) -> dict[str, float]:
    """A direction d in the span of ``gens`` with d <= -1 on every tensor it can shrink and
    d <= 0 on every tensor with nonzero norm (found by propagation); returns d."""
    d: dict[str, float] = {}
    zset: set[str] = set()
    changed = True
    while changed:
        changed = False
        for g in gens:
            for sgn in (1.0, -1.0):
                w = {u: sgn * e for u, e in g.items() if e != 0.0}
                pos = {u for u, e in w.items() if e > 0 and sq.get(u, 0.0) > 0}
                neg = {u for u, e in w.items() if e < 0 and sq.get(u, 0.0) > 0}
                if not pos or pos <= zset or not neg <= zset:
                    continue
                wmin = min(w[u] for u in pos)
                w = {u: e / wmin for u, e in w.items()}
                alpha = max([1.0] + [(1.0 - w[u]) / -d[u] for u in neg])
                d = {u: alpha * d.get(u, 0.0) - w.get(u, 0.0) for u in set(d) | set(w)}
                zset |= pos
                changed = True
    return {u: e for u, e in d.items() if e != 0.0}


def _min_balance(
    sq: Mapping[str, float], gens: Sequence[Mapping[str, float]], skip: set[str]
) -> tuple[float, dict[str, float]]:
    """min over t of Σ_u sq_u·exp(2(Vt)_u) on tensors outside ``skip`` (Newton, convex)."""
    units = [u for u, s in sq.items() if s > 0 and u not in skip]
    rows = [g for g in gens if any(u in g for u in units)]
    base = float(sum(sq[u] for u in units))
    if not rows or not units:
        return base, {}
    idx = {u: i for i, u in enumerate(units)}
    V = torch.zeros(len(units), len(rows), dtype=torch.float64)
    for j, g in enumerate(rows):
        for u, e in g.items():
            if u in idx:
                V[idx[u], j] = e
    n = torch.tensor([sq[u] for u in units], dtype=torch.float64)
    logn = n.log()

    def f(t: Tensor) -> Tensor:
        return torch.logsumexp(logn + 2 * (V @ t), 0)

    t = torch.zeros(len(rows), dtype=torch.float64)
    for _ in range(200):
        z = logn + 2 * (V @ t)
        p = torch.softmax(z, 0)
        grad = 2 * V.T @ p
        hess = 4 * (V.T * p) @ V - 4 * torch.outer(V.T @ p, V.T @ p)
        hess = hess + 1e-12 * torch.eye(len(rows), dtype=torch.float64)
        step = -torch.linalg.lstsq(hess, grad.unsqueeze(1)).solution.squeeze(1)
        f0 = f(t)
        s = 1.0
        while s > 1e-12 and f(t + s * step) > f0 + 0.25 * s * float(grad @ step):
            s *= 0.5
        t = t + s * step
        if float(grad.norm()) < 1e-13:
            break
    val = float(f(t).exp())
    full: dict[str, float] = {}
    for g, tj in zip(rows, t.tolist(), strict=True):
        for u, e in g.items():
            full[u] = full.get(u, 0.0) + e * tj
    if val > base:  # Newton cannot do worse than t = 0; guard against numerical noise
        return base, {}
    return val, full


def audit(
    model: nn.Module,
    example_input: Any,
    *,
    eps_zero: bool = True,
    factors: Sequence[float] = (0.1, 0.5, 2.0, 10.0),
    rtol: float = 1e-10,
    approx_rtol: float = 1e-2,
    joint: bool = True,
    balancing: bool = True,
    model_name: str | None = None,
    threads: int | None = 1,
) -> AuditReport:
    """Measure which parameter groups weight decay can and cannot constrain (see module doc).

    ``example_input`` is what ``model`` is called with: a tensor, a tuple of positional
    arguments, or a dict of keyword arguments (Hugging Face). Floating tensors are cast to
    float64 like the model copy; integer tensors (token ids) are kept. ``eps_zero``: detect the
    joint / balancing symmetries with eps = 0 (exact); False uses the real eps (then only what
    survives eps counts). ``rtol`` is the float64 tolerance for "invariant" at eps = 0;
    ``approx_rtol`` the tolerance for "approximately invariant" and for the real-eps check.
    """
    if any(not (c > 0 and math.isfinite(c)) for c in factors) or not factors:
        raise LnlabError(f"factors must be positive and finite, got {tuple(factors)}")
    if not any(True for _ in model.parameters()):
        raise LnlabError("the model has no parameters to audit")
    inputs = _to_double(example_input)
    try:
        # structural tests get 10x the group tolerance: a symmetry missed there is lost
        tol = max(_STRUCT_TOL, 10 * rtol)
        exact = _Probe(model, inputs, 0.0, tol)
        real = _Probe(model, inputs, None, tol)
    except (TypeError, RuntimeError) as e:
        raise LnlabError(f"cannot run a float64 copy of the model on the example input "
                         f"(does its forward cast to float32?): {e}") from e
    for probe, what in ((exact, "with eps = 0"), (real, "")):
        if not bool(torch.isfinite(probe.ref).all()):
            raise LnlabError(f"the model's float64 output {what} is not finite on this input "
                             "(a norm sees a constant vector?); try another example input")
    eps_values = [v for _, _, v in find_norm_eps(real.model)]
    struct = exact if eps_zero else real
    owners = _param_owners(struct.model)
    mods = dict(struct.model.named_modules())
    sq = {n: _sq_norm(struct.params, [n]) for ns in owners.values() for n in ns}
    notes: list[str] = []

    groups: list[GroupResult] = []
    for g, names in owners.items():
        exps = dict.fromkeys(names, 1.0)
        ch0 = {float(c): exact.change(exps, c) for c in factors}
        ch = {float(c): real.change(exps, c) for c in factors}
        verdict = _verdict(ch0, ch, rtol, approx_rtol)
        if verdict == "invariant" and real.change(exps, 0.0) <= rtol:
            verdict = "unused"
        groups.append(GroupResult(
            name=g or "(root)", kind=_group_kind(mods[g]), params=tuple(names),
            sq_norm=sum(sq[n] for n in names), change_eps0=ch0, change_eps=ch, verdict=verdict,
        ))

    sym: list[Symmetry] = []
    for gr in groups:
        if gr.invariant or gr.verdict == "unused" or (
            not eps_zero and gr.verdict == "approximately invariant"
        ):
            sym.append(Symmetry(f"scale {gr.name}", dict.fromkeys(gr.params, 1.0)))

    order = _execution_order(struct, owners)
    joint_results: list[GroupResult] = []
    if joint:
        for cname, blocks in _block_containers(struct.model):
            found = _find_stream(struct, owners, order, blocks, notes, cname or "(root)")
            if found is None:
                continue
            s0, per_block = found
            members = [*s0, *(g for s in per_block for g in s)]
            names = [n for g in members for n in owners[g]]
            exps = dict.fromkeys(names, 1.0)
            ch0 = {float(c): exact.change(exps, c) for c in factors}
            ch = {float(c): real.change(exps, c) for c in factors}
            verdict = _verdict(ch0, ch, rtol, approx_rtol)
            joint_results.append(GroupResult(
                name=f"stream writers of {cname or '(root)'} "
                     f"[{', '.join(g or '(root)' for g in members)}]",
                kind="joint", params=tuple(names), sq_norm=sum(sq[n] for n in names),
                change_eps0=ch0, change_eps=ch, verdict=verdict,
            ))
            if joint_results[-1].invariant:
                sym.append(Symmetry(f"scale the stream of {cname}", exps))
            # the stream balanced against the first consumer after the last block
            last_block = blocks[-1]
            after = [g for g in order[order.index(per_block[-1][0]):]
                     if not (g == last_block or g.startswith(last_block + "."))]
            after = [g for g in after if g not in members]
            if balancing and after:
                h = after[0]
                bal = {**exps, **dict.fromkeys(_weight_names(owners, h), -1.0)}
                if _check_symmetry(struct, bal):
                    sym.append(Symmetry(f"balance stream of {cname} against {h}", bal))

    if balancing:
        for g, h in itertools.pairwise(order):
            wn = _weight_names(owners, h)
            if not wn:
                continue
            bal = {**dict.fromkeys(owners[g], 1.0), **dict.fromkeys(wn, -1.0)}
            if _check_symmetry(struct, bal):
                sym.append(Symmetry(f"balance {g} against {h}", bal))

    gens = [s.exponents for s in sym]
    d = _vanishing(sq, gens)
    vanish = {u for u, e in d.items() if e <= -1.0 + 1e-12 and sq[u] > 0}
    free = vanish | {u for u, s in sq.items() if s == 0.0}
    inf_val, bal_exps = _min_balance(sq, gens, free)
    unit_inf = {u: 0.0 if u in free else sq[u] * math.exp(2 * bal_exps.get(u, 0.0)) for u in sq}
    for gr in groups:
        gr.can_vanish = all(u in free for u in gr.params) and gr.sq_norm > 0
        gr.inf_sq_norm = float(sum(unit_inf[u] for u in gr.params))
    invariant_units: set[str] = set()
    for gr in (*groups, *joint_results):
        if gr.invariant or gr.verdict == "unused":
            invariant_units |= set(gr.params)
    for jr in joint_results:
        jr.can_vanish = all(u in free for u in jr.params)
        jr.inf_sq_norm = float(sum(unit_inf[u] for u in jr.params))
    if not eps_values:
        notes.append("no normalization layer found: nothing can be scale-invariant")
    return AuditReport(
        model_name=model_name or type(model).__name__,
        groups=groups, joint=joint_results,
        symmetries=[s for s in sym if not s.label.startswith("scale ") or "stream" in s.label],
        total_sq_norm=float(sum(sq.values())),
        unconstrained_sq_norm=float(sum(sq[u] for u in vanish)),
        infimum_sq_norm=float(inf_val),
        invariant_sq_norm=float(sum(sq[u] for u in invariant_units)),
        eps_values=eps_values, factors=tuple(float(c) for c in factors),
        rtol=rtol, approx_rtol=approx_rtol, notes=notes,
        vanish_direction={u: e for u, e in d.items()},
        balance_exponents=bal_exps,
    )


def function_change(
    model: nn.Module,
    example_input: Any,
    scales: Mapping[str, float],
    *,
    eps: float | None = 0.0,
) -> float:
    """Max relative output change when each named parameter is multiplied by its factor.

    Runs on a float64 copy; ``eps=0.0`` sets every norm's eps to 0, ``None`` keeps the real
    eps. E.g. a pure weight-decay step on the hidden parameters is
    ``{name: 1 - lr * wd for name in hidden}`` (claim B3).
    """
    probe = _Probe(model, _to_double(example_input), eps)
    unknown = set(scales) - set(probe.params)
    if unknown:
        raise LnlabError(f"unknown parameter names: {', '.join(sorted(unknown))}")
    saved = {n: probe.params[n].detach().clone() for n in scales}
    try:
        with torch.no_grad():
            for n, f in scales.items():
                probe.params[n].mul_(float(f))
        return _rel_change(probe.ref, probe.output())
    finally:
        with torch.no_grad():
            for n, t in saved.items():
                probe.params[n].copy_(t)


def rescale_to_min_penalty(
    model: nn.Module,
    factor: float,
    example_input: Any = None,
    *,
    report: AuditReport | None = None,
    balance: bool = True,
) -> nn.Module:
    """A function-equivalent copy (exact at eps = 0) with a smaller weight-decay penalty.

    Every tensor that the audit found can shrink to 0 is multiplied by factor**k (k >= 1; k = 1
    for a group that is invariant on its own), and with ``balance`` the remaining tensors are
    moved to the balanced point that attains the infimum, so ``penalty(copy)`` → the report's
    ``infimum_sq_norm`` as factor → 0. Pass the ``report`` of a previous ``audit`` of this
    model, or ``example_input`` to run one. The copy keeps the model's dtype and real eps: with
    eps > 0 the outputs drift once a norm's input variance approaches eps.
    """
    if not (0 < factor <= 1 and math.isfinite(factor)):
        raise LnlabError(f"factor must be in (0, 1], got {factor}")
    if report is None:
        if example_input is None:
            raise LnlabError("rescale_to_min_penalty needs example_input or a report")
        report = audit(model, example_input)
    out = copy.deepcopy(model)
    params = _params_by_name(out)
    missing = (set(report.vanish_direction) | set(report.balance_exponents)) - set(params)
    if missing:
        raise LnlabError(f"the report does not belong to this model (no parameter "
                         f"{sorted(missing)[0]!r})")
    logf = math.log(factor)
    with torch.no_grad():
        for name, p in params.items():
            e = -report.vanish_direction.get(name, 0.0) * logf
            if balance:
                e += report.balance_exponents.get(name, 0.0)
            if e != 0.0 and bool(p.ne(0).any()):
                p.mul_(math.exp(e))
    return out


# ----------------------------------------------------------------------------- training probes
# Small pure functions for the weight-decay experiment: which groups to watch (from a report),
# and their effective learning rate and per-step angular update.


def invariant_groups(report: AuditReport, *, joint: bool = True) -> dict[str, tuple[str, ...]]:
    """Group name -> parameter names, for every group the audit found scale-invariant
    (alone, or jointly for the residual stream when ``joint``)."""
    out = {g.name: g.params for g in report.groups if g.invariant}
    if joint:
        out.update({g.name: g.params for g in report.joint if g.invariant})
    return out


def snapshot(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """float64 copies of the named parameters (all by default), to compare across steps."""
    params = _params_by_name(model)
    keys = list(params) if names is None else list(names)
    missing = [n for n in keys if n not in params]
    if missing:
        raise LnlabError(f"unknown parameter names: {', '.join(missing)}")
    return {n: params[n].detach().to(torch.float64, copy=True) for n in keys}


def _flat(ts: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
    return torch.cat([ts[n].detach().double().reshape(-1) for n in names])


def angular_update(
    before: Mapping[str, Tensor], after: Mapping[str, Tensor],
    names: Sequence[str] | None = None,
) -> float:
    """Angle (radians) between a group's parameters before and after a step, the group taken
    as one vector: Δ_t = arccos(<w_t, w_t+1> / (‖w_t‖·‖w_t+1‖)) (Wan et al. 2021)."""
    keys = list(before) if names is None else list(names)
    a, b = _flat(before, keys), _flat(after, keys)
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return math.nan
    # atan2 form: accurate for tiny angles, where arccos of a cosine near 1 is not
    cross = (b - (a @ b) / (na * na) * a).norm() * na
    return math.atan2(float(cross), float(a @ b))


def effective_lr(lr: float, params: Mapping[str, Tensor], names: Sequence[str] | None = None
                 ) -> float:
    """lr / ‖w‖² of a scale-invariant group: the step size its direction actually sees."""
    keys = list(params) if names is None else list(names)
    sq = float(_flat(params, keys).pow(2).sum())
    return lr / sq if sq > 0 else math.inf


def li_arora_lr(lr: float, wd: float, step: int) -> float:
    """The learning rate at ``step`` (0-based) of plain SGD *without* weight decay that follows
    the same directions as SGD with weight decay ``wd`` at constant ``lr``, when every trained
    parameter group is scale-invariant (Li & Arora 2020): lr·(1 − lr·wd)^(−2·step − 1).
    The weights then relate as w_no_wd(t) = (1 − lr·wd)^(−t)·w_wd(t)."""
    if not 0 <= lr * wd < 1:
        raise LnlabError(f"need 0 <= lr*wd < 1, got lr={lr}, wd={wd}")
    if step < 0:
        raise LnlabError(f"step must be >= 0, got {step}")
    return lr * (1.0 - lr * wd) ** (-2 * step - 1)
