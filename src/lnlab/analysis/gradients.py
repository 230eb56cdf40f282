"""Gradients at every norm site: learning vs memorization norms and backward statistics.

Two measurements on real batches, for every site :func:`lnlab.surgery.find_norms` reports
(lnlab models, ``torch.nn.TransformerEncoder``, Hugging Face models with dict inputs):

1. **Per-sample gradient norms** (Singhal & Kim). For each sample, the L2 norm of the loss
   gradient with respect to the norm's *input*, averaged over test samples with their true
   labels ("learning") and over the noisy training samples with their noisy labels
   ("memorization"). Two gradients are recorded because they differ in residual models:

   * ``total``: the gradient w.r.t. the tensor the norm reads. In a Pre-LN block that tensor is
     the residual stream, which also feeds the skip path, so this is LN branch + skip path
     (what Theorem 2's bound is about).
   * ``branch``: only the part that flows back through the norm's own backward. Measured by
     handing the norm an alias of its input (a view nobody else reads) and differentiating
     w.r.t. that alias. Where the input has no other consumer (Post-LN sums, a final norm),
     ``branch == total``.

   *Per-sample without a loop.* The loss is the **sum** of per-sample losses and the model runs
   in eval mode. When samples do not interact (no cross-sample op: batch norm in train mode,
   batch-wise statistics, MoE capacity limits), the gradient of the sum w.r.t. an activation
   holds each sample's own gradient in its own row, so one backward pass per chunk gives all
   per-sample gradients. That assumption is what makes this exact; it fails with cross-sample
   ops (test: results must not depend on ``batch_size``).

   *Sequences.* The gradient of one sample at one site is a (tokens x features) slice
   (tokens = every dim between the batch dim and the normalized dims). ``reduction``:
   ``"sample"`` (default): L2 norm of the whole slice (Frobenius over tokens x features);
   ``"token_mean"``: mean over tokens of the per-token L2 norms; ``"first"``: the first token
   (CLS); ``"last"``: the last (non-padding) token. Padding tokens (``attention_mask == 0`` in
   a dict input, or an explicit ``token_mask``) are left out. A site run several times in one
   forward (shared layers) counts all its calls as more tokens.

2. **Backward statistics** (Xu et al. 2019, claim A1). With y = N(x) = (x - mu)/sigma,
   sigma = sqrt(var + eps) per normalized row, and g the upstream gradient dl/dy (times the gain
   w where the norm has one; times AdaNorm's detached factor C(1 - k y)), the gradient the norm
   passes to its input is exactly

       a = (g - [mean path] * gbar - [std path] * m * y) / sigma,    m = mean(g * y)

   where a detached statistic removes its term (LayerNorm / LN-simple / AdaNorm: both terms;
   DetachNorm mean: only the std term; DetachNorm std: only the mean term; both: neither;
   RMSNorm: no mean term). Hence mean(a) and var(a) in closed form. At eps = 0 these are Xu's
   forms: mean 0 / gbar/sigma, variance (D_g - m^2)/sigma^2 / D_g/sigma^2; with eps > 0 the
   variance of the std-path forms becomes (D_g - m^2 (2 - mean(y^2)))/sigma^2, which is what
   ``pred_var`` uses (``xu_var`` keeps the paper form). Each site reports the measured mean and
   variance of a over features, averaged over rows (one row per token per sample), the
   predictions, and the largest deviations.

A trainer hook (:func:`gradient_hook`) records both at epoch ends as flat metrics
(``grad/learn_total/<site>``, ``gstat/var/<site>``, ...); :func:`unflatten` reads them back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lnlab.errors import LnlabError
from lnlab.surgery import NormSite, find_norms, select_sites

__all__ = [
    "REDUCTIONS",
    "STAT_FIELDS",
    "GradientNorms",
    "GradientStats",
    "PerSampleNorms",
    "SiteGradNorms",
    "SiteGradStats",
    "cross_entropy_per_sample",
    "gradient_hook",
    "gradient_norms",
    "gradient_stats",
    "per_sample_grad_norms",
    "unflatten",
]

REDUCTIONS = ("sample", "token_mean", "first", "last")
"""How a sample's (tokens x features) gradient slice becomes one number (module docstring)."""

Inputs = Tensor | Mapping[str, Tensor]
LossFn = Callable[[Any, Tensor], Tensor]
"""(model output, labels) -> per-sample losses of shape (batch,)."""
SiteSelection = str | Sequence[str] | Callable[[NormSite], bool] | Sequence[NormSite]


