"""Fold a norm's gain and bias into the linear maps that read its output (exact, same function).

Resetting a pretrained LN to (1, 0) does two things at once: it removes learnable parameters
and it changes the network's function. Where an LN's output feeds *only* linear maps (Pre-LN
blocks: LN → Q/K/V, LN → FFN input; a final LN → a linear head), the affine step can be moved
into those maps instead::

    W (g ⊙ n + b) + c  =  (W diag g) n + (W b + c)

so the LN is left at (1, 0), frozen, and the model computes the same function (up to float
round-off), as TransformerLens's ``fold_ln`` does. Where the LN output also feeds anything
else — the residual stream in Post-LN blocks (BERT: ``x' = LN(x + F(x))`` is both the next
sub-layer's input and its skip path) — no exact fold exists and :func:`fold_affine` raises.

Which maps read an LN's output, and whether they are the only readers, is found by tracing one
forward pass (no knowledge of the architecture): a linear map is a consumer when its input is
the LN's output tensor (or a reshape of it that keeps the feature rows); exclusivity is checked
with gradients — for a random projection of the model output, the gradient at the LN output
must equal the sum of the gradients at the consumers' inputs (an extra reader adds its own
term). After folding, the relative output change on the example input is measured and kept
as ``report.output_change``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lnlab.errors import LnlabError
from lnlab.surgery import (
    _NATIVE_FORWARDS,
    Change,
    NormSite,
    SurgeryReport,
    _call,
    _describe,
    _first_tensor,
    _is_param,
    _neutral_gain,
    _strip_module,
    find_norms,
    select_sites,
)

__all__ = ["fold_affine"]


def _is_linear(m: nn.Module) -> bool:
    """``nn.Linear`` or GPT-2's transposed ``Conv1D`` (weight ``(in, out)``)."""
    return isinstance(m, nn.Linear) or (type(m).__name__ == "Conv1D" and hasattr(m, "nx")
                                        and isinstance(getattr(m, "weight", None), Tensor))


def _same_rows(x: Tensor, t: Tensor) -> bool:
    """``x`` is ``t`` or a reshape of it that keeps the feature rows (same contiguous memory,
    same last dimension): a linear map on ``x`` reads exactly ``t``'s feature vectors."""
    if x is t:
        return True
    return (x.dim() >= 1 and t.dim() >= 1 and x.shape[-1] == t.shape[-1]
            and x.numel() == t.numel() and x.data_ptr() == t.data_ptr()
            and x.dtype == t.dtype and x.is_contiguous() and t.is_contiguous())


def _effective_gain(site: NormSite) -> Tensor | None:
    m = site.module
    if not _is_param(m, "weight"):
        return None
    w = m._parameters["weight"].detach()
    if type(m).forward in _NATIVE_FORWARDS or site.source == "lnlab":
        return w
    neutral = _neutral_gain(m, site.shape, site.eps)
    return w if neutral == 1.0 else w + 1.0  # Gemma-style (1 + w) * y


def _trace_consumers(model: nn.Module, example: Any, sites: list[NormSite], seed: int
                     ) -> tuple[dict[str, list[tuple[str, nn.Module]]], dict[str, float], Tensor,
                                dict[str, int]]:
    """Per site: the linear modules whose input is its output, and the relative gradient
    residual ‖g_out − Σ g_consumer_in‖ / ‖g_out‖ (0 when the consumers are the only readers)."""
    outs: dict[str, Tensor] = {}
    aliases: dict[str, list[Tensor]] = {s.name: [] for s in sites}
    consumers: dict[str, list[tuple[str, nn.Module]]] = {s.name: [] for s in sites}
    handles = []

    calls: dict[str, int] = {}

    def norm_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            t = _first_tensor(out)
            if t is not None and name not in outs:
                outs[name] = t
        return hook

    def lin_hook(lname: str) -> Callable[..., Any]:
        def hook(mod: nn.Module, args: tuple) -> Any:
            calls[lname] = calls.get(lname, 0) + 1
            if not args or not isinstance(args[0], Tensor):
                return None
            for sname, t in outs.items():
                if _same_rows(args[0], t):
                    alias = args[0].view_as(args[0])
                    aliases[sname].append(alias)
                    consumers[sname].append((lname, mod))
                    return (alias, *args[1:])
            return None
        return hook

    modes = {m: m.training for m in model.modules()}
    try:
        for s in sites:
            handles.append(s.module.register_forward_hook(norm_hook(s.name)))
        for lname, mod in model.named_modules():
            if _is_linear(mod):
                handles.append(mod.register_forward_pre_hook(lin_hook(lname)))
        model.eval()
        with torch.enable_grad():
            out = _first_tensor(_call(model, example))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    if out is None:
        raise LnlabError("fold_affine: the model returned no tensor for the example input")
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device, out.dtype)
    residual: dict[str, float] = {}
    for s in sites:
        o = outs.get(s.name)
        if o is None or not o.requires_grad:
            continue
        ins = [o, *aliases[s.name]]
        grads = torch.autograd.grad((out * r).sum(), ins, retain_graph=True, allow_unused=True)
        g_out = grads[0] if grads[0] is not None else torch.zeros_like(o)
        g_sum = sum((g.reshape(o.shape) for g in grads[1:] if g is not None),
                    torch.zeros_like(o))
        den = float(g_out.double().norm())
        num = float((g_out.double() - g_sum.double()).norm())
        residual[s.name] = num / den if den > 0 else (0.0 if num == 0 else float("inf"))
    return consumers, residual, out.detach(), calls


