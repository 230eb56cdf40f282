"""bf16 / fp16 inputs: statistics in fp32, finite outputs at 1e4 scale, fp32-quality results.

Tolerance rule (flash-attn's): the error against a float64 reference computed from the *same*
rounded low-precision inputs must be at most 2x the error PyTorch's own op makes at that
precision, plus a small atol. The yardstick is the larger of (a) native F.layer_norm /
F.rms_norm in that dtype, where a native counterpart exists, and (b) the unavoidable error of
rounding the exact answer to that dtype. A kernel computing the variance in fp16 overflows
(values 3e4, squares 1e9 > 65504) and fails the finiteness check; one accumulating in bf16
loses ~2 digits and fails the tolerance.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lnlab.norms import make_norm, normalize

from ._reference import MODULE_VARIANTS, VARIANTS, Variant, make_params, reference, spec_for

LOW = (torch.bfloat16, torch.float16)
ATOL = {torch.bfloat16: 1e-2, torch.float16: 1e-3}
DIM, ROWS, EPS = 96, 16, 1e-5


def _native(v: Variant, x, w, b, eps):
    """PyTorch's own op at the same precision, for variants whose forward it computes."""
    c = v.cfg
    if v.groups not in (1,) or c.get("ada"):
        return None
    if c.get("center", True):
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)
    out = F.rms_norm(x, (x.shape[-1],), w, eps)
    return out if b is None else out + b


def _max_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return (a.double() - ref).abs().max().item()


def _check(name, got, ref, native, dtype) -> None:
    cast = _max_err(ref.to(dtype), ref)
    yard = max(cast, _max_err(native, ref) if native is not None else 0.0)
    scale = max(1.0, ref.abs().max().item())
    err = _max_err(got, ref)
    assert err <= 2 * yard + ATOL[dtype] * scale, f"{name}: err {err:.3g} vs yardstick {yard:.3g}"


def _inputs(dtype, seed: int, offset: float = 0.0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(ROWS, DIM, generator=gen).clamp(-3, 3) * 1e4 + offset).to(dtype)
    g = torch.randn(ROWS, DIM, generator=gen).to(dtype)
    return x, g


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("v", VARIANTS, ids=lambda v: v.id)
def test_low_precision_forward_backward(v: Variant, dtype: torch.dtype, impl: str) -> None:
    kw = v.normalize_kwargs(DIM)
    x, g = _inputs(dtype, seed=0)
    w, b = make_params(v, (DIM,), dtype, seed=1)
    params = [p.requires_grad_(True) for p in (w, b) if p is not None]
    xl = x.clone().requires_grad_(True)
    out = normalize(xl, DIM, w, b, EPS, impl=impl, **kw)
    assert out.dtype == dtype and torch.isfinite(out).all()
    grads = torch.autograd.grad(out, [xl, *params], g)
    for gr in grads:
        assert gr.dtype == dtype and torch.isfinite(gr).all()
    # the whole computation is fp32 inside: identical to the fp32 result, rounded once
    out32 = normalize(x.float(), DIM, None if w is None else w.float(),
                      None if b is None else b.float(), EPS, impl=impl, **kw)
    assert torch.equal(out.detach(), out32.to(dtype))
    # against the float64 reference of the same rounded inputs
    ref = reference(x, (DIM,), w, b, EPS, g, **kw)
    nat_in = [x.clone().requires_grad_(True)] + [p.detach().clone().requires_grad_(True)
                                                  for p in params]
    pw = nat_in[1] if w is not None else None
    pb = nat_in[-1] if b is not None else None
    native = _native(v, nat_in[0], pw, pb, EPS)
    nat_grads = (torch.autograd.grad(native, nat_in, g) if native is not None
                 else [None] * len(nat_in))
    _check("out", out, torch.from_numpy(ref["out"]), native, dtype)
    keys = ["dx"] + [k for k, p in (("dw", w), ("db", b)) if p is not None]
    for key, got, nat in zip(keys, grads, nat_grads, strict=True):
        exp = torch.from_numpy(ref[key]).reshape(got.shape)
        _check(key, got, exp, nat, dtype)


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("spec", ["layernorm", "detachnorm:detach=std", "adanorm:C=2",
                                  "groupln:groups=4", "rmsnorm"])
