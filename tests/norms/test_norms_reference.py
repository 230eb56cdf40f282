"""Forward and every gradient of every variant, float64, against the independent reference.

Both code paths (fused C kernel and composite autograd) go through ``normalize``; the modules
built by ``make_norm`` (including the native ``F.layer_norm`` ones) are checked separately.
Shapes cover every input rank, prime/odd/power-of-two feature sizes, N = 1 and a tiny scale
where eps matters (catches eps added to sigma instead of the variance).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lnlab.norms import make_norm, normalize

from ._reference import (
    IMPLS,
    MODULE_VARIANTS,
    VARIANTS,
    Variant,
    dim_ok,
    make_params,
    reference,
    require,
    spec_for,
)

SHAPES = (
    ((6,), 1.0),  # 1-D input: a single row, as torch.nn.LayerNorm allows
    ((4, 12), 1.0),
    ((4, 12), 0.01),  # variance ~1e-4 against eps 1e-5: the eps placement matters
    ((1, 1023), 1.0),  # odd size (3 * 11 * 31), one row
    ((3, 7, 257), 1.0),  # 3-D, prime feature size
    ((2, 3, 2, 64), 1.0),  # 4-D, power of two
    ((5, 1), 1.0),  # N = 1
)
EPS = 1e-5


def _grads(out: torch.Tensor, g: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    # torch.autograd.grad returns fresh tensors; clone anyway so that no later check can alias
    # a buffer the library might reuse between backward calls.
    return [t.clone() for t in torch.autograd.grad(out, inputs, g)]


def _check(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    exp = torch.from_numpy(np.ascontiguousarray(expected))
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    torch.testing.assert_close(actual.detach(), exp, rtol=1e-10, atol=1e-11 * scale, msg=what)


def _input(shape: tuple[int, ...], scale: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # a per-row offset makes centring matter; the scale makes eps matter
    x = torch.randn(shape, generator=gen, dtype=torch.float64) + 3.0
    return (x * scale).requires_grad_(True)


CASES = [
    pytest.param(v, shape, scale, id=f"{v.id}-{'x'.join(map(str, shape))}-s{scale}")
    for v in VARIANTS
    for shape, scale in SHAPES
    if dim_ok(v, shape[-1])  # group counts must divide the feature size
]


@pytest.mark.parametrize("v,shape,scale", CASES)
def test_functional_matches_reference(v: Variant, shape, scale, impl: str) -> None:
    dim = shape[-1]
    kw = v.normalize_kwargs(dim)
    x = _input(shape, scale, seed=dim + len(shape))
    w, b = make_params(v, (dim,), torch.float64, seed=7)
    params = [p.requires_grad_(True) for p in (w, b) if p is not None]
    out = normalize(x, dim, w, b, EPS, impl=impl, **kw)
    assert out.shape == x.shape and out.dtype == torch.float64
    g = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = reference(x, (dim,), w, b, EPS, g, **kw)
    _check(out, ref["out"], "forward")
    grads = _grads(out, g, [x, *params])
    _check(grads[0], ref["dx"], "dx")
    names = [n for n, p in (("dw", w), ("db", b)) if p is not None]
    for name, got in zip(names, grads[1:], strict=True):
        _check(got, ref[name], name)


# the LN-family modules call native F.layer_norm: one code path, whatever impl says
MODULE_CASES = [
    pytest.param(v, impl, id=f"{impl}-{v.id}")
    for v in MODULE_VARIANTS
    for impl in IMPLS
    if impl == "kernel" or not v.spec.startswith("layernorm")
]


@pytest.mark.parametrize("v,impl_name", MODULE_CASES)
def test_module_matches_reference(v: Variant, impl_name: str) -> None:
    """The registry-built module (native F.layer_norm for the LN family) on a 3-D input."""
    dim, shape = 12, (2, 5, 12)
    m = make_norm(spec_for(v, dim), dim, dtype=torch.float64)
    if hasattr(m, "impl"):
        m.impl = require(impl_name)
    else:
        assert v.spec.startswith("layernorm"), "only the native LN modules lack an impl switch"
    w, b = make_params(v, (dim,), torch.float64, seed=11)
    assert (m.weight is None) == (w is None) and (m.bias is None) == (b is None), "affine"
    with torch.no_grad():
        for p, val in ((m.weight, w), (m.bias, b)):
            if p is not None:
                p.copy_(val)
    x = _input(shape, 1.0, seed=5)
    out = m(x)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    kw = v.normalize_kwargs(dim)
    ref = reference(x, (dim,), w, b, m.eps, g, **kw)
    _check(out, ref["out"], "forward")
    params = [p for p in (m.weight, m.bias) if p is not None]
    grads = _grads(out, g, [x, *params])
    _check(grads[0], ref["dx"], "dx")
    names = [n for n, p in (("dw", m.weight), ("db", m.bias)) if p is not None]
    for name, got in zip(names, grads[1:], strict=True):
        _check(got, ref[name], name)


@pytest.mark.parametrize("v", VARIANTS, ids=lambda v: v.id)
def test_multidim_normalized_shape(v: Variant, impl: str) -> None:
    """normalized_shape = (4, 6): statistics over both trailing dims; groups cut the flat 24."""
    nshape, shape = (4, 6), (3, 4, 6)
    n = math.prod(nshape)
    if not dim_ok(v, n):
        pytest.skip("groups do not divide 24")
    kw = v.normalize_kwargs(n)
    x = _input(shape, 1.0, seed=9)
    w, b = make_params(v, nshape, torch.float64, seed=2)
    params = [p.requires_grad_(True) for p in (w, b) if p is not None]
    out = normalize(x, nshape, w, b, EPS, impl=impl, **kw)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = reference(x, nshape, w, b, EPS, g, **kw)
    _check(out, ref["out"], "forward")
    grads = _grads(out, g, [x, *params])
    _check(grads[0], ref["dx"], "dx")
    names = [n for n, p in (("dw", w), ("db", b)) if p is not None]
    for name, got in zip(names, grads[1:], strict=True):
        _check(got.reshape(-1), ref[name], name)


@pytest.mark.parametrize("v", MODULE_VARIANTS, ids=lambda v: v.id)
def test_multidim_module(v: Variant) -> None:
    """Modules accept a multi-dim normalized_shape and keep parameters in that shape."""
    nshape = (4, 6)
    if not dim_ok(v, 24):
        pytest.skip("groups do not divide 24")
    m = make_norm(spec_for(v, 24), 24, dtype=torch.float64)
    # rebuild the same class with a 2-D normalized_shape through the torch-style constructor
    kwargs = {"eps": m.eps}
    for attr in ("groups", "C", "k", "detach"):
        if hasattr(m, attr):
            kwargs[attr] = getattr(m, attr)
    if hasattr(m, "elementwise_affine"):
        kwargs["elementwise_affine"] = m.elementwise_affine
        if m.elementwise_affine:
            kwargs["bias"] = m.bias is not None
    m2 = type(m)(nshape, dtype=torch.float64, **kwargs)
    assert m2.normalized_shape == nshape
    for p in (m2.weight, m2.bias):
        if p is not None:
            assert tuple(p.shape) == nshape
    x = _input((2, 4, 6), 1.0, seed=3)
    w, b = make_params(v, nshape, torch.float64, seed=2)
    with torch.no_grad():
        for p, val in ((m2.weight, w), (m2.bias, b)):
            if p is not None:
                p.copy_(val)
    ref = reference(x, nshape, w, b, m2.eps, **v.normalize_kwargs(24))
    _check(m2(x), ref["out"], "forward")


def test_none_is_identity() -> None:
    m = make_norm("none", 8)
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    out = m(x)
    assert torch.equal(out, x)
    g = torch.randn(3, 8, dtype=torch.float64)
    (dx,) = torch.autograd.grad(out, x, g)
    assert torch.equal(dx, g)
    assert list(m.parameters()) == []
