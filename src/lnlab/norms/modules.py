"""``nn.Module`` forms of the norm zoo, with ``torch.nn.LayerNorm``'s argument conventions.

Every module takes ``normalized_shape`` first and accepts ``eps``, ``elementwise_affine`` and
``bias`` (those without learned parameters reject ``elementwise_affine=True``), so a model can
swap one for another by a spec string (see ``lnlab.norms.registry``). Parameters are laid out
as in ``nn.LayerNorm`` (``weight``, ``bias``; ``None`` when absent), so state dicts move between
them and torch's norms. A variant that computes a torch norm's function (forward and backward)
subclasses that torch class: ``isinstance(LayerNorm(8), nn.LayerNorm)`` holds, and likewise for
``LayerNormSimple`` and ``RMSNorm`` (``nn.RMSNorm``). The others derive from :class:`NormBase`.

Every variant also describes its computation as :class:`NormMath` (the switches of
``lnlab.norms.functional.normalize``), which the gradient analysis reads for its closed forms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lnlab.norms import functional as LF

__all__ = [
    "IMPLS",
    "AdaNorm",
    "DetachNorm",
    "GroupLayerNorm",
    "LayerNorm",
    "LayerNormSimple",
    "NoNorm",
    "NormBase",
    "NormMath",
    "RMSNorm",
    "ZooNorm",
]

IMPLS = ("auto", "kernel", "composite")
"""Code paths of the zoo's modules: "auto" (the fastest that applies), "kernel" (insist on
lnlab's fused kernel) or "composite" (plain PyTorch autograd code, for cross-checks)."""


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    return tuple(int(s) for s in normalized_shape)


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    return impl


@dataclass(frozen=True)
class NormMath:
    """What a norm computes, as the switches of ``lnlab.norms.functional.normalize``.

    h = (x - mu) / sigma per group of features (mu = 0 without ``center``), mu and/or sigma
    constant in backward when detached, times AdaNorm's detached factor C (1 - k h) when ``ada``
    is (C, k); then the optional gain and bias. The gradient analysis derives its closed forms
    from this, so a new variant that fills it in is analysed with no other change.
    """

    center: bool = True
    groups: int = 1
    detach_mean: bool = False
    detach_std: bool = False
    ada: tuple[float, float] | None = None


class ZooNorm:
    """Mixin of every zoo variant with a normalizing forward: the ``impl`` switch, its
    :class:`NormMath` and a LayerNorm-style repr. (Mixed into torch's classes too, so that
    ``LayerNorm`` can stay an ``nn.LayerNorm``.)"""

    impl: str
    normalized_shape: tuple[int, ...]
    eps: float
    elementwise_affine: bool
    bias: nn.Parameter | None

    def norm_math(self) -> NormMath | None:
        """The computation as ``normalize`` switches; None if it cannot be written so."""
        return NormMath()

    def extra_repr(self) -> str:
        s = f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        if self.elementwise_affine:
            s += f", bias={self.bias is not None}"
        return s


class NormBase(ZooNorm, nn.Module):
    """Base of the variants that compute no torch norm: ``nn.LayerNorm``'s parameters (an
    optional per-feature gain, 1, and bias, 0) and ``impl``."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        self.impl = _check_impl(impl)
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        kw = {"device": device, "dtype": dtype}
        if self.elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, **kw))
            self.bias = nn.Parameter(torch.empty(self.normalized_shape, **kw)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class LayerNorm(ZooNorm, nn.LayerNorm):
    """Standard LayerNorm: gain * (x - mu) / sigma + bias; an ``nn.LayerNorm``.

    ``impl="auto"`` computes it with the native ``F.layer_norm``; "kernel" / "composite" use
    lnlab's fused kernel or plain autograd code (for cross-checks).
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        impl: str = "auto",
    ) -> None:
        _check_impl(impl)
        super().__init__(_as_shape(normalized_shape), float(eps), bool(elementwise_affine),
                         bias, device, dtype)
        self.impl = impl

    def forward(self, x: Tensor) -> Tensor:
        if self.impl == "auto":
            return LF.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return LF.normalize(x, self.normalized_shape, self.weight, self.bias, self.eps,
                            impl=self.impl)


