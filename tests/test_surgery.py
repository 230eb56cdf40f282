"""Norm surgery on lnlab models, torch's TransformerEncoder and hand-made modules."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lnlab.errors import LnlabError
from lnlab.models import build_model
from lnlab.norms import AdaNorm, GroupLayerNorm
from lnlab.surgery import (
    find_norms,
    format_sites,
    is_norm,
    norm_placement,
    select_sites,
    strip_affine,
    swap_norms,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def randomize_affine(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in find_norms(model):
            for p in ("weight", "bias"):
                t = s.module._parameters.get(p)
                if t is not None:
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.5 + 1.0)


def manual_unit_affine(model: nn.Module, where: str) -> nn.Module:
    """A copy whose selected norms have gain 1 and bias 0 (the reference for strip_affine)."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for s in select_sites(find_norms(ref), where):
            if s.has_gain:
                s.module.weight.fill_(1.0)
            if s.has_bias:
                s.module.bias.zero_()
    return ref


def tiny_transformer(ln: str = "pre", layers: int = 6, **extra: str) -> nn.Module:
    opts = ",".join(f"{k}={v}" for k, v in extra.items())
    spec = f"transformer:layers={layers},dim=16,heads=2,ln={ln}" + ("," + opts if opts else "")
    torch.manual_seed(0)
    return build_model(spec, input_shape=(16,), num_classes=3)


# --------------------------------------------------------------------------- find_norms

def test_find_norms_on_lnlab_transformer():
    m = tiny_transformer("pre", embed_norm="true")
    sites = find_norms(m)
    assert [s.name for s in sites[:3]] == ["embed_norm", "blocks.0.norm1", "blocks.0.norm2"]
    assert sites[-1].name == "final_norm" and sites[-1].group == "final"
    assert sites[0].group == "embedding" and sites[0].block is None
    assert Counter(s.group for s in sites) == {"embedding": 1, "early": 4, "middle": 4,
                                               "later": 4, "final": 1}
    assert [s.block for s in sites[1:-1]] == [i for i in range(6) for _ in (0, 1)]
    assert all(s.n_blocks == 6 and s.stack == "blocks" for s in sites[1:-1])
    assert [s.order for s in sites] == list(range(len(sites)))
    assert all(s.cls == "lnlab.LayerNorm" and s.kind == "layernorm" for s in sites)
    post = find_norms(tiny_transformer("post"))
    assert len(post) == 12 and not any(s.group == "final" for s in post)


