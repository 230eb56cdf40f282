"""One table drives the zoo: a variant added as a class plus a table row is built by
``make_norm``, listed by ``lnlab norms``, and recognised by surgery, the optimizer's parameter
groups, the weight-decay audit and the gradient analysis, with no other edit. Also: the rules of
``norm_form`` for torch's and Hugging Face's norms, ``impl`` as a spec option, and every row's
``norm_math`` agreeing with its module's forward.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor, nn

from lnlab.analysis.gradients import gradient_stats
from lnlab.analysis.scale_invariance import audit, find_norm_eps, set_norm_eps
from lnlab.cli import main
from lnlab.norms import (
    IMPLS,
    AdaNorm,
    LayerNorm,
    NormBase,
    NormInfo,
    NormMath,
    NormSpec,
    RMSNorm,
    describe,
    is_norm,
    make_norm,
    norm_form,
    normalize,
    parse_spec,
)
from lnlab.norms import registry as R
from lnlab.norms.registry import Option, parse_bool
from lnlab.surgery import find_norms, strip_affine, swap_norms
from lnlab.train.config import TrainConfig
from lnlab.train.optim import build_optimizer, param_tags

# --------------------------------------------------------------------------- the toy variant
# Everything a newcomer writes to add a variant: the class and its table row. The name is
# chosen so that no name rule could recognise it without the row ("...RMSNorm" would).

class ToyGroupRMS(NormBase):
    """RMSNorm on each of ``groups`` contiguous feature groups, then gain and bias."""

    def __init__(self, normalized_shape, groups=1, eps=1e-6, elementwise_affine=True,
                 bias=True, device=None, dtype=None, impl="auto"):
        n = math.prod((normalized_shape,) if isinstance(normalized_shape, int)
                      else normalized_shape)
        if groups < 1 or n % groups:
            raise ValueError(f"groups={groups} does not divide the feature size {n}")
        self.groups = int(groups)
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype, impl)

    def forward(self, x: Tensor) -> Tensor:
        return normalize(x, self.normalized_shape, self.weight, self.bias, self.eps,
                         groups=self.groups, center=False, impl=self.impl)

    def norm_math(self) -> NormMath:
        return NormMath(center=False, groups=self.groups)


TOY_ROW = NormInfo(
    "grouprms", ToyGroupRMS, "g * x / rms(x) per feature group + b", "test toy",
    (Option("groups", int, 1, "number of groups", check=lambda g: g >= 1, check_msg=">= 1"),
     Option("eps", float, 1e-6, "added to the mean square"),
     Option("affine", parse_bool, True, "gain and bias", kwarg="elementwise_affine"),
     Option("bias", parse_bool, True, "bias (with affine)"),
     Option("impl", str, "auto", "code path", IMPLS)),
)


@pytest.fixture
def toy_row(monkeypatch: pytest.MonkeyPatch) -> NormInfo:
    monkeypatch.setitem(R._REGISTRY, TOY_ROW.name, TOY_ROW)
    return TOY_ROW


class Net(nn.Module):
    """Linear -> norm -> ReLU, twice, then a head: blocks ``blocks.{i}``."""

    def __init__(self, norm: str, d: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), make_norm(norm, d), nn.ReLU()) for _ in range(2))
        self.head = nn.Linear(d, 3)

    def forward(self, x: Tensor) -> Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def _in_norm(param_name: str) -> bool:
    return param_name.split(".")[:3:2] == ["blocks", "1"]  # blocks.{i}.1.* (not the head)


def _randomize_affine(model: nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if _in_norm(name):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5
                        + (1.0 if name.endswith("weight") else 0.0))


def test_toy_is_unknown_without_its_row() -> None:
    m = ToyGroupRMS(8, groups=2)
    assert not is_norm(m) and norm_form(m) is None
    assert find_norms(nn.Sequential(nn.Linear(8, 8), m)) == []
    with pytest.raises(ValueError, match="unknown norm 'grouprms'"):
        make_norm("grouprms", 8)


def test_make_norm_uses_the_rows_class_and_options(toy_row: NormInfo) -> None:
    m = make_norm("grouprms:groups=4,bias=false,impl=composite", 8, dtype=torch.float64)
    assert type(m) is ToyGroupRMS
    assert (m.groups, m.bias, m.impl, m.weight.dtype) == (4, None, "composite", torch.float64)
    assert str(parse_spec("grouprms:groups=4")) == "grouprms:groups=4"
    with pytest.raises(ValueError, match="valid options: groups, eps, affine, bias, impl"):
        make_norm("grouprms:C=1", 8)
    with pytest.raises(ValueError, match="does not divide"):
        make_norm("grouprms:groups=3", 8)


def test_lnlab_norms_lists_the_row(toy_row: NormInfo, capsys: pytest.CaptureFixture) -> None:
    assert main(["norms", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["grouprms"]["options"]["impl"]["choices"] == list(IMPLS)
    assert rows["grouprms"]["class"] == "lnlab.ToyGroupRMS"


def test_surgery_finds_strips_and_swaps_the_toy(toy_row: NormInfo) -> None:
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    m = Net("grouprms:groups=2")
    sites = find_norms(m, x)
    assert [(s.name, s.kind, s.source, s.cls) for s in sites] == [
        (f"blocks.{i}.1", "grouprms", "lnlab", "lnlab.ToyGroupRMS") for i in range(2)]
    assert all(s.has_gain and s.has_bias and s.eps == 1e-6 for s in sites)

    # strip: same function as gain 1, bias 0, and the parameters leave the model
    _randomize_affine(m)
    ref = Net("grouprms:groups=2")
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        for i in range(2):
            ref.blocks[i][1].weight.fill_(1.0)
            ref.blocks[i][1].bias.zero_()
    report = strip_affine(m)
    assert report.params_removed == 2 * 2 * 8
    torch.testing.assert_close(m(x), ref(x))
    assert not any(_in_norm(n) for n, _ in m.named_parameters())
    assert sum(_in_norm(n) for n, _ in Net("grouprms").named_parameters()) == 4

    # swap a LayerNorm model to the toy: affine copied, eps kept from the site
    ln = Net("layernorm")
    _randomize_affine(ln)
    rep = swap_norms(ln, "grouprms:groups=2")
    assert len(rep) == 2
    new = ln.blocks[0][1]
    assert type(new) is ToyGroupRMS and new.eps == 1e-5 and new.groups == 2
    assert "copied gain+bias" in rep[0].note


def test_optimizer_groups_and_audit_recognise_the_toy(toy_row: NormInfo) -> None:
    m = Net("grouprms:groups=2")
    tags = param_tags(m)
    norm_params = {n for n, (_, t) in tags.items() if "norm" in t}
    assert norm_params == {f"blocks.{i}.1.{p}" for i in range(2) for p in ("weight", "bias")}
    opt = build_optimizer(m, TrainConfig(weight_decay=0.1, wd_exclude=["norm"]))
    free = next(g for g in opt.param_groups if g["name"] == "no_decay")
    assert {id(p) for p in free["params"]} == {id(p) for n, p in m.named_parameters()
                                               if n in norm_params}

    assert [(n, a) for n, a, _ in find_norm_eps(m)] == [(f"blocks.{i}.1", "eps")
                                                        for i in range(2)]
    twin = Net("grouprms:groups=2")
    assert set_norm_eps(twin, 0.0) == 2 and twin.blocks[1][1].eps == 0.0

    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    rep = audit(m, x, balancing=False)
    kinds = {g.name: g.kind for g in rep.groups}
    assert kinds["blocks.0.1"] == kinds["blocks.1.1"] == "norm"
    assert not any("no normalization layer" in n for n in rep.notes)
    # what the audit finds because the toy normalizes: the Linear before it can be rescaled
    inv = {g.name: g.invariant for g in (*rep.groups, *rep.joint)}
    assert any(v for k, v in inv.items() if k.startswith("blocks.0.0"))


def test_gradient_analysis_has_the_toys_closed_form(toy_row: NormInfo) -> None:
    m = Net("grouprms:groups=2").double()
    _randomize_affine(m)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=gen)
    st = gradient_stats(m, x, y)
    assert st.skipped == []
    assert [s.kind for s in st.sites] == ["grouprms", "grouprms"]
    assert st.max_rel_dev < 1e-10  # the closed form built from norm_math() holds exactly
    assert all(s.max_abs_pred > 0 for s in st.sites)


# --------------------------------------------------------------------------- the real rows

@pytest.mark.parametrize("info", describe(), ids=lambda i: i.name)
def test_norm_math_matches_the_forward(info: NormInfo) -> None:
    """Each class's NormMath (what the gradient analysis reads) computes its forward."""
    spec = {"groupln": "groupln:groups=3", "detachnorm": "detachnorm:affine=true",
            "rmsnorm": "rmsnorm:bias=true"}.get(info.name, info.name)
    m = make_norm(spec, 12, dtype=torch.float64)
    _randomize = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=_randomize, dtype=torch.float64))
    x = torch.randn(5, 12, generator=_randomize, dtype=torch.float64)
    form = norm_form(m)
    assert form is not None and form.kind == info.name and form.family == info.family
    if form.math is None:
        assert info.name == "none" and torch.equal(m(x), x)
        return
    nm = form.math
    ada = {} if nm.ada is None else {"ada": True, "C": nm.ada[0], "k": nm.ada[1]}
    ref = normalize(x, 12, m.weight, m.bias, m.eps, groups=nm.groups, center=nm.center,
                    detach_mean=nm.detach_mean, detach_std=nm.detach_std, impl="composite",
                    **ada)
    torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("module,kind", [
    (nn.LayerNorm(6), "layernorm"),
    (nn.RMSNorm(6, eps=1e-6), "rmsnorm"),
])
def test_torch_feature_norms_math_matches_their_forward(module: nn.Module, kind: str) -> None:
    m = module.double()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    form = norm_form(m)
    assert form is not None and form.kind == kind and form.math is not None
    ref = normalize(x, 6, m.weight, getattr(m, "bias", None), m.eps, center=form.math.center,
                    impl="composite")
    torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", ["layernorm", "layernorm:bias=false", "layernorm_simple",
                                  "detachnorm", "detachnorm:affine=true", "adanorm",
                                  "groupln:groups=2", "groupln:affine=false", "rmsnorm",
                                  "rmsnorm:bias=true", "none"])