def test_large_offset_needs_fp32_statistics(spec: str, dtype: torch.dtype, impl: str) -> None:
    """x = 2e4 + 30 n: the row sum (1.9e6) and squares overflow fp16; bf16 sums lose the mean."""
    gen = torch.Generator().manual_seed(3)
    x = (2e4 + 30 * torch.randn(ROWS, DIM, generator=gen)).to(dtype)
    m = make_norm(spec, DIM, dtype=dtype)
    if hasattr(m, "impl"):
        m.impl = impl
    out = m(x)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = m.to(torch.float64)(x.double())  # the same module in float64 on the same values
    _check("out", out, ref.detach(), None, dtype)
    # the rows really are normalized to about unit root-mean-square (not collapsed to zeros)
    assert out.double().pow(2).mean(-1).sqrt().min() > 0.5


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("v", MODULE_VARIANTS, ids=lambda v: v.id)
def test_low_precision_module_parameters(v: Variant, dtype: torch.dtype) -> None:
    """A module built in bf16/fp16 (as in a mixed-precision model) trains: finite grads."""
    m = make_norm(spec_for(v, DIM), DIM, dtype=dtype)
    x, g = _inputs(dtype, seed=4, offset=0.0)
    out = m(x.requires_grad_(True))
    out.backward(g)
    assert out.dtype == dtype and torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    for p in m.parameters():
        assert p.grad is not None and p.grad.dtype == dtype and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("offset", [1e2, 1e3], ids=lambda o: f"offset{o:g}")
@pytest.mark.parametrize("dim", [1024, 4096])
@pytest.mark.parametrize("spec", ["detachnorm", "adanorm:C=2", "groupln:groups=4", "rmsnorm"])
def test_float32_accuracy_matches_native(spec: str, dim: int, offset: float, impl: str) -> None:
    """float32 with a large common offset (residual-stream outliers): the mean's rounding is
    amplified by 1/sigma, so statistics accumulated naively in float32 lose digits that native
    LayerNorm (cascade sums) keeps. Same 2x-native rule as above, in float32."""
    gen = torch.Generator().manual_seed(dim)
    x = (torch.randn(8, dim, generator=gen, dtype=torch.float64) + offset).float()
    m = make_norm(spec, dim)
    if hasattr(m, "impl"):
        m.impl = impl
    ref = make_norm(spec, dim, dtype=torch.float64)(x.double())
    if spec.startswith("rmsnorm"):
        native = F.rms_norm(x, (dim,), None, m.eps)
    else:
        g = m.groups if hasattr(m, "groups") else 1
        native = F.layer_norm(x.view(8, g, dim // g), (dim // g,), eps=m.eps).view(8, dim)
        if spec.startswith("adanorm"):
            native = m.C * (1 - m.k * native) * native
    err, nat = _max_err(m(x), ref), _max_err(native, ref)
    assert err <= 2 * nat + 1e-6, f"error {err:.3g} vs native {nat:.3g}"


@pytest.mark.parametrize("offset", [1e2, 1e3], ids=lambda o: f"offset{o:g}")
def test_float32_gradients_match_native_accuracy(offset: float, impl: str) -> None:
    """dx and dw of LN through normalize (kernel / composite) vs native F.layer_norm's."""
    dim = 4096
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(8, dim, generator=gen, dtype=torch.float64) + offset).float()
    gy = torch.randn(8, dim, generator=gen)
    w = 1 + 0.5 * torch.randn(dim, generator=gen)

    def grads(fn, dtype):
        xx, ww = x.to(dtype).requires_grad_(True), w.to(dtype).requires_grad_(True)
        return torch.autograd.grad(fn(xx, ww), [xx, ww], gy.to(dtype))

    ref = grads(lambda a, b: F.layer_norm(a, (dim,), b, None, EPS), torch.float64)
    nat = grads(lambda a, b: F.layer_norm(a, (dim,), b, None, EPS), torch.float32)
    got = grads(lambda a, b: normalize(a, dim, b, None, EPS, impl=impl), torch.float32)
    for name, g, n, r in zip(("dx", "dw"), got, nat, ref, strict=True):
        err, nerr = _max_err(g, r), _max_err(n, r)
        assert err <= 2 * nerr + 1e-6, f"{name}: error {err:.3g} vs native {nerr:.3g}"


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("vid", ["layernorm", "groupln-2", "rmsnorm-bias", "adanorm-affine-fn"])
def test_low_precision_gain_bias_gradients_accumulate_in_fp32(vid: str, dtype: torch.dtype,
                                                               impl: str) -> None:
    """dw / db sum over 4096 rows: accumulated in bf16 they are off by tens of percent
    (Liger #950); in fp32 they are within rounding of the float64 reference."""
    v = next(v for v in VARIANTS if v.id == vid)
    rows, dim = 4096, 32
    gen = torch.Generator().manual_seed(6)
    x = (torch.randn(rows, dim, generator=gen) + 0.5).to(dtype)
    g = (torch.randn(rows, dim, generator=gen) * 0.1 + 0.05).to(dtype)
    w, b = make_params(v, (dim,), dtype, seed=2)
    params = [p.requires_grad_(True) for p in (w, b) if p is not None]
    kw = v.normalize_kwargs(dim)
    grads = torch.autograd.grad(normalize(x, dim, w, b, EPS, impl=impl, **kw), params, g)
    ref = reference(x, (dim,), w, b, EPS, g, **kw)
    keys = [k for k, p in (("dw", w), ("db", b)) if p is not None]
    for key, got in zip(keys, grads, strict=True):
        exp = torch.from_numpy(ref[key])
        _check(key, got, exp, None, dtype)