@pytest.mark.parametrize("n", range(1, 25))
def test_groups_are_thirds_of_the_blocks(n):
    m = build_model(f"mlp:depth={n},width=4", input_shape=(4,), num_classes=2)
    groups = [s.group for s in find_norms(m)]
    assert len(groups) == n
    order = {"early": 0, "middle": 1, "later": 2}
    assert [order[g] for g in groups] == sorted(order[g] for g in groups)  # contiguous
    counts = Counter(groups)
    if n % 3 == 0:
        assert counts == {"early": n // 3, "middle": n // 3, "later": n // 3}
    if n >= 3:
        assert max(counts.values()) - min(counts.get(g, 0) for g in order) <= 1
    assert {1: ["middle"], 2: ["early", "later"]}.get(n, groups) == groups


@given(st.integers(3, 60))
def test_group_split_is_balanced_and_symmetric(n):
    from lnlab.surgery import _third

    groups = [_third(i, n) for i in range(n)]
    c = Counter(groups)
    assert max(c.values()) - min(c.values()) <= 1
    mirror = {"early": "later", "later": "early", "middle": "middle"}
    assert [mirror[g] for g in reversed(groups)] == groups


@pytest.mark.parametrize("norm_first", [True, False])
def test_torch_transformer_encoder(norm_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, norm_first=norm_first,
                                       dropout=0.0)
    enc = nn.TransformerEncoder(layer, 3, norm=nn.LayerNorm(16) if norm_first else None,
                                enable_nested_tensor=False)
    x = torch.randn(2, 5, 16)
    sites = find_norms(enc, x)
    names = [f"layers.{i}.norm{j}" for i in range(3) for j in (1, 2)]
    assert [s.name for s in sites] == names + (["norm"] if norm_first else [])
    assert all(s.called for s in sites)
    assert [s.group for s in sites[:6]] == ["early"] * 2 + ["middle"] * 2 + ["later"] * 2
    assert sites[0].cls == "torch.nn.LayerNorm"
    assert norm_placement(enc).kind == ("pre" if norm_first else "post")


class _Block(nn.Module):
    """A residual block with no placement attribute, so only tracing can tell."""

    def __init__(self, d: int, pre: bool) -> None:
        super().__init__()
        self.pre = pre
        self.ln_a = nn.LayerNorm(d)
        self.f = nn.Linear(d, d)
        self.ln_b = nn.LayerNorm(d)
        self.g = nn.Linear(d, d)

    def forward(self, x):
        if self.pre:
            x = x + self.f(self.ln_a(x))
            return x + self.g(self.ln_b(x))
        x = self.ln_a(x + self.f(x))
        return self.ln_b(x + self.g(x))


class _Net(nn.Module):
    def __init__(self, pre: bool, final: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Block(8, pre) for _ in range(3))
        self.out = nn.LayerNorm(8) if final else None

    def forward(self, x):
        for b in self.layers:
            x = b(x)
        return self.out(x) if self.out is not None else x


@pytest.mark.parametrize("pre", [True, False])
def test_placement_is_traced_not_guessed(pre):
    # Structure alone says "pre" iff there is a final norm; give the opposite structure.
    net = _Net(pre=pre, final=not pre)
    guessed = norm_placement(net)
    assert guessed.kind == ("post" if pre else "pre")
    traced = norm_placement(net, torch.randn(2, 8))
    assert traced.kind == ("pre" if pre else "post")
    assert "traced" in traced.evidence


def test_forward_order_is_checked_with_hooks():
    class Swapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.LayerNorm(4)   # registered first, runs second
            self.early = nn.LayerNorm(4)
            self.unused = nn.LayerNorm(4)

        def forward(self, x):
            return self.late(self.early(x))

    m = Swapped()
    assert [s.name for s in find_norms(m)] == ["late", "early", "unused"]
    traced = find_norms(m, torch.randn(2, 4))
    assert [s.name for s in traced] == ["early", "late", "unused"]
    assert [s.called for s in traced] == [True, True, False]
    assert all(s.called is None for s in find_norms(m))


class ToyRMSNorm(nn.Module):
    """Hugging Face style: reads self.weight in its own forward."""

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.variance_epsilon = eps
        self.act = nn.Identity()  # a child that must not be searched

    def forward(self, x):
        v = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(v + self.variance_epsilon))


class GemmaLikeRMSNorm(ToyRMSNorm):
    def forward(self, x):
        v = x.pow(2).mean(-1, keepdim=True)
        return (1.0 + self.weight) * (x * torch.rsqrt(v + self.variance_epsilon))


class Outer(nn.Module):
    def __init__(self, norm_cls) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(6, 6), norm_cls(6))
                                    for _ in range(3))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        for b in self.layers:
            x = b(x)
        return self.head(x)


def test_recognition_rules():
    assert is_norm(nn.LayerNorm(4)) and is_norm(nn.RMSNorm(4)) and is_norm(AdaNorm(4))
    assert is_norm(ToyRMSNorm(4))
    assert not is_norm(nn.Linear(4, 4))
    # GroupNorm is a norm (the optimizer and the audit treat it so), but not a surgery site:
    # it normalizes over channels, not each sample's trailing features.
    assert is_norm(nn.GroupNorm(2, 4))
    assert find_norms(nn.Sequential(nn.Linear(4, 4), nn.GroupNorm(2, 4))) == []

    class NotANormLayerNorm(nn.Module):  # named like a norm, but a container of layers
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4))
            self.inner = nn.Linear(4, 4)

    assert not is_norm(NotANormLayerNorm())
    sites = find_norms(Outer(ToyRMSNorm))
    assert [s.name for s in sites] == [f"layers.{i}.1" for i in range(3)]
    assert sites[0].kind == "rmsnorm" and sites[0].source == "custom"
    assert sites[0].eps == 1e-6 and sites[0].has_gain and not sites[0].has_bias


