"""Functional forms of every normalization in the zoo.

All of them are one computation with switches (see ``normalize``):

    h = (x - mu) / sigma            per row, or per group of features (LN-G)
    h = C (1 - k h) * h             AdaNorm, the factor C (1 - k h) detached from the graph
    y = h * weight + bias           optional per-feature affine

with mu and/or sigma optionally detached (DetachNorm, Xu et al. 2019) and mu = 0 for RMSNorm.
Statistics use the biased variance with eps inside the square root, as ``F.layer_norm``.

On CPU (float32/float64; bf16/fp16 are computed in float32) a fused C kernel with an analytic
backward does the work; elsewhere, or with ``impl="composite"``, plain PyTorch autograd code
computes the same thing. Plain LayerNorm with or without affine goes to ``F.layer_norm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lnlab.norms._kernels import kernel_lib

__all__ = [
    "ada_norm",
    "detach_norm",
    "group_layer_norm",
    "layer_norm",
    "layer_norm_simple",
    "normalize",
    "rms_norm",
]

_IMPLS = ("auto", "kernel", "composite")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    return tuple(int(s) for s in normalized_shape)


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _FusedNorm(torch.autograd.Function):
    """Autograd wrapper around the C kernels; the backward is analytic (see csrc)."""

    @staticmethod
    def forward(ctx, x, weight, bias, n, groups, eps, center, detach_mean, detach_std, ada, C, k):
        if x.dtype not in (torch.float32, torch.float64):  # the kernels exist for these only
            raise TypeError(f"_FusedNorm needs float32/float64 input, got {x.dtype}")
        lib = kernel_lib()
        x2 = x.contiguous().view(-1, n)
        m = x2.shape[0]
        y = torch.empty_like(x2)
        stats = torch.empty(2, m * groups, dtype=x.dtype)
        mean, rstd = stats[0], stats[1]
        w = None if weight is None else weight.contiguous()
        b = None if bias is None else bias.contiguous()
        fwd = lib.lnk_forward_f32 if x.dtype == torch.float32 else lib.lnk_forward_f64
        if m:
            fwd(x2.data_ptr(), _ptr(w), _ptr(b), y.data_ptr(), mean.data_ptr(), rstd.data_ptr(),
                m, n, groups, eps, int(center), int(ada), C, k, torch.get_num_threads())
        # The inputs themselves are saved (not x2 / w), so that a double backward can rebuild
        # the graph from them; for contiguous input this costs nothing extra.
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.cfg = (n, groups, eps, center, detach_mean, detach_std, ada, C, k)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        n, groups, _eps, center, dmean, dstd, ada, C, k = ctx.cfg
        if torch.is_grad_enabled():
            # create_graph=True (double backward, Hessians): differentiate the composite
            # formula instead, so higher derivatives are right rather than silently zero.
            return _FusedNorm._differentiable_backward(ctx, dy)
        has_bias = bias is not None
        x2 = x.contiguous().view(-1, n)
        w = None if weight is None else weight.contiguous()
        lib = kernel_lib()
        dy2 = dy.contiguous().view(-1, n)
        m = x2.shape[0]
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx = torch.empty_like(x2) if need_x else None
        dw = torch.empty(n, dtype=x2.dtype) if (need_w and w is not None) else None
        db = torch.empty(n, dtype=x2.dtype) if (need_b and has_bias) else None
        nt = torch.get_num_threads()
        need_p = dw is not None or db is not None
        part = torch.empty(nt * 2 * n, dtype=x2.dtype) if need_p else None
        bwd = lib.lnk_backward_f32 if x2.dtype == torch.float32 else lib.lnk_backward_f64
        if m:
            bwd(dy2.data_ptr(), x2.data_ptr(), _ptr(w), mean.data_ptr(), rstd.data_ptr(),
                _ptr(dx), _ptr(dw), _ptr(db), _ptr(part), m, n, groups, int(center),
                int(dmean), int(dstd), int(ada), C, k, nt)
        else:
            if dw is not None:
                dw.zero_()
            if db is not None:
                db.zero_()
        return (None if dx is None else dx.view(x.shape), dw, db) + (None,) * 9

    @staticmethod
    def _differentiable_backward(ctx, dy):
        x, weight, bias, _, _ = ctx.saved_tensors
        n, groups, eps, center, dmean, dstd, ada, C, k = ctx.cfg
        inputs = [t for t, need in zip((x, weight, bias), ctx.needs_input_grad[:3], strict=True)
                  if need and t is not None]
        y = _composite(x.reshape(-1, n), weight, bias, (n,), groups, eps, center, dmean, dstd,
                       ada, C, k)
        grads = iter(torch.autograd.grad(y, inputs, dy.reshape(-1, n), create_graph=True))
        out = [next(grads) if (need and t is not None) else None
               for t, need in zip((x, weight, bias), ctx.needs_input_grad[:3], strict=True)]
        if out[0] is not None:
            out[0] = out[0].view(x.shape)
        return (*out, *(None,) * 9)


def _composite(x, weight, bias, shape, groups, eps, center, detach_mean, detach_std, ada, C, k):
    """Plain autograd version: used off-CPU, without a compiler, and as a cross-check."""
    in_dtype = x.dtype
    if in_dtype in _LOW_PRECISION:
        x = x.float()
    lead = x.shape[: x.dim() - len(shape)]
    n = math.prod(shape)
    xs = x.reshape(*lead, groups, n // groups)
    if center:
        mu = xs.mean(-1, keepdim=True)
        var = (xs - mu).pow(2).mean(-1, keepdim=True)
    else:
        mu = torch.zeros((), dtype=xs.dtype, device=xs.device)
        var = xs.pow(2).mean(-1, keepdim=True)
    sigma = torch.sqrt(var + eps)
    if detach_mean:
        mu = mu.detach()
    if detach_std:
        sigma = sigma.detach()
    h = (xs - mu) / sigma
    if ada:
        h = (C * (1.0 - k * h)).detach() * h
    h = h.reshape(*lead, *shape)
    if weight is not None:
        h = h * weight.to(h.dtype)
    if bias is not None:
        h = h + bias.to(h.dtype)
    return h.to(in_dtype)


def normalize(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    groups: int = 1,
    center: bool = True,
    detach_mean: bool = False,
    detach_std: bool = False,
    ada: bool = False,
    C: float = 1.0,
    k: float = 0.1,
    impl: str = "auto",
) -> Tensor:
    """The general normalization over the trailing ``normalized_shape`` dims (see module doc).

    ``impl``: "auto" uses the fused CPU kernel when it applies, "kernel" insists on it,
    "composite" forces plain PyTorch autograd code.
    """
    shape = _shape(normalized_shape)
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    if tuple(x.shape[x.dim() - len(shape):]) != shape or x.dim() < len(shape):
        raise ValueError(
            f"input of shape {tuple(x.shape)} does not end with normalized_shape {shape}"
        )
    n = math.prod(shape)
    if groups < 1 or n % groups:
        raise ValueError(f"groups={groups} must be a positive divisor of the feature size {n}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(p.shape)}, expected {shape}")
    use_kernel = (
        impl != "composite"
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64, *_LOW_PRECISION)
        and kernel_lib() is not None
    )
    if impl == "kernel" and not use_kernel:
        raise RuntimeError(
            "the fused CPU kernel does not apply here (see lnlab.norms.kernel_status)"
        )
    if not use_kernel:
        return _composite(x, weight, bias, shape, groups, eps, center, detach_mean, detach_std,
                          ada, C, k)
    in_dtype = x.dtype
    cdtype = torch.float32 if in_dtype in _LOW_PRECISION else in_dtype
    xc = x.to(cdtype)
    w = None if weight is None else weight.to(cdtype).reshape(n)
    b = None if bias is None else bias.to(cdtype).reshape(n)
    y = _FusedNorm.apply(xc, w, b, n, groups, float(eps), center, detach_mean, detach_std, ada,
                         float(C), float(k))
    return y.to(in_dtype)


def layer_norm(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Standard LayerNorm (Ba et al. 2016): the native ``F.layer_norm``."""
    return F.layer_norm(x, _shape(normalized_shape), weight, bias, eps)


