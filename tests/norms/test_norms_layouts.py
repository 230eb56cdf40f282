"""Layouts and edge cases: non-contiguous inputs, zero rows, thread counts, argument errors.

The fused kernel works on raw pointers of a contiguous copy, so the failure modes worth testing
are layout (strided views), empty batches, per-thread partial sums of the gain/bias gradients,
and the dispatch between the kernel, the composite code and the native op.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest
import torch

from lnlab.norms import normalize

from ._reference import VARIANTS, Variant, dim_ok, make_params, reference, require

FEW = [v for v in VARIANTS if v.id in (
    "layernorm", "detach-mean-affine", "detach-std", "adanorm-C2", "groupln-3", "groupln-dim",
    "rmsnorm-bias",
)]


def _run(v: Variant, x: torch.Tensor, dim: int, impl: str, g: torch.Tensor, seed: int = 0):
    """Forward and cloned (dx, dw, db) of one call; fresh leaf parameters every call."""
    w, b = make_params(v, (dim,), x.dtype, seed=seed)
    params = [p.requires_grad_(True) for p in (w, b) if p is not None]
    xl = x.detach().clone().requires_grad_(True)
    out = normalize(xl, dim, w, b, 1e-5, impl=impl, **v.normalize_kwargs(dim))
    grads = torch.autograd.grad(out, [xl, *params], g)
    return out.detach().clone(), [gr.clone() for gr in grads], (w, b)


@pytest.mark.parametrize("v", FEW, ids=lambda v: v.id)
def test_non_contiguous_input_and_upstream_gradient(v: Variant, impl: str) -> None:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(12, 5, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    x = base.transpose(0, 2)  # (4, 5, 12) view, last dim strided
    assert not x.is_contiguous()
    g = torch.randn(12, 4, 5, generator=gen, dtype=torch.float64).permute(1, 2, 0)
    assert not g.is_contiguous()
    w, b = make_params(v, (12,), torch.float64, seed=1)
    out = normalize(x, 12, w, b, 1e-5, impl=impl, **v.normalize_kwargs(12))
    (dbase,) = torch.autograd.grad(out, base, g)
    ref = reference(x.detach().contiguous(), (12,), w, b, 1e-5, g.contiguous(),
                    **v.normalize_kwargs(12))
    torch.testing.assert_close(out.detach(), torch.from_numpy(ref["out"]), rtol=1e-10,
                               atol=1e-12)
    dx = torch.from_numpy(ref["dx"]).transpose(0, 2)  # back to base's layout
    torch.testing.assert_close(dbase, dx, rtol=1e-10, atol=1e-12)
    # a strided expand of the upstream gradient (what .sum().backward() sends) works too
    xs = x.detach().clone().requires_grad_(True)
    normalize(xs, 12, w, b, 1e-5, impl=impl, **v.normalize_kwargs(12)).sum().backward()
    ref1 = reference(xs.detach(), (12,), w, b, 1e-5, torch.ones_like(xs),
                     **v.normalize_kwargs(12))
    torch.testing.assert_close(xs.grad, torch.from_numpy(ref1["dx"]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(0, 12), (2, 0, 12), (0, 3, 12)], ids=str)
@pytest.mark.parametrize("v", FEW, ids=lambda v: v.id)
def test_zero_rows(v: Variant, shape, impl: str) -> None:
    x = torch.empty(shape, dtype=torch.float64)
    out, grads, (w, b) = _run(v, x, 12, impl, torch.empty(shape, dtype=torch.float64))
    assert out.shape == shape
    assert grads[0].shape == shape
    for gr, p in zip(grads[1:], [p for p in (w, b) if p is not None], strict=True):
        assert gr.shape == p.shape and torch.equal(gr, torch.zeros_like(p))


def _parallel_rows(dim: int) -> int:
    """An odd row count (uneven split across threads) above the kernel's parallel cut-off."""
    src = resources.files("lnlab.norms").joinpath("csrc/lnkernels.c").read_text()
    found = re.search(r"#define\s+PAR_MIN_ELEMS\s+(\d+)", src)
    cutoff = int(found.group(1)) if found else 32768
    return (cutoff // dim + 1) | 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("v", FEW, ids=lambda v: v.id)
def test_thread_count_does_not_change_results(v: Variant, dtype: torch.dtype) -> None:
    """1 vs 2 threads on a tensor big enough to take the kernel's parallel path.

    Forward and dx are computed row by row, so they must be bit-identical. dw/db add per-thread
    partial sums, so only their summation order may change: equal to rounding.
    """
    require("kernel")
    dim = 384
    assert dim_ok(v, dim)
    gen = torch.Generator().manual_seed(2)
    rows = _parallel_rows(dim)
    x = torch.randn(rows, dim, generator=gen, dtype=dtype)
    g = torch.randn(rows, dim, generator=gen, dtype=dtype)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run(v, x, dim, "kernel", g, seed=3)
        torch.set_num_threads(2)
        two = _run(v, x, dim, "kernel", g, seed=3)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0])
    assert torch.equal(one[1][0], two[1][0])
    if dtype == torch.float64:  # and the parallel path is right, not just self-consistent
        w, b = two[2]
        ref = reference(x, (dim,), w, b, 1e-5, g, **v.normalize_kwargs(dim))
        keys = ["dx"] + [k for k, p in (("dw", w), ("db", b)) if p is not None]
        for key, got in zip(keys, two[1], strict=True):
            torch.testing.assert_close(got, torch.from_numpy(ref[key]).reshape(got.shape),
                                       rtol=1e-10, atol=1e-10)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for a, b in zip(one[1][1:], two[1][1:], strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * 200)


