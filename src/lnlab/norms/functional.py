"""Functional forms of every normalization in the zoo.

All of them are one computation with switches (see ``normalize``):

    h = (x - mu) / sigma            per row, or per group of features (LN-G)
    h = C (1 - k h) * h             AdaNorm, the factor C (1 - k h) detached from the graph
    y = h * weight + bias           optional per-feature affine

with mu and/or sigma optionally detached (DetachNorm, Xu et al. 2019) and mu = 0 for RMSNorm.
Statistics use the biased variance with eps inside the square root, as ``F.layer_norm``.

On CPU (float32/float64; bf16/fp16 are computed in float32) the op ``lnlab::norm_fwd`` (a
fused C kernel with an analytic backward, see ``lnlab.norms.ops``) does the work, also under
``torch.compile`` and ``torch.export``; elsewhere (CUDA: ``torch.compile`` fuses it), under
``torch.func`` transforms, or with ``impl="composite"``, plain PyTorch autograd code computes
the same thing. Plain LayerNorm with or without affine goes to ``F.layer_norm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lnlab.norms import ops as _ops  # noqa: F401  (registers torch.ops.lnlab.*)
from lnlab.norms._kernels import kernels_available

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
_KERNEL_INPUT = (torch.float32, torch.float64, *_LOW_PRECISION)


def _shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    return tuple(int(s) for s in normalized_shape)


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
    # Written for speed: at 64x256 a forward+backward of the native op takes ~40 us, so each
    # microsecond of Python here is 2.5% of the budget.
    if type(normalized_shape) is int or (
            type(normalized_shape) is tuple and len(normalized_shape) == 1
            and type(normalized_shape[0]) is int):
        n = normalized_shape if type(normalized_shape) is int else normalized_shape[0]
        shape = (n,)
        if x.dim() < 1 or x.shape[-1] != n:
            _bad_input(x, shape)
    else:
        shape = _shape(normalized_shape)
        n = math.prod(shape)
        if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape):]) != shape:
            _bad_input(x, shape)
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    if groups < 1 or n % groups:
        raise ValueError(f"groups={groups} must be a positive divisor of the feature size {n}")
    if weight is not None and weight.shape != shape:
        raise ValueError(f"weight has shape {tuple(weight.shape)}, expected {shape}")
    if bias is not None and bias.shape != shape:
        raise ValueError(f"bias has shape {tuple(bias.shape)}, expected {shape}")
    use_kernel = (
        impl != "composite" and x.is_cpu and x.dtype in _KERNEL_INPUT and kernels_available()
    )
    compiling = torch.compiler.is_compiling()
    if use_kernel and not compiling:
        # torch.func transforms get the composite formula, which they transform natively (a
        # CompositeImplicit decomposition); the ops' C++ autograd node is not functorch-aware
        if torch._C._are_functorch_transforms_active():
            if impl == "kernel":
                raise RuntimeError("impl='kernel' cannot run under torch.func transforms; "
                                   "use impl='auto' or 'composite'")
            use_kernel = False
    elif impl == "kernel" and not use_kernel:
        raise RuntimeError(
            "the fused CPU kernel does not apply here (see lnlab.norms.kernel_status)"
        )
    if not use_kernel:
        return _composite(x, weight, bias, shape, groups, eps, center, detach_mean, detach_std,
                          ada, C, k)
    in_dtype = x.dtype
    cdtype = torch.float32 if in_dtype in _LOW_PRECISION else in_dtype
    # (casts and reshapes only where needed)
    xc = x if in_dtype == cdtype else x.to(cdtype)
    if weight is not None and (weight.dtype != cdtype or len(shape) > 1):
        weight = weight.to(cdtype).reshape(n)
    if bias is not None and (bias.dtype != cdtype or len(shape) > 1):
        bias = bias.to(cdtype).reshape(n)
    # eager: the op's C++ entry point directly (skips a Python frame); traced: the op
    op = torch.ops.lnlab.norm_fwd.default
    y, _ = (op if compiling else op._op)(
        xc if xc.dim() == 2 and len(shape) == 1 else xc.reshape(-1, n), weight, bias, groups,
        float(eps), center, detach_mean, detach_std, ada, float(C), float(k))
    if y.shape != x.shape:
        y = y.view(x.shape)
    return y if in_dtype == cdtype else y.to(in_dtype)


def _bad_input(x: Tensor, shape: tuple[int, ...]) -> None:
    raise ValueError(f"input of shape {tuple(x.shape)} does not end with normalized_shape {shape}")


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
