"""``nn.Module`` forms of the norm zoo, with ``torch.nn.LayerNorm``'s argument conventions.

Every module takes ``normalized_shape`` first and accepts ``eps``, ``elementwise_affine`` and
``bias`` (those without learned parameters reject ``elementwise_affine=True``), so a model can
swap one for another by a spec string (see ``lnlab.norms.registry``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lnlab.norms import functional as LF

__all__ = [
    "AdaNorm",
    "DetachNorm",
    "GroupLayerNorm",
    "LayerNorm",
    "LayerNormSimple",
    "NoNorm",
    "RMSNorm",
]


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    return tuple(int(s) for s in normalized_shape)


class _AffineNorm(nn.Module):
    """Shared parameter handling: optional per-feature gain (1) and bias (0), and ``impl``
    ("auto" | "kernel" | "composite", see ``lnlab.norms.functional.normalize``)."""

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
        self.impl = impl
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

    def extra_repr(self) -> str:
        s = f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        if self.elementwise_affine:
            s += f", bias={self.bias is not None}"
        return s


class LayerNorm(_AffineNorm):
    """Standard LayerNorm: gain * (x - mu) / sigma + bias.

    ``impl="auto"`` computes it with the native ``F.layer_norm``; "kernel" / "composite" use
    lnlab's fused kernel or plain autograd code (for cross-checks).
    """

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


class DetachNorm(_AffineNorm):
    """DetachNorm (Xu et al. 2019): LN forward; backward treats mu and/or sigma as constants.

    ``detach`` is "both" (the paper's DetachNorm), "mean" or "std". As in the paper there is
    no gain or bias by default; ``elementwise_affine=True`` adds them.
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

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, detach={self.detach!r}"


class AdaNorm(_AffineNorm):
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

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, C={self.C}, k={self.k}"


class GroupLayerNorm(_AffineNorm):
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

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.groups}"


class RMSNorm(_AffineNorm):
    """RMSNorm: gain * x / sqrt(mean(x^2) + eps). ``bias`` is off by default (as in Llama)."""

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
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype, impl)

    def forward(self, x: Tensor) -> Tensor:
        return LF.normalize(
            x, self.normalized_shape, self.weight, self.bias, self.eps, center=False,
            impl=self.impl,
        )


class NoNorm(nn.Module):
    """Identity, for the "no normalization" baselines; keeps the constructor signature."""

    def __init__(self, normalized_shape: int | Sequence[int], *args, **kwargs) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)

    def forward(self, x: Tensor) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}"