def test_repeated_backward_calls_do_not_share_buffers(impl: str) -> None:
    """Two backward calls with different upstream gradients: the first result must survive."""
    v = next(v for v in VARIANTS if v.id == "layernorm")
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(64, 48, generator=gen, dtype=torch.float64).requires_grad_(True)
    w, b = make_params(v, (48,), torch.float64, seed=0)
    w.requires_grad_(True)
    b.requires_grad_(True)
    out = normalize(x, 48, w, b, impl=impl)
    g1, g2 = torch.randn(2, 64, 48, generator=gen, dtype=torch.float64)
    first = torch.autograd.grad(out, [x, w, b], g1, retain_graph=True)
    snapshot = [t.clone() for t in first]
    second = torch.autograd.grad(out, [x, w, b], g2)
    for a, s in zip(first, snapshot, strict=True):
        assert torch.equal(a, s)
    for a, c in zip(first, second, strict=True):
        assert a.data_ptr() != c.data_ptr()
    ref = reference(x, (48,), w, b, 1e-5, g2)
    for got, key in zip(second, ("dx", "dw", "db"), strict=True):
        torch.testing.assert_close(got, torch.from_numpy(ref[key]).reshape(got.shape),
                                   rtol=1e-10, atol=1e-11)


def test_auto_uses_the_kernel_bit_for_bit() -> None:
    require("kernel")
    x = torch.randn(7, 33, generator=torch.Generator().manual_seed(0))
    for kw in ({}, {"ada": True}, {"groups": 3}, {"center": False}):
        assert torch.equal(normalize(x, 33, impl="auto", **kw),
                           normalize(x, 33, impl="kernel", **kw))


def test_grad_only_for_parameters(impl: str) -> None:
    """x without requires_grad: the kernel must still produce dw and db."""
    v = next(v for v in VARIANTS if v.id == "groupln-3")
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w, b = make_params(v, (12,), torch.float64, seed=4)
    w.requires_grad_(True)
    out = normalize(x, 12, w, b, groups=3, impl=impl)  # bias without grad
    g = torch.randn_like(x)
    (dw,) = torch.autograd.grad(out, w, g)
    ref = reference(x, (12,), w, b, 1e-5, g, groups=3)
    torch.testing.assert_close(dw, torch.from_numpy(ref["dw"]), rtol=1e-10, atol=1e-12)


def test_argument_errors() -> None:
    x = torch.randn(2, 12)
    with pytest.raises(ValueError, match="impl must be one of"):
        normalize(x, 12, impl="fast")
    with pytest.raises(ValueError, match="does not end with normalized_shape"):
        normalize(x, 8)
    with pytest.raises(ValueError, match="does not end with normalized_shape"):
        normalize(torch.randn(12), (2, 12))
    with pytest.raises(ValueError, match="positive divisor"):
        normalize(x, 12, groups=5)
    with pytest.raises(ValueError, match="positive divisor"):
        normalize(x, 12, groups=0)
    with pytest.raises(ValueError, match="weight has shape"):
        normalize(x, 12, torch.ones(6))
    with pytest.raises(ValueError, match="bias has shape"):
        normalize(x, 12, torch.ones(12), torch.zeros(13))
    with pytest.raises(RuntimeError, match="kernel does not apply"):
        normalize(x.to(torch.int64), 12, impl="kernel")


@pytest.mark.parametrize("v", FEW, ids=lambda v: v.id)
def test_offset_and_broadcast_views(v: Variant, impl: str) -> None:
    """Views the kernel must not read from offset 0 of the storage or through a 0 stride."""
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(6, 12, generator=gen, dtype=torch.float64)
    row = torch.randn(12, generator=gen, dtype=torch.float64)
    w, b = make_params(v, (12,), torch.float64, seed=1)
    kw = v.normalize_kwargs(12)
    for x in (base[2:], base[1:4], row.expand(5, 12), base[:, None, :].expand(6, 2, 12)):
        out = normalize(x, 12, w, b, 1e-5, impl=impl, **kw)
        ref = reference(x.contiguous(), (12,), w, b, 1e-5, **kw)
        torch.testing.assert_close(out, torch.from_numpy(ref["out"]), rtol=1e-10, atol=1e-12)
