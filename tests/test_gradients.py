"""lnlab.analysis.gradients: per-sample LN-input gradient norms and Xu et al.'s A1 statistics.

References are independent of the module's mechanism: per-sample gradients come from a loop
with batch size 1, the total gradient from ``retain_grad`` on the tensor a norm reads, and the
branch gradient from ``register_full_backward_hook``'s ``grad_input``; the A1 predictions are
compared with autograd through the real norm kernels.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lnlab.analysis.gradients import (
    REDUCTIONS,
    gradient_hook,
    gradient_norms,
    gradient_stats,
    per_sample_grad_norms,
    unflatten,
)
from lnlab.errors import LnlabError
from lnlab.models import MLP, Transformer
from lnlab.surgery import find_norms

pytestmark = pytest.mark.usefixtures("one_thread")


def _transformer(ln: str, seed: int = 0, norm: str = "layernorm") -> Transformer:
    torch.manual_seed(seed)
    m = Transformer((10,), 3, vocab_size=17, layers=2, dim=16, heads=2, ln=ln, norm=norm,
                    mlp_ratio=2.0).double()
    _randomize_gains(m)
    return m


def _randomize_gains(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial gains and biases so that folding the gain in is actually tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in find_norms(model):
            for p in (getattr(s.module, "weight", None), getattr(s.module, "bias", None)):
                if isinstance(p, torch.Tensor):
                    p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _tokens(n: int = 7, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 17, (n, 10), generator=g), torch.randint(0, 3, (n,), generator=g)


def _reference(model: nn.Module, x, y, i: int, loss_fn=None, mask=None):
    """Sample i alone: total grad (retain_grad on what the norm reads) and branch grad (full
    backward hook), reduced by hand. Returns {site: {reduction: (total, branch)}}."""
    sites = find_norms(model)
    seen_in: dict[str, torch.Tensor] = {}
    seen_gin: dict[str, torch.Tensor] = {}
    handles = []
    for s in sites:
        def pre(_m, args, name=s.name):
            args[0].retain_grad()
            seen_in[name] = args[0]

        def bwd(_m, gin, _gout, name=s.name):
            seen_gin[name] = gin[0]
        handles.append(s.module.register_forward_pre_hook(pre))
        handles.append(s.module.register_full_backward_hook(bwd))
    model.eval()
    try:
        xi = {k: v[i:i + 1] for k, v in x.items()} if isinstance(x, dict) else x[i:i + 1]
        if isinstance(xi, torch.Tensor) and xi.is_floating_point():
            xi = xi.clone().requires_grad_(True)
        out = model(**xi) if isinstance(xi, dict) else model(xi)
        logits = out if isinstance(out, torch.Tensor) else out.logits
        loss = F.cross_entropy(logits, y[i:i + 1], reduction="sum")
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    res = {}
    for s in sites:
        tot, br = seen_in[s.name].grad, seen_gin[s.name]  # batch of 1, any layout
        tot, br = tot.reshape(-1, tot.shape[-1]), br.reshape(-1, br.shape[-1])
        if mask is not None:
            keep = mask[i].bool()
            tot, br = tot[keep], br[keep]
        r = {}
        for red in REDUCTIONS:
            def f(g, red=red):
                tn = g.norm(dim=-1)
                return {"sample": g.norm(), "token_mean": tn.mean(), "first": tn[0],
                        "last": tn[-1]}[red]
            r[red] = (float(f(tot)), float(f(br)))
        res[s.name] = r
    model.zero_grad(set_to_none=True)
    return res


# --------------------------------------------------------------------------- per-sample norms

@pytest.mark.parametrize("ln", ["pre", "post"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_per_sample_norms_match_single_sample_loop(ln, reduction):
    model = _transformer(ln)
    x, y = _tokens()
    got = per_sample_grad_norms(model, x, y, reduction=reduction, batch_size=4)
    assert [s.name for s in got.sites] == [s.name for s in find_norms(model, x[:2])]
    for i in (0, 4, 6):
        ref = _reference(model, x, y, i)
        for name, r in ref.items():
            t, b = r[reduction]
            assert got.total[name][i].item() == pytest.approx(t, rel=1e-10, abs=1e-14)
            assert got.branch[name][i].item() == pytest.approx(b, rel=1e-10, abs=1e-14)


def test_branch_differs_from_total_only_where_the_input_has_another_consumer():
    x, y = _tokens()
    pre = per_sample_grad_norms(_transformer("pre"), x, y)
    post = per_sample_grad_norms(_transformer("post"), x, y)
    for name in pre.total:
        rel = ((pre.total[name] - pre.branch[name]).abs().max() / pre.total[name].max()).item()
        if name.startswith("blocks."):  # Pre-LN: the residual stream feeds the skip path too
            assert rel > 1e-3, name
        else:  # the final norm is the only reader of the last block's output
            assert name == "final_norm" and rel < 1e-12
    assert post.total  # Post-LN: every norm reads a residual sum nobody else reads
    for name in post.total:
        torch.testing.assert_close(post.total[name], post.branch[name], rtol=1e-12, atol=0)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), bs=st.integers(1, 6))
def test_norms_do_not_depend_on_batching(seed, bs):
    model = _transformer("pre", seed=seed % 7)
    x, y = _tokens(seed=seed)
    a = per_sample_grad_norms(model, x, y, batch_size=bs)
    b = per_sample_grad_norms(model, x, y, batch_size=len(y))
    for name in a.total:
        torch.testing.assert_close(a.total[name], b.total[name], rtol=1e-11, atol=1e-15)
        torch.testing.assert_close(a.branch[name], b.branch[name], rtol=1e-11, atol=1e-15)


def test_gradient_norms_averages_and_records():
    model = _transformer("pre")
    x, y = _tokens(9)
    noisy_y = (y[:3] + 1) % 3
    res = gradient_norms(model, (x, y), (x[:3], noisy_y), batch_size=5)
    ps_l = per_sample_grad_norms(model, x, y)
    ps_m = per_sample_grad_norms(model, x[:3], noisy_y)
    recs = res.to_records()
    assert [r["name"] for r in recs] == [s.name for s in ps_l.sites]
    for r in recs:
        assert r["learning_total"] == pytest.approx(ps_l.total[r["name"]].mean().item())
        assert r["memorization_branch"] == pytest.approx(ps_m.branch[r["name"]].mean().item())
        assert (r["n_learning"], r["n_memorization"]) == (9, 3)
        assert r["ratio_total"] == pytest.approx(r["learning_total"] / r["memorization_total"])
        assert r["reduction"] == "sample"
        assert set(r) >= {"name", "block", "group", "learning_total", "memorization_total",
                          "learning_branch", "memorization_branch"}
    assert "blocks.0.norm1" in str(res)
    empty = gradient_norms(model, (x, y), (x[:0], y[:0]))
    assert all(math.isnan(s.memorization_total) and s.n_memorization == 0 for s in empty.sites)


def test_site_selection_and_raw_input_norm():
    # residual="none": the first norm reads W x + b; an lnlab LNNet-like model whose first
    # norm reads the raw (float) input still has a total gradient (the input is made to
    # require grad), and a site list restricts the output.
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(6), nn.Linear(6, 3)).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    got = per_sample_grad_norms(model, x, y)
    ref = _reference(model, x, y, 2)
    assert got.total["0"][2].item() == pytest.approx(ref["0"]["sample"][0], rel=1e-12)
    torch.testing.assert_close(got.total["0"], got.branch["0"])
    m2 = _transformer("pre")
    xt, yt = _tokens()
    only = per_sample_grad_norms(m2, xt, yt, sites="final")
    assert list(only.total) == ["final_norm"]


def test_bad_arguments():
    model = _transformer("post")
    x, y = _tokens()
    with pytest.raises(LnlabError, match="reduction"):
        per_sample_grad_norms(model, x, y, reduction="cls")
    with pytest.raises(LnlabError, match="one loss per sample"):
        per_sample_grad_norms(model, x, y, loss_fn=lambda out, t: F.cross_entropy(out, t))
    with pytest.raises(LnlabError, match="labels"):
        per_sample_grad_norms(model, x, y[:3])
    with pytest.raises(LnlabError, match="batch_size"):
        per_sample_grad_norms(model, x, y, batch_size=0)


# --------------------------------------------------------------------------- A1 statistics

A1_SPECS = {  # spec: (mean gradient re-centred?, std path present?)
    "layernorm_simple:eps=0": (True, True),
    "detachnorm:detach=both,eps=0": (False, False),
    "detachnorm:detach=mean,eps=0": (False, True),
    "detachnorm:detach=std,eps=0": (True, False),
    "layernorm:eps=0": (True, True),
    "adanorm:C=2,k=0.1,eps=0": (True, True),
    "detachnorm:detach=mean,eps=0,affine=true": (False, True),
}


def _mlp(norm: str, seed: int, width: int = 12, residual: str = "pre") -> MLP:
    torch.manual_seed(seed)
    m = MLP(9, 4, depth=3, width=width, norm=norm, residual=residual, final_norm=True).double()
    _randomize_gains(m, seed + 1)
    return m


def _vec(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 9, generator=g, dtype=torch.float64),
            torch.randint(0, 4, (n,), generator=g))


@pytest.mark.parametrize("spec", list(A1_SPECS))
def test_a1_closed_forms_hold_in_float64(spec):
    centred, std_path = A1_SPECS[spec]
    model = _mlp(spec, seed=0)
    x, y = _vec(20, 1)
    res = gradient_stats(model, x, y, batch_size=8)
    assert len(res.sites) == 4 and not res.skipped
    for s in res.sites:
        scale = s.g_var_over_sigma2
        assert scale > 1e-8
        assert s.rel_dev_grad < 1e-8, (s.name, s.rel_dev_grad)
        assert s.max_dev_var < 1e-8 * scale and s.max_dev_xu_var < 1e-8 * scale
        assert s.max_dev_mean < 1e-8 * math.sqrt(scale)
        assert s.max_dev_xu_mean < 1e-8 * math.sqrt(scale)
        if centred:  # re-centring: the mean gradient is exactly 0
            assert abs(s.mean) < 1e-8 * math.sqrt(scale)
        else:
            assert s.mean == pytest.approx(s.g_mean_over_sigma, rel=1e-8)
        if std_path:  # re-scaling removes m^2/sigma^2 of the variance
            assert s.var == pytest.approx(s.g_var_over_sigma2 - s.m2_over_sigma2, rel=1e-8)
            assert s.m2_over_sigma2 > 1e-6 * scale
        else:
            assert s.var == pytest.approx(s.g_var_over_sigma2, rel=1e-8)
        assert s.detach == {(True, True): "none", (False, False): "both",
                            (False, True): "mean", (True, False): "std"}[(centred, std_path)]
        assert s.gain_folded == (not spec.startswith(("layernorm_simple", "detachnorm:detach="))
                                 or "affine=true" in spec)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), width=st.sampled_from([4, 8, 16]),
       spec=st.sampled_from(["layernorm", "layernorm_simple", "detachnorm:detach=std",
                             "detachnorm:detach=mean", "groupln:groups=2", "rmsnorm",
                             "adanorm:C=1.5"]))
def test_exact_forms_hold_with_eps(seed, width, spec):
    model = _mlp(spec, seed, width=width, residual="post")
    x, y = _vec(6, seed)
    res = gradient_stats(model, x, y)
    assert res.sites
    for s in res.sites:
        assert s.rel_dev_grad < 1e-8
        assert s.max_dev_var <= 1e-8 * s.g_var_over_sigma2 + 1e-300


def test_a1_on_transformer_tokens_and_skipped_sites():
    model = _transformer("pre", norm="detachnorm:detach=mean")
    x, y = _tokens()
    res = gradient_stats(model, x, y)
    assert res.max_rel_dev < 1e-8
    assert {s.rows for s in res.sites} == {len(y) * 11}  # 10 tokens + CLS per sample
    torch.manual_seed(0)
    none = MLP(9, 4, depth=2, width=8, norm="none", residual="pre").double()
    r = gradient_stats(none, *_vec(4, 0))
    assert r.sites == [] and r.skipped and all("identity" in why for _, why in r.skipped)


# --------------------------------------------------------------------------- trainer hook

def _fake_state(model, epoch=1, epochs=3):
    g = torch.Generator().manual_seed(5)
    x_tr = torch.randint(0, 17, (30, 10), generator=g)
    y_tr = torch.randint(0, 3, (30,), generator=g)
    mask = torch.zeros(30, dtype=torch.bool)
    mask[[2, 7, 11]] = True
    noisy = y_tr.clone()
    noisy[mask] = (noisy[mask] + 1) % 3
    data = SimpleNamespace(x_train=x_tr, y_train=y_tr, x_test=x_tr[:12], y_test=y_tr[:12])
    labels = SimpleNamespace(labels=noisy, mask=mask, original=y_tr)
    return SimpleNamespace(model=model, data=data, labels=labels, epoch=epoch,
                           cfg=SimpleNamespace(epochs=epochs))


def test_hook_emits_flat_metrics_equal_to_direct_calls():
    model = _transformer("post")
    state = _fake_state(model)
    model.train()
    out = gradient_hook(max_learn=8, stats_samples=10)(state)
    assert model.training  # mode restored
    d = state.data
    assert out["grad/n_learn"] == 8 and out["grad/n_mem"] == 3
    direct = gradient_norms(model, (d.x_train[[2, 7, 11]], state.labels.labels[[2, 7, 11]]))
    for s in direct.sites:  # memorization = the noisy samples with their noisy labels
        assert out[f"grad/mem_total/{s.name}"] == pytest.approx(s.learning_total)
        assert out[f"grad/mem_branch/{s.name}"] == pytest.approx(s.learning_branch)
    groups = unflatten(out)
    assert set(groups) == {"learn_total", "learn_branch", "mem_total", "mem_branch"}
    assert set(groups["mem_total"]) == {s.name for s in direct.sites}
    stats = unflatten(out, "gstat")
    assert max(stats["rel_dev_grad"].values()) < 1e-8
    # every=2: epoch 1 is skipped, the last epoch (3) is not
    assert gradient_hook(every=2)(_fake_state(model, epoch=1)) == {}
    assert gradient_hook(every=2, stats=False)(_fake_state(model, epoch=3))
    clean = _fake_state(model)
    clean.labels.mask[:] = False
    out = gradient_hook(stats=False)(clean)
    assert out["grad/n_mem"] == 0 and "mem_total" not in unflatten(out)


def test_hook_rejects_bad_options():
    with pytest.raises(LnlabError):
        gradient_hook(every=0)
    with pytest.raises(LnlabError):
        gradient_hook(stats_fields=("nope",))
    with pytest.raises(LnlabError):
        gradient_hook(reduction="frobenius")


@pytest.mark.slow
def test_hook_in_the_real_trainer():
    from lnlab.train import TrainConfig, train

    cfg = TrainConfig(model="transformer:layers=2,dim=16,heads=2,ln=pre", data="digits",
                      noise=0.05, epochs=2, eval_every=1, seed=0, batch_size=128)
    hook = gradient_hook(every=2, max_learn=32, max_mem=16, stats_samples=32)
    res = train(cfg, None, hooks=[hook])
    first, last = res.epochs
    assert not any(k.startswith(("grad/", "gstat/")) for k in first)
    g = unflatten(last)
    names = {s.name for s in find_norms(res.model)}
    assert set(g["learn_total"]) == names and last["grad/n_mem"] == 16
    assert all(v > 0 for v in g["mem_branch"].values())
    # float32 training model: the closed forms hold to float32 rounding
    assert max(unflatten(last, "gstat")["rel_dev_grad"].values()) < 1e-4


class _TorchEncoder(nn.Module):
    """nn.TransformerEncoder classifier, sequence-first (batch on dim 1 of every LN input)."""

    def __init__(self, norm_first: bool):
        super().__init__()
        self.embed = nn.Embedding(17, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.encoder(self.embed(x).transpose(0, 1))
        return self.head(h[0])


@pytest.mark.parametrize("norm_first", [True, False])
def test_torch_encoder_sequence_first(norm_first):
    torch.manual_seed(0)
    model = _TorchEncoder(norm_first).double()
    x, y = _tokens()
    got = per_sample_grad_norms(model, x, y, batch_size=4, reduction="token_mean")
    assert len(got.total) == 4
    ref = _reference(model, x, y, 5)
    for name, r in ref.items():
        t, b = r["token_mean"]
        assert got.total[name][5].item() == pytest.approx(t, rel=1e-10)
        assert got.branch[name][5].item() == pytest.approx(b, rel=1e-10)
        assert (abs(t - b) > 1e-3 * t) == norm_first  # Pre-LN only: skip path differs
    assert gradient_stats(model, x, y).max_rel_dev < 1e-8


def test_cnn_channel_norms():
    from lnlab.models import CNN

    torch.manual_seed(0)
    model = CNN((1, 8, 8), 4, channels=8, layers=2, norm="groupln:groups=2").double()
    _randomize_gains(model)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (5,), generator=g)
    got = per_sample_grad_norms(model, x, y)
    ref = _reference(model, x, y, 1)
    for name, r in ref.items():
        assert got.total[name][1].item() == pytest.approx(r["sample"][0], rel=1e-10)
    st = gradient_stats(model, x, y)
    assert st.max_rel_dev < 1e-8 and all(s.rows % 5 == 0 for s in st.sites)