def test_plain_sequential_uses_layer_positions():
    m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 4),
                      nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU())
    sites = find_norms(m)
    assert [(s.name, s.block, s.n_blocks, s.group) for s in sites] == [
        ("1", 1, 9, "early"), ("4", 4, 9, "middle"), ("7", 7, 9, "later")]
    assert find_norms(nn.Sequential(nn.Linear(4, 4))) == []
    assert norm_placement(m, torch.randn(2, 4)).kind == "unknown"
    assert norm_placement(nn.Linear(3, 3)).kind == "unknown"


def test_never_descends_into_a_norm():
    class WrappedLN(nn.LayerNorm):
        def __init__(self, d):
            super().__init__(d)
            self.shadow = nn.LayerNorm(d)  # would be a second site if searched

    m = nn.Sequential(nn.Linear(4, 4), WrappedLN(4))
    sites = find_norms(m)
    assert [s.name for s in sites] == ["1"]


# --------------------------------------------------------------------------- strip_affine

@pytest.mark.parametrize("ln", ["pre", "post"])
def test_strip_affine_early_matches_manual_unit_affine(ln):
    m = tiny_transformer(ln).eval()
    randomize_affine(m)
    ref = manual_unit_affine(m, "early")
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    report = strip_affine(m, "early")
    assert [c.site for c in report] == [f"blocks.{i}.norm{j}" for i in (0, 1) for j in (1, 2)]
    assert report.params_removed == 4 * 2 * 16
    x = torch.randn(4, 16)
    torch.testing.assert_close(m(x), ref(x), rtol=0, atol=0)
    # early sites: no trainable gain/bias; everything else untouched
    names = dict(m.named_parameters())
    for s in find_norms(m):
        assert (s.has_gain, s.has_bias) == ((False, False) if s.group == "early"
                                           else (True, True))
    assert set(before) - set(names) == {f"blocks.{i}.norm{j}.{p}" for i in (0, 1)
                                        for j in (1, 2) for p in ("weight", "bias")}
    assert all(torch.equal(names[n], before[n]) for n in names)
    assert "blocks.0.norm1" in str(report) and "128 trainable" in str(report)


@settings(max_examples=8, deadline=None)
@given(mask=st.lists(st.booleans(), min_size=7, max_size=7), seed=st.integers(0, 2**20),
       ln=st.sampled_from(["pre", "post"]))
def test_strip_any_subset_equals_unit_affine_float64(mask, seed, ln):
    torch.manual_seed(seed)
    m = build_model(f"transformer:layers=3,dim=8,heads=2,ln={ln},final_norm=true",
                    input_shape=(8,), num_classes=2).double().eval()
    randomize_affine(m, seed)
    chosen = {s.name for s, k in zip(find_norms(m), mask, strict=True) if k}
    ref = manual_unit_affine(m, lambda s: s.name in chosen)
    report = strip_affine(m, lambda s: s.name in chosen)
    assert {c.site for c in report} == chosen
    x = torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), ref(x), rtol=0, atol=0)
    left = {n.rsplit(".", 1)[0] for n, _ in m.named_parameters() if "norm" in n}
    assert left == {s.name for s in find_norms(m)} - chosen


def test_strip_affine_selection_forms():
    m = tiny_transformer("pre")
    assert len(strip_affine(copy.deepcopy(m), ["middle", "final"])) == 5
    assert len(strip_affine(copy.deepcopy(m), "blocks")) == 12
    assert len(strip_affine(copy.deepcopy(m), "all")) == 13
    assert len(strip_affine(copy.deepcopy(m), lambda s: s.block == 5)) == 2
    with pytest.raises(LnlabError, match="valid: all, blocks, early"):
        strip_affine(m, "first")
    report = strip_affine(m, "all")
    again = strip_affine(m, "all")
    assert len(report) == 13 and len(again) == 0 and len(again.skipped) == 13
    assert sum(p.numel() for n, p in m.named_parameters() if "norm" in n) == 0