def layer_norm_simple(
    x: Tensor, normalized_shape: int | Sequence[int], eps: float = 1e-5
) -> Tensor:
    """LayerNorm-simple (Xu et al. 2019): (x - mu) / sigma, no gain and no bias."""
    return F.layer_norm(x, _shape(normalized_shape), None, None, eps)


def detach_norm(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    detach_mean: bool = True,
    detach_std: bool = True,
    impl: str = "auto",
) -> Tensor:
    """DetachNorm (Xu et al. 2019): LN forward, backward treats mu and/or sigma as constants."""
    return normalize(x, normalized_shape, weight, bias, eps, detach_mean=detach_mean,
                     detach_std=detach_std, impl=impl)


def ada_norm(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    C: float = 1.0,
    k: float = 0.1,
    eps: float = 1e-5,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    impl: str = "auto",
) -> Tensor:
    """AdaNorm (Xu et al. 2019): z = C (1 - k y) * y with y = LN-simple(x), the factor detached."""
    return normalize(x, normalized_shape, weight, bias, eps, ada=True, C=C, k=k, impl=impl)


def group_layer_norm(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    impl: str = "auto",
) -> Tensor:
    """LN-G (Ni et al. 2024): features cut into ``groups`` contiguous groups, each normalized."""
    return normalize(x, normalized_shape, weight, bias, eps, groups=groups, impl=impl)


def rms_norm(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    eps: float = 1e-6,
    *,
    impl: str = "auto",
) -> Tensor:
    """RMSNorm (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps), optional gain."""
    return normalize(x, normalized_shape, weight, None, eps, center=False, impl=impl)