# --------------------------------------------------------------------------- inputs

def _n_samples(inputs: Inputs) -> int:
    if isinstance(inputs, Tensor):
        return int(inputs.shape[0])
    if isinstance(inputs, Mapping):
        sizes = {int(v.shape[0]) for v in inputs.values() if isinstance(v, Tensor) and v.dim()}
        if len(sizes) != 1:
            raise LnlabError("dict inputs must hold tensors that share their first (batch) "
                             f"dimension, got sizes {sorted(sizes)}")
        return sizes.pop()
    raise LnlabError(f"inputs must be a tensor or a dict of tensors, got {type(inputs).__name__}")


def _slice(inputs: Inputs, idx: Tensor, device: torch.device) -> Inputs:
    if isinstance(inputs, Tensor):
        return inputs.index_select(0, idx.to(inputs.device)).to(device)
    return {k: (v.index_select(0, idx.to(v.device)).to(device)
                if isinstance(v, Tensor) and v.dim() else v) for k, v in inputs.items()}


def _with_grad(inputs: Inputs) -> Inputs:
    """Float inputs get ``requires_grad`` so that a norm reading raw data has a gradient."""
    def prep(v: Any) -> Any:
        if isinstance(v, Tensor) and v.is_floating_point():
            return v.detach().requires_grad_(True)
        return v
    if isinstance(inputs, Tensor):
        return prep(inputs)
    return {k: prep(v) for k, v in inputs.items()}


def _call(model: nn.Module, inputs: Inputs) -> Any:
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def _device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _logits(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise LnlabError(f"cannot find logits in the model output ({type(out).__name__}); "
                     "pass loss_fn=")


def cross_entropy_per_sample(out: Any, y: Tensor) -> Tensor:
    """Default loss: cross-entropy of (batch, classes) logits, one value per sample."""
    logits = _logits(out)
    if logits.dim() != 2:
        raise LnlabError(f"logits of shape {tuple(logits.shape)} are not (batch, classes); "
                         "pass loss_fn= returning one loss per sample")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, y, reduction="none")


def _token_mask(inputs: Inputs, token_mask: Tensor | str | None) -> Tensor | None:
    if token_mask is None:
        return None
    if isinstance(token_mask, str):
        if token_mask != "auto":
            raise LnlabError(f"token_mask must be 'auto', None or a tensor, got {token_mask!r}")
        if isinstance(inputs, Mapping):
            m = inputs.get("attention_mask")
            if isinstance(m, Tensor) and m.dim() == 2:
                return m != 0
        return None
    if token_mask.dim() != 2 or int(token_mask.shape[0]) != _n_samples(inputs):
        raise LnlabError("token_mask must have shape (samples, tokens)")
    return token_mask != 0


# --------------------------------------------------------------------------- capture

@dataclass
class _Call:
    x: Tensor
    """The tensor the norm read (its gradient is the total one)."""
    alias: Tensor
    """Same values, read only by the norm (its gradient is the branch one)."""
    total_ok: bool
    out: Tensor | None = None