class LayerNormSimple(LayerNorm):
    """LayerNorm-simple (Xu et al. 2019): LayerNorm with the gain and bias removed."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = False,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        impl: str = "auto",
    ) -> None:
        if elementwise_affine:
            raise ValueError("layernorm_simple has no gain or bias (use 'layernorm')")
        super().__init__(normalized_shape, eps, False, False, device, dtype, impl)


class DetachNorm(NormBase):
    """DetachNorm (Xu et al. 2019): LN forward; backward treats mu and/or sigma as constants.

    ``detach`` is "both" (the paper's DetachNorm), "mean" or "std". As in the paper there is
    no gain or bias by default; ``elementwise_affine=True`` adds them. Not an ``nn.LayerNorm``:
    its gradients differ.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = False,
        bias: bool = True,
        detach: str = "both",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        impl: str = "auto",
    ) -> None:
        if detach not in ("both", "mean", "std"):
            raise ValueError(f"detach must be one of 'both', 'mean', 'std', got {detach!r}")
        self.detach = detach
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype, impl)

    def forward(self, x: Tensor) -> Tensor:
        return LF.detach_norm(
            x, self.normalized_shape, self.weight, self.bias, self.eps,
            detach_mean=self.detach in ("both", "mean"),
            detach_std=self.detach in ("both", "std"),
            impl=self.impl,
        )

    def norm_math(self) -> NormMath:
        return NormMath(detach_mean=self.detach in ("both", "mean"),
                        detach_std=self.detach in ("both", "std"))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, detach={self.detach!r}"


class AdaNorm(NormBase):
    """AdaNorm (Xu et al. 2019): z = C (1 - k y) * y, y = (x - mu) / sigma, factor detached.

    It replaces the gain and bias, so it has no learned parameters.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = False,
        bias: bool = False,
        C: float = 1.0,
        k: float = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        impl: str = "auto",
    ) -> None:
        if elementwise_affine:
            raise ValueError(
                "adanorm has no learned parameters (its factor C(1 - k y) replaces them)"
            )
        self.C = float(C)
        self.k = float(k)
        super().__init__(normalized_shape, eps, False, False, device, dtype, impl)

    def forward(self, x: Tensor) -> Tensor:
        return LF.ada_norm(x, self.normalized_shape, self.C, self.k, self.eps, impl=self.impl)

    def norm_math(self) -> NormMath:
        return NormMath(ada=(self.C, self.k))

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, C={self.C}, k={self.k}"


class GroupLayerNorm(NormBase):
    """LN-G (Ni et al. 2024): the features split into ``groups`` contiguous groups, each
    normalized on its own, then a per-feature gain and bias. ``groups=1`` is LayerNorm."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        groups: int = 1,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        impl: str = "auto",
    ) -> None:
        n = math.prod(_as_shape(normalized_shape))
        if groups < 1 or n % groups:
            raise ValueError(f"groups={groups} does not divide the feature size {n}")
        self.groups = int(groups)
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype, impl)

    def forward(self, x: Tensor) -> Tensor:
        return LF.group_layer_norm(
            x, self.normalized_shape, self.groups, self.weight, self.bias, self.eps, impl=self.impl
        )

    def norm_math(self) -> NormMath:
        return NormMath(groups=self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.groups}"


class RMSNorm(ZooNorm, nn.RMSNorm):
    """RMSNorm: gain * x / sqrt(mean(x^2) + eps); an ``nn.RMSNorm``. ``bias`` (off by default,
    as in Llama and torch) adds a per-feature bias after the gain."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-6,
        elementwise_affine: bool = True,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        impl: str = "auto",
    ) -> None:
        _check_impl(impl)
        super().__init__(_as_shape(normalized_shape), float(eps), bool(elementwise_affine),
                         device, dtype)
        self.impl = impl
        if self.elementwise_affine and bias:
            self.bias = nn.Parameter(torch.zeros(self.normalized_shape, device=device,
                                                 dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        b = getattr(self, "bias", None)  # nn.RMSNorm's __init__ calls this before bias exists
        if b is not None:
            nn.init.zeros_(b)

    def forward(self, x: Tensor) -> Tensor:
        return LF.normalize(
            x, self.normalized_shape, self.weight, self.bias, self.eps, center=False,
            impl=self.impl,
        )

    def norm_math(self) -> NormMath:
        return NormMath(center=False)


class NoNorm(nn.Module):
    """Identity, for the "no normalization" baselines; keeps the constructor signature."""

    def __init__(self, normalized_shape: int | Sequence[int], *args, **kwargs) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)

    def forward(self, x: Tensor) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}"
