"""Independent float64 reference for the norm zoo, and the table of variants under test.

The reference is deliberately written differently from the library: explicit per-row (and
per-group) numpy loops for the forward, and for the backward the full D x D Jacobian of each
group built term by term from the definitions (dy_i/dx_j = delta_ij/sigma - [mean path]/(D sigma)
- [std path] y_i (x_j - mu)/(D sigma^2)), then dx = J^T g. The library's kernel instead uses the
two-reduction form r (g - mean(g) - y mean(g y)); agreeing with a dense Jacobian is evidence that
both are right, not that one was copied from the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from lnlab.norms import kernel_status

IMPLS = ("kernel", "composite")


def require(impl: str) -> str:
    """Skip (with the reason) a kernel-path test only where the kernels cannot be built."""
    if impl == "kernel" and not kernel_status().available:
        pytest.skip(f"fused kernels unavailable: {kernel_status().reason}")
    return impl


@dataclass(frozen=True)
class Variant:
    """One zoo configuration: its registry spec and the switches it means for ``normalize``.

    ``affine`` is "wb" (gain and bias), "w" (gain only) or "" (none). ``undetached`` marks the
    variants whose backward is the true derivative of the forward (so gradcheck applies to x).
    """

    id: str
    spec: str | None  # None: reachable through the functional API only
    cfg: dict[str, Any] = field(default_factory=dict)
    affine: str = ""
    groups: int | str = 1  # an int, or "dim" for groups == feature size

    @property
    def undetached(self) -> bool:
        c = self.cfg
        return not (c.get("detach_mean") or c.get("detach_std") or c.get("ada"))

    def normalize_kwargs(self, dim: int) -> dict[str, Any]:
        kw = dict(self.cfg)
        kw["groups"] = dim if self.groups == "dim" else int(self.groups)
        return kw


_DM = {"detach_mean": True}
_DS = {"detach_std": True}
_DB = {"detach_mean": True, "detach_std": True}

VARIANTS: tuple[Variant, ...] = (
    Variant("layernorm", "layernorm", affine="wb"),
    Variant("layernorm-nobias", "layernorm:bias=false", affine="w"),
    Variant("layernorm-noaffine", "layernorm:affine=false"),
    Variant("layernorm_simple", "layernorm_simple"),
    Variant("detach-both", "detachnorm", _DB),
    Variant("detach-mean", "detachnorm:detach=mean", _DM),
    Variant("detach-std", "detachnorm:detach=std", _DS),
    Variant("detach-both-affine", "detachnorm:affine=true", _DB, affine="wb"),
    Variant("detach-mean-affine", "detachnorm:detach=mean,affine=true", _DM, affine="wb"),
    Variant("detach-std-affine", "detachnorm:detach=std,affine=true", _DS, affine="wb"),
    Variant("adanorm", "adanorm", {"ada": True, "C": 1.0, "k": 0.1}),
    Variant("adanorm-C2", "adanorm:C=2,k=0.1", {"ada": True, "C": 2.0, "k": 0.1}),
    Variant("adanorm-C0.5-k0.3", "adanorm:C=0.5,k=0.3", {"ada": True, "C": 0.5, "k": 0.3}),
    Variant("adanorm-k0", "adanorm:C=1.5,k=0", {"ada": True, "C": 1.5, "k": 0.0}),
    # AdaNorm's module has no parameters, but the functional form takes an optional affine
    Variant("adanorm-affine-fn", None, {"ada": True, "C": 2.0, "k": 0.1}, affine="wb"),
    Variant("groupln-1", "groupln:groups=1", affine="wb", groups=1),
    Variant("groupln-2", "groupln:groups=2", affine="wb", groups=2),
    Variant("groupln-3", "groupln:groups=3", affine="wb", groups=3),
    Variant("groupln-dim", "groupln:groups={dim}", affine="wb", groups="dim"),
    Variant("groupln-2-noaffine", "groupln:groups=2,affine=false", groups=2),
    Variant("rmsnorm", "rmsnorm", {"center": False}, affine="w"),
    Variant("rmsnorm-bias", "rmsnorm:bias=true", {"center": False}, affine="wb"),
    Variant("rmsnorm-noaffine", "rmsnorm:affine=false", {"center": False}),
)
"""Every variant except ``none`` (identity, tested on its own). Group counts 3 need dim % 3 == 0
and 2 need an even dim; tests pick dims accordingly via ``dim_ok``."""


def dim_ok(v: Variant, dim: int) -> bool:
    """Whether the variant's group count divides ``dim``."""
    g = dim if v.groups == "dim" else int(v.groups)
    return dim % g == 0