@torch.no_grad()
def _fold_into(lin: nn.Module, g: Tensor | None, b: Tensor | None) -> str:
    """Fold gain ``g`` and bias ``b`` (of the input features) into one linear map."""
    conv = not isinstance(lin, nn.Linear)  # Conv1D: y = x @ W + c, W of shape (in, out)
    w = lin.weight
    w64 = w.detach().double()
    shift = None
    if b is not None:
        b64 = b.detach().double().to(w.device)
        shift = b64 @ w64 if conv else w64 @ b64
    if g is not None:
        g64 = g.detach().double().to(w.device)
        w.copy_((w64 * g64[:, None] if conv else w64 * g64[None, :]).to(w.dtype))
    note = ""
    if shift is not None:
        bias = getattr(lin, "bias", None)
        if isinstance(bias, Tensor):
            bias.copy_((bias.detach().double() + shift).to(bias.dtype))
        elif bool(shift.any()):
            lin.bias = nn.Parameter(shift.to(w.dtype))
            note = " (bias added)"
    return note


def fold_affine(model: nn.Module,
                where: str | Sequence[str] | Callable[[NormSite], bool] = "all",
                *, example_input: Any, skip_unfoldable: bool = False, tol: float | None = None,
                seed: int = 0) -> SurgeryReport:
    """Fold the selected norms' gain and bias into the linear maps that read their outputs.

    Afterwards each folded norm computes its normalisation only (its gain and bias are gone
    from ``model.parameters()``, as with :func:`lnlab.surgery.strip_affine`) and the model
    computes the same function. ``example_input`` (required) is traced once to find the
    readers. A norm whose output also feeds anything that is not a linear map (the residual
    stream in Post-LN, pooling before a head, the model output) raises :class:`LnlabError`,
    or is listed in ``report.skipped`` with ``skip_unfoldable``. ``tol`` bounds the relative
    gradient residual of that check (default: 1e-6 in float64, 1e-3 otherwise).
    """
    sites = [s for s in select_sites(find_norms(model, example_input), where)]
    report = SurgeryReport("fold_affine")
    todo = []
    for s in sites:
        if not (s.has_gain or s.has_bias):
            report.skipped.append((s.name, "no trainable gain or bias"))
        elif s.called is False:
            report.skipped.append((s.name, "not used by the example input"))
        else:
            todo.append(s)
    if not todo:
        return report
    consumers, residual, before_out, calls = _trace_consumers(model, example_input, todo, seed)
    owner: dict[int, str] = {}
    plans = []
    for s in todo:
        dtype = next(iter(s.module.parameters(recurse=False))).dtype
        limit = tol if tol is not None else (1e-6 if dtype == torch.float64 else 1e-3)
        cons = consumers[s.name]
        why = ""
        if not cons:
            why = "its output feeds no linear map directly"
        elif residual.get(s.name, 0.0) > limit:
            why = (f"its output also feeds something other than the linear maps "
                   f"{', '.join(n for n, _ in cons)} (e.g. the residual stream, as in Post-LN)")
        for n, mod in cons:
            if id(mod) in owner and owner[id(mod)] != s.name:
                why = f"{n} also reads the output of {owner[id(mod)]}"
            owner.setdefault(id(mod), s.name)
            if calls.get(n, 0) > sum(m is mod for _, m in cons):
                why = f"{n} is also called on other inputs (shared weights)"
        if calls.get(s.name, 0) > 1:
            why = "the norm runs more than once per forward pass (shared module)"
        if why:
            if not skip_unfoldable:
                raise LnlabError(f"fold_affine: cannot fold {s.name}: {why}; its gain and bias "
                                 "cannot be moved into linear maps exactly")
            report.skipped.append((s.name, why))
            continue
        plans.append((s, cons))
    for s, cons in plans:
        m = s.module
        g = _effective_gain(s)
        b = m._parameters["bias"].detach() if _is_param(m, "bias") else None
        g, b = (None if g is None else g.clone()), (None if b is None else b.clone())
        before = _describe(m)
        # one consumer may be shared (deduplicate: a module called twice on the same output)
        uniq = list({id(mod): (n, mod) for n, mod in cons}.values())
        notes = [n + _fold_into(mod, g, b) for n, mod in uniq]
        removed, how = _strip_module(m, s.shape, s.eps)
        report.changes.append(Change(s.name, before, _describe(m), removed,
                                     f"folded into {', '.join(notes)}; {how}"))
    if plans:
        modes = {m: m.training for m in model.modules()}
        try:
            with torch.no_grad():
                after = _first_tensor(_call(model.eval(), example_input))
        finally:
            for m, mode in modes.items():
                m.training = mode
        assert after is not None
        change = float((after.double() - before_out.double()).norm()
                       / before_out.double().norm().clamp_min(1e-300))
        report.operation = f"fold_affine (relative output change {change:.1e})"
        report.output_change = change  # type: ignore[attr-defined]
    return report
