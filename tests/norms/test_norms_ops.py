"""The norms as ``torch.library`` ops: torch.compile, torch.func, export, fake kernels, vmap.

Graph checks use the "eager" / "aot_eager" backends (they exercise dynamo, the fake kernels
and the autograd of the ops without inductor's compile time); one test runs inductor.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.autograd import gradcheck, gradgradcheck

from lnlab.norms import kernel_status, make_norm, normalize
from lnlab.norms.ops import _bwd_math, _fwd_math

from ._reference import VARIANTS, Variant, dim_ok, make_params

pytestmark = pytest.mark.usefixtures("one_thread")

SPECS = ("layernorm", "layernorm_simple", "detachnorm", "detachnorm:detach=mean",
         "detachnorm:detach=std,affine=true", "adanorm:C=2,k=0.1", "groupln:groups=4",
         "rmsnorm", "rmsnorm:bias=true")
FUSED = tuple(s for s in SPECS if not s.startswith("layernorm"))
D = 16


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _need_kernels() -> None:
    if not kernel_status().available:
        pytest.skip(f"fused kernels unavailable: {kernel_status().reason}")


def _model(spec: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(8, D), make_norm(spec, D), nn.ReLU(), nn.Linear(D, 4))
    for p in m[1].parameters():  # non-trivial gain / bias
        with torch.no_grad():
            p.add_(torch.randn_like(p) * 0.3)
    return m


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _fwd_grads(m: nn.Module, fn, x: torch.Tensor):
    m.zero_grad()
    xl = x.clone().requires_grad_(True)
    y = fn(xl)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y.detach(), xl.grad, [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("spec", SPECS)
def test_one_graph_no_break(spec: str) -> None:
    _need_kernels()
    ex = torch._dynamo.explain(_model(spec))(_x(5, 8))
    assert (ex.graph_count, ex.graph_break_count) == (1, 0), ex.break_reasons


@pytest.mark.parametrize("spec", SPECS)
def test_fullgraph_matches_eager(spec: str) -> None:
    _need_kernels()
    m, x = _model(spec), _x(5, 8)
    y0, dx0, g0 = _fwd_grads(m, m, x)
    y1, dx1, g1 = _fwd_grads(m, torch.compile(m, fullgraph=True, backend="aot_eager"), x)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(dx1, dx0)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b)


def test_fused_op_is_in_the_graph() -> None:
    """The fused variants reach the compiled graph as the op, not as decomposed math."""
    _need_kernels()
    gm = torch.export.export(_model("adanorm"), (_x(5, 8),)).graph_module
    assert "lnlab.norm_fwd" in gm.code
    gm = torch.export.export(_model("layernorm"), (_x(5, 8),)).graph_module
    assert "lnlab" not in gm.code


def test_inductor_fullgraph_matches_eager() -> None:
    """One real inductor compile (the op is an extern call beside fused pointwise code)."""
    _need_kernels()
    m, x = _model("detachnorm:detach=std,affine=true"), _x(6, 8)
    y0, dx0, g0 = _fwd_grads(m, m, x)
    y1, dx1, g1 = _fwd_grads(m, torch.compile(m, fullgraph=True), x)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(dx1, dx0)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("spec", SPECS)
def test_export(spec: str) -> None:
    m, x = _model(spec), _x(5, 8)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))


@pytest.mark.parametrize("spec", FUSED)
def test_vmap_and_func_grad_match_loops(spec: str) -> None:
    m, xs = _model(spec), _x(3, 5, 8)
    params = {k: v.detach() for k, v in m.named_parameters()}

    def loss(p, x):
        return torch.func.functional_call(m, p, (x,)).pow(2).sum()

    torch.testing.assert_close(torch.func.vmap(m)(xs), torch.stack([m(x) for x in xs]))
    vg = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, xs)
    for i, x_i in enumerate(xs):  # the loop: eager autograd, one input at a time
        m.zero_grad()
        m(x_i).pow(2).sum().backward()
        for k, p in m.named_parameters():
            torch.testing.assert_close(vg[k][i], p.grad)


@pytest.mark.parametrize("spec", FUSED)
def test_jacrev_matches_autograd(spec: str) -> None:
    m, x = _model(spec).double(), _x(3, 8).double()
    jr = torch.func.jacrev(m)(x)
    ja = torch.autograd.functional.jacobian(m, x)
    torch.testing.assert_close(jr, ja)


# ------------------------------------------------------------------ the ops themselves

CFGS = [  # groups, center, detach_mean, detach_std, ada
    (1, True, False, False, False), (3, True, False, False, False),
    (1, True, True, True, False), (1, True, True, False, False), (1, True, False, True, False),
    (2, True, False, False, True), (1, False, False, False, False),
]


def _op_inputs(cfg, affine: bool, dtype=torch.float64):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 12, generator=g, dtype=dtype) * 1.3 + 0.4
    w = torch.randn(12, generator=g, dtype=dtype) if affine else None
    b = torch.randn(12, generator=g, dtype=dtype) if affine else None
    groups, center, dm, ds, ada = cfg
    return x, w, b, (groups, 1e-5, center, dm, ds, ada, 1.5, 0.2)


@pytest.mark.parametrize("cfg", CFGS)
def test_op_gradcheck_and_gradgradcheck(cfg) -> None:
    """float64 through the op path: (detached variants: in gain and bias only, whose
    derivatives stay exact; see test_norms_gradcheck for x)."""
    _need_kernels()
    x, w, b, c = _op_inputs(cfg, affine=True)
    exact_x = not (cfg[2] or cfg[3] or cfg[4])
    x.requires_grad_(exact_x)

    def f(x, w, b):
        return torch.ops.lnlab.norm_fwd(x, w, b, *c)[0]

    args = (x, w.requires_grad_(), b.requires_grad_())
    assert gradcheck(f, args, eps=1e-6, atol=1e-8, rtol=1e-6)
    assert gradgradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("cfg", CFGS)
@pytest.mark.parametrize("affine", [True, False])
def test_op_kernel_equals_math_fallback(cfg, affine: bool) -> None:
    """The C kernels and the tensor-code fallback (other devices, no compiler) agree."""
    _need_kernels()
    x, w, b, c = _op_inputs(cfg, affine)
    groups, eps, center, dm, ds, ada, C, k = c
    y, st = torch.ops.lnlab.norm_fwd(x, w, b, *c)
    y2, st2 = _fwd_math(x, w, b, groups, eps, center, ada, C, k)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(st, st2)
    dy = torch.randn_like(x)
    got = torch.ops.lnlab.norm_bwd(dy, x, w, st, groups, eps, center, dm, ds, ada, C, k,
                                   affine, affine)
    want = _bwd_math(dy, x, w, st, groups, center, dm, ds, ada, C, k, affine, affine)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e)


SMALL_GROUP_CFGS = [  # center, detach_mean, detach_std, ada
    (True, False, False, False), (True, True, True, False), (True, False, False, True),
    (False, False, False, False),
]


@pytest.mark.parametrize("d", [8, 16, 32, 64, 96, 128, 12, 20, 160])
@pytest.mark.parametrize("cfg", SMALL_GROUP_CFGS)
@pytest.mark.parametrize("affine", ["wb", "w", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_op_small_groups_equal_math(d: int, cfg, affine: str, dtype) -> None:
    """LN-G with small groups has its own kernel paths (row by row, sums in explicit
    vectors; group sizes 8-128 as literals, others up to 128 with a runtime size and a
    scalar tail; larger groups one by one): each agrees with the tensor-code formulas, in
    float64 and float32."""
    _need_kernels()
    groups, rows = 8, 5
    n = groups * d
    g = torch.Generator().manual_seed(d)
    x = torch.randn(rows, n, generator=g, dtype=torch.float64) * 1.7 + 0.6
    w = torch.randn(n, generator=g, dtype=torch.float64) if affine != "none" else None
    b = torch.randn(n, generator=g, dtype=torch.float64) if affine == "wb" else None
    dy = torch.randn(rows, n, generator=g, dtype=torch.float64)
    center, dm, ds, ada = cfg
    c = (groups, 1e-5, center, dm, ds, ada, 1.5, 0.2)
    y2, st2 = _fwd_math(x, w, b, groups, 1e-5, center, ada, 1.5, 0.2)
    want = _bwd_math(dy, x, w, st2, groups, center, dm, ds, ada, 1.5, 0.2, w is not None,
                     b is not None)
    cast = [None if t is None else t.to(dtype) for t in (x, w, b, dy)]
    y, st = torch.ops.lnlab.norm_fwd(*cast[:3], *c)
    got = torch.ops.lnlab.norm_bwd(cast[3], cast[0], cast[1], st, *c, w is not None,
                                   b is not None)
    tol = {} if dtype == torch.float64 else {"atol": 2e-5, "rtol": 2e-5}
    torch.testing.assert_close(y.double(), y2, **tol)
    torch.testing.assert_close(st.double(), st2, **tol)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), e, **tol)


@pytest.mark.parametrize(("rows", "groups", "d"), [(301, 16, 16), (301, 16, 12), (1, 2048, 16)])
def test_op_small_groups_threads(rows: int, groups: int, d: int) -> None:
    """Past the parallel threshold the small-group rows are split over threads (or, with
    fewer rows than threads, the groups), and the weight / bias gradients summed over them:
    same result as one thread."""
    _need_kernels()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(rows, groups * d, generator=g, dtype=torch.float64)  # >= 32768 elements
    w, b = torch.randn(x.shape[1], generator=g, dtype=torch.float64), torch.randn(
        x.shape[1], generator=g, dtype=torch.float64)
    dy = torch.randn_like(x)
    c = (groups, 1e-5, True, False, False, False, 1.0, 0.0)
    outs = []
    before = torch.get_num_threads()
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            y, st = torch.ops.lnlab.norm_fwd(x, w, b, *c)
            outs.append((y, st, *torch.ops.lnlab.norm_bwd(dy, x, w, st, *c, True, True)))
    finally:
        torch.set_num_threads(before)
    for a, e in zip(outs[1], outs[0], strict=True):
        torch.testing.assert_close(a, e)
    y2, _ = _fwd_math(x, w, b, groups, 1e-5, True, False, 1.0, 0.0)
    torch.testing.assert_close(outs[0][0], y2)


@pytest.mark.parametrize("cfg", CFGS[:3] + CFGS[5:])
def test_op_vmap_rules(cfg) -> None:
    """vmap over the ops directly: batched input (folded into rows) and batched gain (loop)."""
    x, w, b, c = _op_inputs(cfg, affine=True)
    xs = torch.stack([x, 2 * x + 1, -x])
    ws = torch.stack([w, w + 1, 2 * w])
    fwd = torch.ops.lnlab.norm_fwd
    y = torch.func.vmap(lambda t: fwd(t, w, b, *c)[0])(xs)
    torch.testing.assert_close(y, torch.stack([fwd(t, w, b, *c)[0] for t in xs]))
    y = torch.func.vmap(lambda t, v: fwd(t, v, b, *c)[0])(xs, ws)
    loop = [fwd(t, v, b, *c)[0] for t, v in zip(xs, ws, strict=True)]
    torch.testing.assert_close(y, torch.stack(loop))
    groups, eps, center, dm, ds, ada, C, k = c
    st = fwd(x, w, b, *c)[1]
    dys = torch.randn_like(xs)
    for nw in (False, True):
        got = torch.func.vmap(lambda d, nw=nw: torch.ops.lnlab.norm_bwd(
            d, x, w, st, groups, eps, center, dm, ds, ada, C, k, nw, nw))(dys)
        want = [torch.ops.lnlab.norm_bwd(d, x, w, st, groups, eps, center, dm, ds, ada, C, k,
                                         nw, nw) for d in dys]
        for j in range(3):
            torch.testing.assert_close(got[j], torch.stack([r[j] for r in want]))


def test_fake_kernels_on_a_cuda_like_device() -> None:
    """Shapes and devices from the fake kernels, for a fake 'cuda' tensor (no GPU needed)."""
    with FakeTensorMode():
        x = torch.empty(6, 8, device="cuda")
        w = torch.empty(8, device="cuda")
        y, st = torch.ops.lnlab.norm_fwd(x, w, None, 2, 1e-5, True, False, False, False, 1., .1)
        dx, dw, db = torch.ops.lnlab.norm_bwd(y, x, w, st, 2, 1e-5, True, False, False, False,
                                              1., .1, True, False)
    assert (y.shape, y.device.type, st.shape) == ((6, 8), "cuda", (2, 12))
    assert (dx.shape, dw.shape, db.shape, dw.device.type) == ((6, 8), (8,), (0,), "cuda")


def _ops_in_graph(device: str) -> set[str]:
    """The aten / lnlab ops that normalize records for a fake input on ``device``."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def f(x, w):
        return normalize(x, 8, w, None, ada=True)

    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(4, 8, device=device)
        w = torch.empty(8, device=device)
        gm = make_fx(f)(x, w)
    return {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}