def test_state_dicts_load_from_torch_layernorm(spec: str) -> None:
    """Every variant's state dict is an ``nn.LayerNorm``'s with the same affine setting."""
    m = make_norm(spec, 6)
    w, b = m.state_dict().get("weight"), m.state_dict().get("bias")
    ref = nn.LayerNorm(6, elementwise_affine=w is not None, bias=b is not None)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(-1.0, 1.0, generator=gen)
    assert set(m.state_dict()) == set(ref.state_dict())
    m.load_state_dict(ref.state_dict())  # strict
    for k, v in ref.state_dict().items():
        assert torch.equal(m.state_dict()[k], v)


def test_torch_subclassing_follows_the_function() -> None:
    """A variant is a torch class exactly when it computes that class's function."""
    torch_class = {"layernorm": nn.LayerNorm, "layernorm_simple": nn.LayerNorm,
                   "rmsnorm": nn.RMSNorm}
    for info in describe():
        m = make_norm(info.name, 8)
        want = torch_class.get(info.name)
        assert isinstance(m, nn.LayerNorm) == (want is nn.LayerNorm), info.name
        assert isinstance(m, nn.RMSNorm) == (want is nn.RMSNorm), info.name


# --------------------------------------------------------------------------- recognition rules

class T5LayerNorm(nn.Module):  # Hugging Face style: named LayerNorm, computes RMS
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.variance_epsilon = 1e-6

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True)
                                             + self.variance_epsilon)


