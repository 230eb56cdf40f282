"""The fused norm as ``torch.library`` custom ops: ``lnlab::norm_fwd`` and ``lnlab::norm_bwd``.

Why ops rather than an ``autograd.Function`` around ctypes: the dispatcher sees one opaque op
with a fake (meta) kernel, an autograd formula and a vmap rule, so ``torch.compile`` traces it
without a graph break and ``torch.export`` records it. The kernel itself (thread count, library
lookup) runs only inside the op, never in traced Python.

This module defines the schemas, the fake kernels, the vmap rules, a device-generic tensor-code
implementation and a Python autograd formula. Once ``lnlab.norms._kernels`` has built and loaded
the library, its C++ code (``csrc/lnops.cpp``) takes over the CPU kernels of both ops and the
CPU autograd of ``norm_fwd`` (dispatcher keys ``CPU`` and ``AutogradCPU``): at small shapes
Python dispatch would cost more than the computation.

Both ops work on a 2-D ``(M, N)`` input whose rows are cut into ``groups`` contiguous groups:

    norm_fwd(x, weight?, bias?, groups, eps, center, detach_mean, detach_std, ada, C, k)
        -> (y, stats)            stats[0] = mean, stats[1] = 1/sigma, each of length M * groups
    norm_bwd(dy, x, weight?, stats, groups, eps, center, detach_mean, detach_std, ada, C, k,
             need_w, need_b) -> (dx, dw, db)     dw / db have N elements, or 0 when not needed

Off CPU, or before / without the compiled library, the same formulas run as plain tensor code
inside the op (``_fwd_math`` / ``_bwd_math``). Second derivatives (``create_graph=True``) go
through ``norm_bwd``'s autograd, which differentiates the composite formula, so they stay exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["norm_bwd", "norm_fwd"]

# --------------------------------------------------------------------------- math fallback


def _fwd_math(x, weight, bias, groups, eps, center, ada, C, k):
    m, n = x.shape
    xs = x.reshape(m, groups, n // groups)
    if center:
        mu = xs.mean(-1, keepdim=True)
        var = (xs - mu).pow(2).mean(-1, keepdim=True)
    else:
        mu = torch.zeros_like(xs[..., :1])
        var = xs.pow(2).mean(-1, keepdim=True)
    r = torch.rsqrt(var + eps)
    h = (xs - mu) * r
    if ada:
        h = C * (1.0 - k * h) * h
    y = h.reshape(m, n)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, torch.stack((mu.reshape(-1), r.reshape(-1)))


def _bwd_math(dy, x, weight, stats, groups, center, detach_mean, detach_std, ada, C, k,
              need_w, need_b):
    """The analytic backward of csrc/lnkernels.c in tensor ops (same formulas)."""
    m, n = x.shape
    d = n // groups
    mu = stats[0].reshape(m, groups, 1)
    r = stats[1].reshape(m, groups, 1)
    h = (x.reshape(m, groups, d) - mu) * r
    dys = dy.reshape(m, groups, d)
    a = C * (1.0 - k * h) if ada else None
    gy = dys if weight is None else dys * weight.reshape(groups, d)
    if a is not None:
        gy = gy * a
    dx = gy
    if center and not detach_mean:
        dx = dx - gy.mean(-1, keepdim=True)
    if not detach_std:
        dx = dx - h * (gy * h).mean(-1, keepdim=True)
    dx = (dx * r).reshape(m, n)
    dw = x.new_empty(0)
    if need_w:
        ah = h if a is None else a * h
        dw = (dys * ah).reshape(m, n).sum(0)
    db = dy.sum(0) if need_b else x.new_empty(0)
    return dx, dw, db


# --------------------------------------------------------------------------- the ops


@torch.library.custom_op(
    "lnlab::norm_fwd",
    mutates_args=(),
    schema="(Tensor x, Tensor? weight, Tensor? bias, int groups, float eps, bool center, "
    "bool detach_mean, bool detach_std, bool ada, float C, float k) -> (Tensor, Tensor)",
)
def norm_fwd(x, weight, bias, groups, eps, center, detach_mean, detach_std, ada, C, k):
    """Forward on any device, as tensor code (on CPU the C++ kernel replaces it once loaded)."""
    return _fwd_math(x, weight, bias, groups, eps, center, ada, C, k)


@norm_fwd.register_fake
def _norm_fwd_fake(x, weight, bias, groups, eps, center, detach_mean, detach_std, ada, C, k):
    torch._check(x.dim() == 2, lambda: "norm_fwd expects a 2-D (rows, features) input")
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(
        (2, x.shape[0] * groups))


@torch.library.custom_op(
    "lnlab::norm_bwd",
    mutates_args=(),
    schema="(Tensor dy, Tensor x, Tensor? weight, Tensor stats, int groups, float eps, "
    "bool center, "
    "bool detach_mean, bool detach_std, bool ada, float C, float k, bool need_w, "
    "bool need_b) -> (Tensor, Tensor, Tensor)",
)
def norm_bwd(dy, x, weight, stats, groups, eps, center, detach_mean, detach_std, ada, C, k,
             need_w, need_b):
    """Backward on any device, as tensor code (on CPU the C++ kernel replaces it once loaded)."""
    return _bwd_math(dy, x, weight, stats, groups, center, detach_mean, detach_std, ada, C, k,
                     need_w, need_b)


@norm_bwd.register_fake
def _norm_bwd_fake(dy, x, weight, stats, groups, eps, center, detach_mean, detach_std, ada,
                   C, k,
                   need_w, need_b):
    n = x.shape[1]
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty(n if need_w else 0), x.new_empty(n if need_b else 0))


# --------------------------------------------------------------------------- autograd


def _setup_context(ctx, inputs, output):
    x, weight, bias, groups, eps, center, detach_mean, detach_std, ada, C, k = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.cfg = (groups, eps, center, detach_mean, detach_std, ada, C, k)
    ctx.has_b = bias is not None


def _backward(ctx, dy, _dstats):
    x, weight, stats = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_w = bool(need_w and weight is not None)
    need_b = bool(need_b and ctx.has_b)
    dx, dw, db = torch.ops.lnlab.norm_bwd(dy, x, weight, stats, *ctx.cfg, need_w, need_b)
    return (dx if need_x else None, dw if need_w else None, db if need_b else None,
            *(None,) * 8)


def _bwd_setup_context(ctx, inputs, output):
    dy, x, weight, _, groups, eps, center, detach_mean, detach_std, ada, C, k, _, _ = inputs
    ctx.save_for_backward(dy, x, weight)
    ctx.cfg = (groups, eps, center, detach_mean, detach_std, ada, C, k)


def _bwd_backward(ctx, ddx, ddw, ddb):
    """Second derivatives: the vector-Jacobian product of the composite backward, so they are
    exact (the detaches of DetachNorm / AdaNorm are kept)."""
    from lnlab.norms.functional import _composite

    dy, x, weight = ctx.saved_tensors
    groups, eps, center, dmean, dstd, ada, C, k = ctx.cfg
    need = ctx.needs_input_grad[:3]
    with torch.enable_grad():
        dy_, x_ = dy.detach().requires_grad_(), x.detach().requires_grad_()
        w_ = None if weight is None else weight.detach().requires_grad_()
        # db = sum(dy) enters through a zero bias
        b_ = x.new_zeros(x.shape[1]).requires_grad_() if ddb is not None and ddb.numel() else None
        y = _composite(x_, w_, b_, (x.shape[1],), groups, eps, center, dmean, dstd, ada, C, k)
        pairs = [(t, o) for t, o in ((x_, ddx), (w_, ddw), (b_, ddb))
                 if t is not None and o is not None and o.numel()]
        wrt = [dy_, x_] + ([w_] if w_ is not None else [])
        res = [None] * len(wrt)
        if pairs:
            g = torch.autograd.grad(y, [p[0] for p in pairs], dy_, create_graph=True)
            res = torch.autograd.grad(g, wrt, [p[1] for p in pairs], allow_unused=True)
    res = list(res) + [None] * (3 - len(res))
    return (*(r if nd else None for r, nd in zip(res, need, strict=True)), *(None,) * 11)


torch.library.register_autograd("lnlab::norm_fwd", _backward, setup_context=_setup_context)
torch.library.register_autograd("lnlab::norm_bwd", _bwd_backward,
                                setup_context=_bwd_setup_context)


# --------------------------------------------------------------------------- vmap


def _front(t: Tensor | None, d: int | None, size: int) -> Tensor | None:
    """Batch dim first; an unbatched tensor is expanded to the batch size."""
    if t is None:
        return None
    if d is None:
        return t.unsqueeze(0).expand(size, *t.shape)
    return t.movedim(d, 0)


def _fwd_vmap(info, in_dims, x, weight, bias, *cfg):
    xd, wd, bd = in_dims[:3]
    size = info.batch_size
    if wd is None and bd is None:
        # rows are independent: fold the batch into the rows, one call
        xb = _front(x, xd, size)
        bsz, m, n = xb.shape
        y, stats = torch.ops.lnlab.norm_fwd(xb.reshape(bsz * m, n), weight, bias, *cfg)
        groups = cfg[0]
        return (y.reshape(bsz, m, n), stats.reshape(2, bsz, m * groups)), (0, 1)
    xb, wb, bb = _front(x, xd, size), _front(weight, wd, size), _front(bias, bd, size)
    outs = [torch.ops.lnlab.norm_fwd(xb[i], None if wb is None else wb[i],
                                     None if bb is None else bb[i], *cfg)
            for i in range(size)]
    return (torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])), (0, 0)


def _bwd_vmap(info, in_dims, dy, x, weight, stats, *cfg):
    size = info.batch_size
    dyb, xb = _front(dy, in_dims[0], size), _front(x, in_dims[1], size)
    wb, sb = _front(weight, in_dims[2], size), _front(stats, in_dims[3], size)
    need_w, need_b = cfg[-2], cfg[-1]
    if in_dims[2] is None and not (need_w or need_b):
        bsz, m, n = xb.shape
        dx, dw, db = torch.ops.lnlab.norm_bwd(
            dyb.reshape(bsz * m, n), xb.reshape(bsz * m, n), weight,
            sb.movedim(1, 0).reshape(2, -1), *cfg)
        return (dx.reshape(bsz, m, n), dw.expand(bsz, 0), db.expand(bsz, 0)), (0, 0, 0)
    outs = [torch.ops.lnlab.norm_bwd(dyb[i], xb[i], None if wb is None else wb[i], sb[i], *cfg)
            for i in range(size)]
    return tuple(torch.stack([o[j] for o in outs]) for j in range(3)), (0, 0, 0)


torch.library.register_vmap("lnlab::norm_fwd", _fwd_vmap)
torch.library.register_vmap("lnlab::norm_bwd", _bwd_vmap)