def test_dispatch_cpu_op_cuda_composite() -> None:
    """On CPU the fused op runs; on CUDA the composite code (which torch.compile fuses)."""
    _need_kernels()
    assert "lnlab.norm_fwd.default" in _ops_in_graph("cpu")
    on_cuda = _ops_in_graph("cuda")
    assert not any(t.startswith("lnlab") for t in on_cuda)
    assert any("mean" in t for t in on_cuda)


@pytest.mark.parametrize("v", [v for v in VARIANTS if dim_ok(v, 12)], ids=lambda v: v.id)
def test_kernel_under_func_is_refused_auto_falls_back(v: Variant) -> None:
    """impl='kernel' under torch.func says so in one line; 'auto' gives the composite answer."""
    _need_kernels()
    kw = v.normalize_kwargs(12)
    w, b = make_params(v, (12,), torch.float64, seed=1)
    x = _x(3, 12).double()
    got = torch.func.vmap(lambda t: normalize(t, 12, w, b, **kw))(x[:, None])
    torch.testing.assert_close(got[:, 0], normalize(x, 12, w, b, impl="composite", **kw))
    with pytest.raises(RuntimeError, match=r"torch\.func"):
        torch.func.vmap(lambda t: normalize(t, 12, w, b, impl="kernel", **kw))(x)