class _Capture:
    """Forward hooks that hand each selected norm an alias of its input and keep its output."""

    def __init__(self, sites: Sequence[NormSite]):
        self.sites = list(sites)
        self.calls: dict[str, list[_Call]] = {}
        self._handles: list[Any] = []

    def reset(self) -> None:
        self.calls = {s.name: [] for s in self.sites}

    def __enter__(self) -> _Capture:
        self.reset()
        for s in self.sites:
            if s.module is None:
                raise LnlabError(f"site {s.name!r} carries no module (use find_norms)")
            self._handles.append(s.module.register_forward_pre_hook(self._pre(s.name),
                                                                    with_kwargs=True))
            self._handles.append(s.module.register_forward_hook(self._post(s.name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _pre(self, name: str) -> Callable[..., Any]:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args and isinstance(args[0], Tensor):
                x, key = args[0], None
            else:
                key = next((k for k, v in kwargs.items() if isinstance(v, Tensor)), None)
                if key is None:
                    return None
                x = kwargs[key]
            if x.requires_grad:
                alias, ok = x.view_as(x), True
            else:  # nothing upstream needs a gradient: only the branch part is defined
                alias, ok = x.detach().requires_grad_(True), False
            self.calls[name].append(_Call(x, alias, ok))
            if key is None:
                return (alias, *args[1:]), kwargs
            return args, {**kwargs, key: alias}
        return hook

    def _post(self, name: str) -> Callable[..., Any]:
        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            if self.calls[name] and self.calls[name][-1].out is None:
                self.calls[name][-1].out = out if isinstance(out, Tensor) else None
        return hook


@dataclass
class _Grads:
    call: _Call
    total: Tensor | None
    branch: Tensor
    upstream: Tensor | None


def _resolve_sites(model: nn.Module, sites: SiteSelection,
                   example: Inputs | None) -> list[NormSite]:
    if isinstance(sites, Sequence) and not isinstance(sites, str) and sites and all(
            isinstance(s, NormSite) for s in sites):
        return list(sites)  # type: ignore[arg-type]
    found = find_norms(model, example)
    chosen = select_sites(found, sites)  # type: ignore[arg-type]
    return [s for s in chosen if s.called is not False]


def _run(model: nn.Module, inputs: Inputs, labels: Tensor, sites: SiteSelection,
         batch_size: int, loss_fn: LossFn | None, need_upstream: bool,
         consume: Callable[[NormSite, list[_Grads], int, Tensor], None]) -> list[NormSite]:
    """Forward + one backward per chunk; ``consume(site, grads, batch, chunk_idx)`` per site."""
    if batch_size < 1:
        raise LnlabError(f"batch_size must be positive, got {batch_size}")
    n = _n_samples(inputs)
    labels = torch.as_tensor(labels)
    if labels.shape[:1] != (n,):
        raise LnlabError(f"{n} samples but labels of shape {tuple(labels.shape)}")
    loss_fn = loss_fn or cross_entropy_per_sample
    device = _device(model)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.enable_grad():
            ex = _slice(inputs, torch.arange(min(n, 2)), device) if n else None
            chosen = _resolve_sites(model, sites, ex)
            if not n:
                return chosen
            with _Capture(chosen) as cap:
                for idx in torch.arange(n).split(batch_size):
                    cap.reset()
                    x = _with_grad(_slice(inputs, idx, device))
                    y = labels.index_select(0, idx.to(labels.device)).to(device)
                    losses = loss_fn(_call(model, x), y)
                    if losses.shape != (len(idx),):
                        raise LnlabError(f"loss_fn must return one loss per sample, shape "
                                         f"({len(idx)},), got {tuple(losses.shape)}")
                    _backward_chunk(losses.sum(), cap, need_upstream, chosen, len(idx), idx,
                                    consume)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return chosen


def _backward_chunk(loss: Tensor, cap: _Capture, need_upstream: bool,
                    chosen: list[NormSite], b: int, idx: Tensor,
                    consume: Callable[[NormSite, list[_Grads], int, Tensor], None]) -> None:
    wanted: list[Tensor] = []
    pos: dict[int, int] = {}

    def add(t: Tensor | None) -> int | None:
        if t is None or not t.requires_grad:
            return None
        if id(t) not in pos:
            pos[id(t)] = len(wanted)
            wanted.append(t)
        return pos[id(t)]

    plan = []
    for s in chosen:
        for c in cap.calls[s.name]:
            plan.append((s, c, add(c.x) if c.total_ok else None, add(c.alias),
                         add(c.out) if need_upstream else None))
    if not wanted:
        for s in chosen:
            consume(s, [], b, idx)
        return
    grads = torch.autograd.grad(loss, wanted, allow_unused=True)

    def get(i: int | None) -> Tensor | None:
        if i is None:
            return None
        g = grads[i]
        return torch.zeros_like(wanted[i]) if g is None else g  # unused: no effect on the loss

    per_site: dict[str, list[_Grads]] = {s.name: [] for s in chosen}
    for s, c, it, ib, io in plan:
        branch = get(ib)
        per_site[s.name].append(_Grads(c, get(it), torch.zeros_like(c.x) if branch is None
                                       else branch, get(io)))
    for s in chosen:
        consume(s, per_site[s.name], b, idx)


def _batch_first(t: Tensor, b: int, batch_dim: int | None, site: str) -> Tensor:
    if batch_dim is None:
        if t.dim() and t.shape[0] == b:
            batch_dim = 0
        elif t.dim() > 1 and t.shape[1] == b:
            batch_dim = 1
        else:
            raise LnlabError(f"site {site!r}: cannot find the batch dimension ({b}) in an "
                             f"input of shape {tuple(t.shape)}; pass batch_dim=")
    if t.shape[batch_dim] != b:
        raise LnlabError(f"site {site!r}: dim {batch_dim} of shape {tuple(t.shape)} is not "
                         f"the batch ({b})")
    return t.movedim(batch_dim, 0)


def _btf(t: Tensor, site: NormSite, b: int, batch_dim: int | None) -> Tensor:
    """(batch, tokens, features), features = the normalized dims."""
    t = _batch_first(t, b, batch_dim, site.name)
    k = len(site.shape)
    nf = k if 0 < k < t.dim() and tuple(t.shape[-k:]) == tuple(site.shape) else 1
    return t.reshape(b, -1, math.prod(t.shape[t.dim() - nf:]))


def _chunk_mask(mask: Tensor | None, idx: Tensor, b: int, t: int, device: torch.device
                ) -> Tensor:
    if mask is not None and mask.shape[1] == t:
        return mask.index_select(0, idx.to(mask.device)).to(device)
    return torch.ones(b, t, dtype=torch.bool, device=device)


def _reduce(sq: Tensor, mask: Tensor, reduction: str) -> Tensor:
    """(batch, tokens) squared per-token norms -> (batch,) per-sample norms."""
    sq = sq.double() * mask
    if reduction == "sample":
        return sq.sum(1).sqrt()
    if reduction == "token_mean":
        return sq.sqrt().sum(1) / mask.sum(1).clamp_min(1)
    mi = mask.int()  # argmax returns the first maximum: the first / last valid token
    i = mi.argmax(1) if reduction == "first" else mask.shape[1] - 1 - mi.flip(1).argmax(1)
    return sq.gather(1, i[:, None])[:, 0].sqrt()


# --------------------------------------------------------------------------- 1. norms

@dataclass
class PerSampleNorms:
    """Per-sample gradient norms at each site (float64, one entry per sample)."""

    sites: list[NormSite]
    total: dict[str, Tensor]
    """Gradient w.r.t. the tensor the norm reads; NaN where that tensor needs no gradient."""
    branch: dict[str, Tensor]
    """Gradient that flows back through the norm's own backward only."""
    reduction: str


def per_sample_grad_norms(model: nn.Module, inputs: Inputs, labels: Tensor, *,
                          sites: SiteSelection = "all", reduction: str = "sample",
                          batch_size: int = 256, loss_fn: LossFn | None = None,
                          token_mask: Tensor | str | None = "auto",
                          batch_dim: int | None = None) -> PerSampleNorms:
    """The L2 norm of each sample's loss gradient at each norm's input (see module doc).

    ``inputs`` is a tensor or a dict of keyword tensors (Hugging Face), batch first; ``labels``
    the targets ``loss_fn`` takes (default: cross-entropy on (batch, classes) logits). ``sites``
    is a group selection as in :func:`lnlab.surgery.select_sites` or a list of sites.
    """
    if reduction not in REDUCTIONS:
        raise LnlabError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    mask = _token_mask(inputs, token_mask)
    n = _n_samples(inputs)
    total: dict[str, Tensor] = {}
    branch: dict[str, Tensor] = {}

    def consume(site: NormSite, grads: list[_Grads], b: int, idx: Tensor) -> None:
        tot_sq, br_sq, masks, tot_ok = [], [], [], True
        for g in grads:
            br = _btf(g.branch, site, b, batch_dim)
            m = _chunk_mask(mask, idx, b, br.shape[1], br.device)
            br_sq.append(br.double().pow(2).sum(-1))
            masks.append(m)
            if g.total is None:
                tot_ok = False
            else:
                tot_sq.append(_btf(g.total, site, b, batch_dim).double().pow(2).sum(-1))
        if not grads:  # the site did not run for this chunk: no gradient is defined
            vb = torch.full((b,), math.nan, dtype=torch.float64)
            vt = vb.clone()
        else:
            mm = torch.cat(masks, 1)
            vb = _reduce(torch.cat(br_sq, 1), mm, reduction).cpu()
            vt = (_reduce(torch.cat(tot_sq, 1), mm, reduction).cpu() if tot_ok
                  else torch.full((b,), math.nan, dtype=torch.float64))
        total.setdefault(site.name, torch.empty(n, dtype=torch.float64))[idx] = vt
        branch.setdefault(site.name, torch.empty(n, dtype=torch.float64))[idx] = vb

    chosen = _run(model, inputs, labels, sites, batch_size, loss_fn, False, consume)
    for s in chosen:
        total.setdefault(s.name, torch.empty(0, dtype=torch.float64))
        branch.setdefault(s.name, torch.empty(0, dtype=torch.float64))
    return PerSampleNorms(chosen, total, branch, reduction)


@dataclass
class SiteGradNorms:
    """Mean per-sample gradient norms at one site."""

    name: str
    block: int | None
    group: str
    order: int
    kind: str
    learning_total: float
    memorization_total: float
    learning_branch: float
    memorization_branch: float
    n_learning: int
    n_memorization: int

    @property
    def ratio_total(self) -> float:
        """learning / memorization (total gradient); the red line of the paper's Fig. 4."""
        return _ratio(self.learning_total, self.memorization_total)

    @property
    def ratio_branch(self) -> float:
        return _ratio(self.learning_branch, self.memorization_branch)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["ratio_total"] = self.ratio_total
        d["ratio_branch"] = self.ratio_branch
        return d


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan


def _mean(t: Tensor) -> float:
    return float(t.mean()) if t.numel() else math.nan


@dataclass
class GradientNorms:
    """Learning vs memorization gradient norms per site, in forward order."""

    sites: list[SiteGradNorms]
    reduction: str

    def to_records(self) -> list[dict[str, Any]]:
        """One flat dict per site (with ``reduction`` and the two ratios)."""
        return [{**s.to_dict(), "reduction": self.reduction} for s in self.sites]

    def __str__(self) -> str:
        head = ("site", "block", "group", "learn_total", "mem_total", "learn_branch",
                "mem_branch", "ratio_total")
        rows = [head] + [(s.name, "-" if s.block is None else s.block, s.group,
                          f"{s.learning_total:.4g}", f"{s.memorization_total:.4g}",
                          f"{s.learning_branch:.4g}", f"{s.memorization_branch:.4g}",
                          f"{s.ratio_total:.3g}") for s in self.sites]
        w = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
        return "\n".join("  ".join(str(c).ljust(k) for c, k in zip(r, w, strict=True)).rstrip()
                         for r in rows)


def gradient_norms(model: nn.Module, learn: tuple[Inputs, Tensor],
                   mem: tuple[Inputs, Tensor] | None = None, *,
                   sites: SiteSelection = "all", reduction: str = "sample",
                   batch_size: int = 256, loss_fn: LossFn | None = None,
                   token_mask: str | None = "auto",
                   batch_dim: int | None = None) -> GradientNorms:
    """Singhal & Kim's learning and memorization gradient norms at every norm site.

    ``learn``: (test inputs, true labels); ``mem``: (noisy training inputs, their *noisy*
    labels). Each is the mean over its samples of the per-sample norm (module doc).
    Padding masks come from each input dict's ``attention_mask`` (``token_mask="auto"``).
    """
    kw: dict[str, Any] = {"sites": sites, "reduction": reduction, "batch_size": batch_size,
                          "loss_fn": loss_fn, "token_mask": token_mask, "batch_dim": batch_dim}
    lr = per_sample_grad_norms(model, *learn, **kw)
    kw["sites"] = lr.sites
    mr = per_sample_grad_norms(model, *mem, **kw) if mem is not None else None
    out = []
    for s in lr.sites:
        mt = mr.total[s.name] if mr is not None else torch.empty(0)
        mb = mr.branch[s.name] if mr is not None else torch.empty(0)
        out.append(SiteGradNorms(
            name=s.name, block=s.block, group=s.group, order=s.order, kind=s.kind,
            learning_total=_mean(lr.total[s.name]), memorization_total=_mean(mt),
            learning_branch=_mean(lr.branch[s.name]), memorization_branch=_mean(mb),
            n_learning=int(lr.branch[s.name].numel()), n_memorization=int(mb.numel())))
    return GradientNorms(out, reduction)


# --------------------------------------------------------------------------- 2. statistics

@dataclass(frozen=True)
class _Form:
    """What the closed form needs to know about a norm."""

    center: bool
    detach_mean: bool
    detach_std: bool
    groups: int
    eps: float
    gain: Tensor | None
    ada: tuple[float, float] | None

    @property
    def detach(self) -> str:
        d = (self.detach_mean, self.detach_std)
        return {(False, False): "none", (True, False): "mean", (False, True): "std",
                (True, True): "both"}[d]


def _form(site: NormSite) -> _Form | str:
    """The closed-form description of a site (from ``lnlab.norms.norm_form``), or why there is
    none."""
    from lnlab.norms import norm_form

    m = site.module
    if m is None:
        return "no module"
    form = norm_form(m)
    if form is None:
        return "not a norm"
    if form.family == "identity":
        return "identity (no normalization)"
    if site.eps is None:
        return "eps unknown"
    if form.math is None:
        return f"no closed form for kind {site.kind!r}"
    w = getattr(m, "weight", None)
    gain = w.detach() if isinstance(w, Tensor) and w.dim() >= 1 else None
    nm = form.math
    return _Form(nm.center, nm.detach_mean, nm.detach_std, nm.groups, float(site.eps), gain,
                 nm.ada)


STAT_FIELDS = ("mean", "abs_mean", "var", "pred_mean", "pred_var", "xu_mean", "xu_var",
               "g_mean_over_sigma", "g_var_over_sigma2", "m2_over_sigma2")
"""Row-averaged quantities of :class:`SiteGradStats`."""
_MAX_FIELDS = ("max_dev_mean", "max_dev_var", "max_dev_grad", "max_dev_xu_mean",
               "max_dev_xu_var")


@dataclass
class SiteGradStats:
    """Backward statistics at one site, averaged over rows (one row = one normalized vector).

    ``mean``/``var``: measured mean and (biased) variance over features of the gradient the norm
    passes to its input; ``pred_*``: exact closed form; ``xu_*``: the paper's eps = 0 form;
    ``g_mean_over_sigma`` = gbar/sigma, ``g_var_over_sigma2`` = D_g/sigma^2,
    ``m2_over_sigma2`` = m^2/sigma^2 (the variance the std path removes, "re-scaling").
    ``max_dev_*``: largest |measured - predicted| over rows (``grad``: over every entry);
    ``rel_dev_grad`` = max_dev_grad / max |predicted gradient entry|.
    """

    name: str
    block: int | None
    group: str
    order: int
    kind: str
    detach: str
    gain_folded: bool
    rows: int
    mean: float = 0.0
    abs_mean: float = 0.0
    var: float = 0.0
    pred_mean: float = 0.0
    pred_var: float = 0.0
    xu_mean: float = 0.0
    xu_var: float = 0.0
    g_mean_over_sigma: float = 0.0
    g_var_over_sigma2: float = 0.0
    m2_over_sigma2: float = 0.0
    max_dev_mean: float = 0.0
    max_dev_var: float = 0.0
    max_dev_grad: float = 0.0
    max_dev_xu_mean: float = 0.0
    max_dev_xu_var: float = 0.0
    rel_dev_grad: float = 0.0
    max_abs_pred: float = field(default=0.0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "max_abs_pred"}


@dataclass
class GradientStats:
    """Per-site backward statistics; ``skipped`` lists (site, reason) without a closed form."""

    sites: list[SiteGradStats]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_records(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.sites]

    @property
    def max_rel_dev(self) -> float:
        """Worst ``rel_dev_grad`` over sites: how well the closed forms hold here."""
        return max((s.rel_dev_grad for s in self.sites), default=math.nan)


def _row_stats(x: Tensor, a: Tensor, g: Tensor, form: _Form) -> dict[str, Tensor]:
    """Closed form vs measurement on rows: x, a (dl/dx), g (dl/d output), all (R, n)."""
    x, a, g = x.double(), a.double(), g.double()
    if form.gain is not None:
        g = g * form.gain.double().reshape(1, -1).to(g.device)
    h = x.shape[1] // form.groups
    x, a, g = (t.reshape(-1, h) for t in (x, a, g))
    if form.center:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
    else:
        mu = torch.zeros_like(x[:, :1])
        var = x.pow(2).mean(1, keepdim=True)
    sigma = (var + form.eps).sqrt()
    y = (x - mu) / sigma
    if form.ada is not None:
        c, k = form.ada
        g = c * (1.0 - k * y) * g
    mp = 1.0 if form.center and not form.detach_mean else 0.0
    sp = 0.0 if form.detach_std else 1.0
    s = sigma[:, 0]
    gbar, dg = g.mean(1), g.var(1, unbiased=False)
    m = (g * y).mean(1)
    ybar, q = y.mean(1), y.pow(2).mean(1)
    pred = (g - mp * gbar[:, None] - sp * m[:, None] * y) / sigma
    pred_mean = ((1 - mp) * gbar - sp * m * ybar) / s
    pred_var = (dg - 2 * sp * m * (m - gbar * ybar) + sp * m.pow(2) * (q - ybar.pow(2))) / s**2
    if form.center:
        xu_mean = (1 - mp) * gbar / s
        xu_var = (dg - sp * m.pow(2)) / s**2
    else:
        xu_mean = xu_var = torch.full_like(s, math.nan)
    am, av = a.mean(1), a.var(1, unbiased=False)
    return {"mean": am, "abs_mean": am.abs(), "var": av, "pred_mean": pred_mean,
            "pred_var": pred_var, "xu_mean": xu_mean, "xu_var": xu_var,
            "g_mean_over_sigma": gbar / s, "g_var_over_sigma2": dg / s**2,
            "m2_over_sigma2": m.pow(2) / s**2,
            "max_dev_mean": (am - pred_mean).abs(), "max_dev_var": (av - pred_var).abs(),
            "max_dev_grad": (a - pred).abs().amax(1), "max_dev_xu_mean": (am - xu_mean).abs(),
            "max_dev_xu_var": (av - xu_var).abs(), "max_abs_pred": pred.abs().amax(1)}


def gradient_stats(model: nn.Module, inputs: Inputs, labels: Tensor, *,
                   sites: SiteSelection = "all", batch_size: int = 256,
                   loss_fn: LossFn | None = None, token_mask: Tensor | str | None = "auto",
                   batch_dim: int | None = None) -> GradientStats:
    """Xu et al.'s A1 on a real batch: measured vs closed-form mean/variance of each norm's
    input gradient (module doc). Sites without a closed form (no norm, unknown kinds) are
    listed in ``skipped``; Gemma-style ``(1 + w)`` gains are not recognised (the deviation
    fields would show it)."""
    mask = _token_mask(inputs, token_mask)
    acc: dict[str, dict[str, float]] = {}
    rows: dict[str, int] = {}
    skipped: dict[str, str] = {}
    forms: dict[str, _Form | str] = {}

    def consume(site: NormSite, grads: list[_Grads], b: int, idx: Tensor) -> None:
        form = forms.get(site.name)
        if form is None:
            form = forms[site.name] = _form(site)
        if isinstance(form, str):
            skipped[site.name] = form
            return
        for gr in grads:
            if gr.upstream is None or gr.call.out is None:
                skipped[site.name] = "output does not reach the loss"
                return
            xs = _btf(gr.call.x.detach(), site, b, batch_dim)
            m = _chunk_mask(mask, idx, b, xs.shape[1], xs.device)
            n = xs.shape[-1]
            sel = m.reshape(-1)
            xr = xs.reshape(-1, n)[sel]
            ar = _btf(gr.branch, site, b, batch_dim).reshape(-1, n)[sel]
            gu = _btf(gr.upstream, site, b, batch_dim).reshape(-1, n)[sel]
            if form.gain is not None and form.gain.numel() != n:
                skipped[site.name] = "gain shape does not match the features"
                return
            st = _row_stats(xr, ar, gu, form)
            a = acc.setdefault(site.name, {})
            for k in STAT_FIELDS:
                a[k] = a.get(k, 0.0) + float(st[k].sum())
            for k in (*_MAX_FIELDS, "max_abs_pred"):
                a[k] = max(a.get(k, 0.0), float(st[k].max()) if st[k].numel() else 0.0)
            rows[site.name] = rows.get(site.name, 0) + int(st["mean"].numel())

    chosen = _run(model, inputs, labels, sites, batch_size, loss_fn, True, consume)
    out = []
    for s in chosen:
        if s.name in skipped or s.name not in acc:
            skipped.setdefault(s.name, "not called")
            continue
        form = forms[s.name]
        assert isinstance(form, _Form)
        r, a = rows[s.name], acc[s.name]
        st = SiteGradStats(s.name, s.block, s.group, s.order, s.kind, form.detach,
                           form.gain is not None or form.ada is not None, r)
        for k in STAT_FIELDS:
            setattr(st, k, a[k] / r if r else math.nan)
        for k in (*_MAX_FIELDS, "max_abs_pred"):
            setattr(st, k, a[k])
        st.rel_dev_grad = st.max_dev_grad / st.max_abs_pred if st.max_abs_pred > 0 else (
            0.0 if st.max_dev_grad == 0 else math.inf)
        out.append(st)
    return GradientStats(out, sorted(skipped.items(), key=lambda kv: kv[0]))


# --------------------------------------------------------------------------- 3. trainer hook

def _pick(n: int, k: int | None, seed: int) -> Tensor:
    if k is None or k >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:k].sort().values


def gradient_hook(data: Any = None, noisy_mask: Tensor | None = None, *,
                  train_labels: Tensor | None = None, every: int = 1,
                  max_learn: int | None = 512, max_mem: int | None = 512,
                  norms: bool = True, stats: bool = True, stats_samples: int = 256,
                  reduction: str = "sample", sites: SiteSelection = "all",
                  batch_size: int = 256, seed: int = 0, prefix: str = "grad",
                  stats_prefix: str = "gstat",
                  stats_fields: Sequence[str] = (*STAT_FIELDS, "max_dev_mean", "max_dev_var",
                                                 "rel_dev_grad")
                  ) -> Callable[[Any], dict[str, float]]:
    """A trainer hook (``lnlab.train.train(cfg, hooks=[gradient_hook()])``) recording, every
    ``every`` epochs and at the last one, per site:

    * ``{prefix}/learn_total/<site>``, ``learn_branch``, ``mem_total``, ``mem_branch`` (means
      over up to ``max_learn`` test samples / ``max_mem`` noisy samples), and
      ``{prefix}/n_learn``, ``{prefix}/n_mem``;
    * with ``stats``, ``{stats_prefix}/<field>/<site>`` for ``stats_fields`` of
      :class:`SiteGradStats`, on ``stats_samples`` training samples with their training labels.

    ``data`` (a :class:`lnlab.data.Dataset`), ``noisy_mask`` and ``train_labels`` default to the
    trainer state's (``state.data``, ``state.labels.mask``, ``state.labels.labels``). Subsets are
    drawn once from ``seed`` with a private generator, so the trainer's RNG is untouched.
    """
    if every < 1:
        raise LnlabError(f"every must be >= 1, got {every}")
    if reduction not in REDUCTIONS:
        raise LnlabError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    bad = [f for f in stats_fields if f not in {x.name for x in fields(SiteGradStats)}]
    if bad:
        raise LnlabError(f"unknown stats field {bad[0]!r}")

    def hook(state: Any) -> dict[str, float]:
        epoch = int(getattr(state, "epoch", 0))
        last = getattr(getattr(state, "cfg", None), "epochs", None)
        if epoch % every and epoch != last:
            return {}
        d = data if data is not None else state.data
        labels_obj = getattr(state, "labels", None)
        mask = noisy_mask if noisy_mask is not None else getattr(labels_obj, "mask", None)
        y_tr = train_labels if train_labels is not None else (
            labels_obj.labels if labels_obj is not None else d.y_train)
        model = state.model
        out: dict[str, float] = {}
        if norms:
            li = _pick(len(d.y_test), max_learn, seed)
            learn = (d.x_test.index_select(0, li), d.y_test.index_select(0, li))
            mem = None
            if mask is not None and bool(mask.any()):
                ni = mask.nonzero()[:, 0]
                ni = ni.index_select(0, _pick(len(ni), max_mem, seed + 1))
                mem = (d.x_train.index_select(0, ni), y_tr.index_select(0, ni))
            res = gradient_norms(model, learn, mem, sites=sites, reduction=reduction,
                                 batch_size=batch_size)
            for s in res.sites:
                out[f"{prefix}/learn_total/{s.name}"] = s.learning_total
                out[f"{prefix}/learn_branch/{s.name}"] = s.learning_branch
                if mem is not None:  # no noisy samples: no memorization keys (not NaNs)
                    out[f"{prefix}/mem_total/{s.name}"] = s.memorization_total
                    out[f"{prefix}/mem_branch/{s.name}"] = s.memorization_branch
            out[f"{prefix}/n_learn"] = float(len(li))
            out[f"{prefix}/n_mem"] = float(0 if mem is None else len(mem[1]))
        if stats:
            ti = _pick(len(y_tr), stats_samples, seed + 2)
            gs = gradient_stats(model, d.x_train.index_select(0, ti), y_tr.index_select(0, ti),
                                sites=sites, batch_size=batch_size)
            for s in gs.sites:
                for f in stats_fields:
                    out[f"{stats_prefix}/{f}/{s.name}"] = float(getattr(s, f))
        return out

    return hook


def unflatten(metrics: Mapping[str, Any], prefix: str = "grad") -> dict[str, dict[str, Any]]:
    """``{"grad/learn_total/blocks.0.norm1": v, ...}`` -> ``{"learn_total": {"blocks.0.norm1":
    v}}`` (site names keep their dots; keys without the prefix are ignored)."""
    out: dict[str, dict[str, Any]] = {}
    for k, v in metrics.items():
        parts = k.split("/", 2)
        if len(parts) == 3 and parts[0] == prefix:
            out.setdefault(parts[1], {})[parts[2]] = v
    return out