class OlmoLikeLayerNorm(nn.Module):  # no parameters, only a normalized_shape
    def __init__(self, d: int) -> None:
        super().__init__()
        self.normalized_shape = (d,)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.layer_norm(x, self.normalized_shape, eps=1e-5)


class Normalizer(nn.Module):  # "Norm" in the name is not enough
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))
        self.eps = 1e-5


class ConvGroupNormLayer(nn.Module):  # a container named after the norm it holds
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 2, 1)
        self.norm = nn.GroupNorm(1, 2)


@pytest.mark.parametrize("module,kind,family,source,eps_attr", [
    (nn.LayerNorm(4), "layernorm", "layer", "torch", "eps"),
    (nn.RMSNorm(4), "rmsnorm", "layer", "torch", "eps"),
    (nn.GroupNorm(2, 4), "groupnorm", "group", "torch", "eps"),
    (nn.InstanceNorm2d(4), "instancenorm", "instance", "torch", "eps"),
    (nn.BatchNorm1d(4), "batchnorm", "batch", "torch", "eps"),
    (nn.SyncBatchNorm(4), "batchnorm", "batch", "torch", "eps"),
    (T5LayerNorm(4), "rmsnorm", "layer", "custom", "variance_epsilon"),
    (OlmoLikeLayerNorm(4), "layernorm", "layer", "custom", None),
    (make_norm("ln", 4), "layernorm", "layer", "lnlab", "eps"),
    (make_norm("lnsimple", 4), "layernorm_simple", "layer", "lnlab", "eps"),
    (make_norm("none", 4), "none", "identity", "lnlab", None),
])
def test_norm_form_rules(module, kind, family, source, eps_attr) -> None:
    f = norm_form(module)
    assert f is not None and is_norm(module)
    assert (f.kind, f.family, f.source, f.eps_attr) == (kind, family, source, eps_attr)
    assert f.trailing == (family in ("layer", "identity"))
    assert f.has_gain == isinstance(getattr(module, "weight", None), nn.Parameter)