MODULE_VARIANTS = tuple(v for v in VARIANTS if v.spec is not None)


def spec_for(v: Variant, dim: int) -> str:
    assert v.spec is not None, v.id
    return v.spec.format(dim=dim)


def make_params(
    v: Variant, shape: tuple[int, ...], dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Random, clearly non-trivial gain and bias (gain away from 1, bias away from 0)."""
    gen = torch.Generator().manual_seed(seed)
    w = b = None
    if "w" in v.affine:
        w = (1.0 + 0.5 * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)
    if "b" in v.affine:
        b = (0.3 * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)
    return w, b


# ------------------------------------------------------------------------------- reference
def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().to(torch.float64).cpu().numpy().reshape(-1)


def reference(
    x: torch.Tensor,
    normalized_shape: tuple[int, ...],
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    g: torch.Tensor | None = None,
    *,
    groups: int = 1,
    center: bool = True,
    detach_mean: bool = False,
    detach_std: bool = False,
    ada: bool = False,
    C: float = 1.0,
    k: float = 0.1,
) -> dict[str, np.ndarray | None]:
    """Forward ``out`` and, given upstream ``g``, ``dx``, ``dw``, ``db`` in float64 numpy.

    Shapes: ``out``/``dx`` like ``x``; ``dw``/``db`` flat over the normalized features.
    """
    n = math.prod(normalized_shape)
    X = x.detach().to(torch.float64).cpu().numpy().reshape(-1, n)
    G = None if g is None else g.detach().to(torch.float64).cpu().numpy().reshape(-1, n)
    w, b = _np(weight), _np(bias)
    d = n // groups
    out = np.empty_like(X)
    dx = np.zeros_like(X)
    dw = np.zeros(n)
    db = np.zeros(n)
    eye = np.eye(d)
    wg = None if w is None else w.reshape(groups, d)
    bg = None if b is None else b.reshape(groups, d)
    for r in range(X.shape[0]):  # one row at a time; its groups side by side: (groups, d)
        seg = X[r].reshape(groups, d)
        mu = seg.sum(1, keepdims=True) / d if center else np.zeros((groups, 1))
        dev = seg - mu
        sigma = np.sqrt((dev * dev).sum(1, keepdims=True) / d + eps)
        y = dev / sigma
        phi = C * (1.0 - k * y) if ada else np.ones_like(y)
        z = phi * y
        out[r] = (z * (wg if wg is not None else 1.0) + (bg if bg is not None else 0.0)).ravel()
        if G is None:
            continue
        # dense Jacobian of y w.r.t. x, per group, term by term: (groups, d, d)
        s3 = sigma[:, :, None]
        jac = eye[None] / s3
        if center and not detach_mean:
            jac = jac - 1.0 / (d * s3)
        if not detach_std:
            jac = jac - y[:, :, None] * dev[:, None, :] / (d * s3 * s3)
        jac = phi[:, :, None] * jac  # AdaNorm: the factor phi is a constant in backward
        gr = G[r].reshape(groups, d)
        gz = gr * (wg if wg is not None else 1.0)
        dx[r] = np.einsum("qij,qi->qj", jac, gz).ravel()
        dw += (gr * z).ravel()
        db += gr.ravel()
    res: dict[str, np.ndarray | None] = {"out": out.reshape(tuple(x.shape))}
    if G is not None:
        res["dx"] = dx.reshape(tuple(x.shape))
        res["dw"] = dw if weight is not None else None
        res["db"] = db if bias is not None else None
    return res