@pytest.mark.parametrize("norm_cls, neutral", [(ToyRMSNorm, 1.0), (GemmaLikeRMSNorm, 0.0)])
def test_strip_affine_on_custom_forward_classes(norm_cls, neutral):
    torch.manual_seed(0)
    m = Outer(norm_cls)
    randomize_affine(m)
    ref = copy.deepcopy(m)
    with torch.no_grad():
        for s in find_norms(ref):
            s.module.weight.fill_(neutral)
    report = strip_affine(m)
    assert len(report) == 3 and "buffers" in report.changes[0].note
    x = torch.randn(5, 6)
    torch.testing.assert_close(m(x), ref(x), rtol=0, atol=0)
    assert not any(n.endswith(".1.weight") for n, _ in m.named_parameters())
    assert all(not s.has_gain for s in find_norms(m))
    assert not any(k.endswith("1.weight") for k in m.state_dict())  # non-persistent


def test_strip_affine_keeps_torch_fused_path_correct():
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True),
                                2, enable_nested_tensor=False).eval()
    randomize_affine(enc)
    ref = manual_unit_affine(enc, "all")
    strip_affine(enc)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():  # the inference fast path of TransformerEncoderLayer
        torch.testing.assert_close(enc(x), ref(x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- swap_norms

def test_swap_adanorm_then_train_a_step():
    m = tiny_transformer("post")
    report = swap_norms(m, "adanorm")
    assert len(report) == 12 and all("dropped gain+bias" in c.note for c in report)
    assert all(isinstance(s.module, AdaNorm) for s in find_norms(m))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = torch.randn(8, 16), torch.randint(0, 3, (8,))
    loss = nn.functional.cross_entropy(m(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_swap_copies_affine_keeps_eps_and_is_otherwise_identical():
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True,
                                                           layer_norm_eps=1e-3, dropout=0.0),
                                3, enable_nested_tensor=False).eval()
    randomize_affine(enc)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        want = enc(x)
    other = {n: p.detach().clone() for n, p in enc.named_parameters() if "norm" not in n}
    report = swap_norms(enc, "layernorm", "all")
    assert all("copied gain+bias" in c.note for c in report)
    for s in find_norms(enc):
        assert s.cls == "lnlab.LayerNorm" and s.eps == 1e-3
    with torch.no_grad():  # would silently ignore the new modules if the fused path ran
        torch.testing.assert_close(enc(x), want, rtol=1e-5, atol=1e-5)
    now = dict(enc.named_parameters())
    assert all(torch.equal(now[n], p) for n, p in other.items())


def test_swap_groupln_and_explicit_eps_and_rmsnorm_bias():
    m = tiny_transformer("pre")
    randomize_affine(m)
    g = m.blocks[0].norm1.weight.detach().clone()
    swap_norms(m, "groupln:groups=4", "early")
    assert isinstance(m.blocks[0].norm1, GroupLayerNorm) and m.blocks[0].norm1.groups == 4
    assert torch.equal(m.blocks[0].norm1.weight, g)
    assert not isinstance(m.blocks[2].norm1, GroupLayerNorm)
    swap_norms(m, "rmsnorm:eps=1e-3", "final")
    s = find_norms(m)[-1]
    assert s.kind == "rmsnorm" and s.eps == 1e-3 and s.has_gain and not s.has_bias
    with pytest.raises(LnlabError, match="valid names"):
        swap_norms(m, "batchnorm")
    with pytest.raises(LnlabError, match="does not divide"):
        swap_norms(m, "groupln:groups=5")


def test_swap_on_custom_classes_and_back():
    m = Outer(ToyRMSNorm)
    strip_affine(m, "early")
    report = swap_norms(m, "rmsnorm")
    # the stripped site has no gain to copy; the others keep theirs
    assert [c.note for c in report] == ["", "copied gain", "copied gain"]
    assert all(s.cls == "lnlab.RMSNorm" and s.eps == 1e-6 for s in find_norms(m))
    m(torch.randn(3, 6)).sum().backward()


def test_format_sites_and_to_dict():
    sites = find_norms(tiny_transformer("pre", layers=3))
    text = format_sites(sites)
    assert "blocks.2.norm2" in text and "final" in text and "0/3" in text
    d = sites[0].to_dict()
    assert d["name"] == "blocks.0.norm1" and d["shape"] == [16] and "module" not in d