@pytest.mark.parametrize("module", [nn.Linear(4, 4), nn.LocalResponseNorm(2), Normalizer(),
                                    ConvGroupNormLayer(), nn.Identity()])
def test_not_norms(module: nn.Module) -> None:
    assert norm_form(module) is None and not is_norm(module)


def test_hugging_face_norms_are_recognised() -> None:
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    for m, kind in ((llama.LlamaRMSNorm(8), "rmsnorm"), (t5.T5LayerNorm(8), "rmsnorm")):
        f = norm_form(m)
        assert f is not None and (f.kind, f.source, f.family) == (kind, "hf", "layer")
        assert f.cls == f"transformers.{type(m).__name__}" and f.eps_attr == "variance_epsilon"


def test_batchnorm_is_a_norm_for_the_optimizer_and_audit_but_not_a_site() -> None:
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert {n for n, (_, t) in param_tags(m).items() if "norm" in t} == {"1.weight", "1.bias"}
    assert find_norm_eps(m) == [("1", "eps", 1e-5)]
    assert find_norms(m) == []


# --------------------------------------------------------------------------- impl option

def test_every_fused_variant_takes_impl() -> None:
    for info in describe():
        opt = {o.name: o for o in info.options}.get("impl")
        if info.name == "none":
            assert opt is None
            continue
        assert opt is not None and opt.default == "auto" and opt.choices == IMPLS
        for impl in IMPLS:
            spec = f"{info.name}:impl={impl}"
            assert make_norm(spec, 6).impl == impl
            assert str(parse_spec(spec)) == (info.name if impl == "auto" else spec)


def test_bad_impl_is_rejected_everywhere() -> None:
    with pytest.raises(ValueError, match="must be one of auto, kernel, composite"):
        make_norm("adanorm:impl=fast", 6)
    for cls in (LayerNorm, RMSNorm, AdaNorm):
        with pytest.raises(ValueError, match="impl must be one of"):
            cls(6, impl="fast")
    with pytest.raises(ValueError, match="set impl in the spec"):
        make_norm("layernorm", 6, impl="composite")
    with pytest.raises(ValueError, match="must be one of auto, kernel, composite"):
        make_norm(NormSpec("rmsnorm", {"impl": "fast"}), 6)
    with pytest.raises(ValueError, match="unknown option 'groups' for norm 'adanorm'"):
        make_norm(NormSpec("adanorm", {"groups": 2}), 6)


@pytest.mark.parametrize("name", ["layernorm", "layernorm_simple", "detachnorm", "adanorm",
                                  "groupln", "rmsnorm"])
def test_composite_impl_matches_auto(name: str) -> None:
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    a = make_norm(f"{name}:impl=auto", 6, dtype=torch.float64)
    c = make_norm(f"{name}:impl=composite", 6, dtype=torch.float64)
    torch.testing.assert_close(a(x), c(x), rtol=1e-12, atol=1e-12)


def test_lnlab_norms_table_shows_impl_and_choices(capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["norms"]) == 0
    out = capsys.readouterr().out
    assert out.count("[auto|kernel|composite]") == 6  # every variant but none
    assert "[both|mean|std]" in out
