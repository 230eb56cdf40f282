"""Registry and module conventions: specs, aliases, typed options, errors, torch drop-in.

The registry is how experiments name a variant in a config, so a spec must build exactly the
module it names, options must arrive with their types, and mistakes must fail loudly with the
valid alternatives listed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lnlab.norms import (
    AdaNorm,
    DetachNorm,
    GroupLayerNorm,
    LayerNorm,
    LayerNormSimple,
    NoNorm,
    NormSpec,
    RMSNorm,
    available,
    describe,
    make_norm,
    parse_spec,
)
from lnlab.norms.registry import _ALIASES

EXPECTED = {
    "layernorm": LayerNorm,
    "layernorm_simple": LayerNormSimple,
    "detachnorm": DetachNorm,
    "adanorm": AdaNorm,
    "groupln": GroupLayerNorm,
    "rmsnorm": RMSNorm,
    "none": NoNorm,
}


def test_available_lists_every_variant_of_the_issue() -> None:
    assert sorted(available()) == sorted(EXPECTED)
    assert [i.name for i in describe()] == available()
    assert {i.cls for i in describe()} == set(EXPECTED.values())


@pytest.mark.parametrize("name", sorted(EXPECTED) + sorted(_ALIASES))
def test_every_name_and_alias_builds_the_right_class(name: str) -> None:
    canon = _ALIASES.get(name, name)
    m = make_norm(name, 12)
    assert type(m) is EXPECTED[canon]
    assert parse_spec(name).name == canon
    # case and dashes are forgiven
    assert type(make_norm(name.upper().replace("_", "-"), 12)) is EXPECTED[canon]
    x = torch.randn(3, 12, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("spec,name,options", [
    ("adanorm:C=2,k=0.25", "adanorm", {"C": 2.0, "k": 0.25, "eps": 1e-5, "impl": "auto"}),
    ("adanorm: k = 0.5 ", "adanorm", {"C": 1.0, "k": 0.5, "eps": 1e-5, "impl": "auto"}),
    ("groupln:groups=8", "groupln", {"groups": 8, "eps": 1e-5, "affine": True, "bias": True,
                                     "impl": "auto"}),
    ("detachnorm", "detachnorm", {"detach": "both", "eps": 1e-5, "affine": False, "impl": "auto"}),
    ("detachnorm:detach=std,affine=yes", "detachnorm",
     {"detach": "std", "eps": 1e-5, "affine": True, "impl": "auto"}),
    ("layernorm:affine=0,eps=1e-6", "layernorm", {"eps": 1e-6, "affine": False, "bias": True,
                                                  "impl": "auto"}),
    ("rmsnorm", "rmsnorm", {"eps": 1e-6, "affine": True, "bias": False, "impl": "auto"}),
    ("adanorm:impl=composite", "adanorm", {"C": 1.0, "k": 0.1, "eps": 1e-5, "impl": "composite"}),
    ("none", "none", {}),
])
def test_options_parse_with_types(spec: str, name: str, options: dict) -> None:
    ns = parse_spec(spec)
    assert ns.name == name and ns.options == options
    for key, val in options.items():
        assert type(ns.options[key]) is type(val), key
    # str() is canonical and parses back to the same spec
    assert parse_spec(str(ns)) == ns
    assert parse_spec(ns) is ns


@pytest.mark.parametrize("spec,attrs", [
    ("adanorm:C=2,k=0.25", {"C": 2.0, "k": 0.25, "eps": 1e-5}),
    ("groupln:groups=4,affine=false", {"groups": 4, "elementwise_affine": False}),
    ("detachnorm:detach=mean,affine=true", {"detach": "mean", "elementwise_affine": True}),
    ("layernorm:bias=false,eps=0.001", {"eps": 1e-3, "bias": None}),
    ("rmsnorm:bias=true", {"eps": 1e-6}),
])
def test_options_reach_the_module(spec: str, attrs: dict) -> None:
    m = make_norm(spec, 12)
    for key, val in attrs.items():
        assert getattr(m, key) == val, key
    if spec == "rmsnorm:bias=true":
        assert isinstance(m.bias, nn.Parameter)


@pytest.mark.parametrize("spec,match", [
    ("layernrom", r"unknown norm 'layernrom'; valid names: layernorm, layernorm_simple, "
                  r"detachnorm, adanorm, groupln, rmsnorm, none"),
    ("adanorm:c=2", r"unknown option 'c' for norm 'adanorm'; valid options: C, k, eps"),
    ("none:eps=1", r"valid options: none"),
    ("groupln:groups=2.5", r"bad value for groupln option 'groups'"),
    ("adanorm:C=big", r"bad value for adanorm option 'C'"),
    ("layernorm:affine=maybe", r"expected a boolean"),
    ("detachnorm:detach=var", r"must be one of both, mean, std"),
    ("adanorm:C", r"must look like name=value"),
    ("", r"non-empty string"),
    ("   ", r"non-empty string"),
])
def test_bad_specs_raise_value_error_listing_valid_choices(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_norm(spec, 12)


@pytest.mark.parametrize("spec", ["groupln:groups=5", "groupln:groups=0", "groupln:groups=-2"])
def test_groups_must_divide_the_dimension(spec: str) -> None:
    with pytest.raises(ValueError, match="groups"):
        make_norm(spec, 12)


def test_parameter_free_variants_reject_affine() -> None:
    with pytest.raises(ValueError, match="no gain or bias"):
        LayerNormSimple(8, elementwise_affine=True)
    with pytest.raises(ValueError, match="no learned parameters"):
        AdaNorm(8, elementwise_affine=True)
    with pytest.raises(ValueError, match="detach must be one of"):
        DetachNorm(8, detach="var")
    for spec in ("layernorm_simple", "adanorm", "detachnorm", "none"):
        assert list(make_norm(spec, 8).parameters()) == []


@pytest.mark.parametrize("spec,expect", [
    ("layernorm", ["(12,)", "eps=1e-05", "elementwise_affine=True", "bias=True"]),
    ("layernorm_simple", ["(12,)", "elementwise_affine=False"]),
    ("detachnorm:detach=std", ["detach='std'"]),
    ("adanorm:C=2,k=0.2", ["C=2.0", "k=0.2", "eps=1e-05"]),
    ("groupln:groups=3", ["groups=3"]),
    ("rmsnorm", ["eps=1e-06", "bias=False"]),
    ("none", ["(12,)"]),
])
def test_extra_repr(spec: str, expect: list[str]) -> None:
    text = repr(make_norm(spec, 12))
    for piece in expect:
        assert piece in text, (piece, text)


@pytest.mark.parametrize("spec", ["layernorm", "detachnorm:affine=true", "groupln:groups=3",
                                  "rmsnorm:bias=true", "layernorm:bias=false"])
def test_reset_parameters_and_state_dict_round_trip(spec: str) -> None:
    gen = torch.Generator().manual_seed(0)
    a = make_norm(spec, 12, dtype=torch.float64)
    with torch.no_grad():
        for p in a.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    b = make_norm(spec, 12, dtype=torch.float64)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 12, generator=gen, dtype=torch.float64)
    assert torch.equal(a(x), b(x))
    a.reset_parameters()
    assert torch.equal(a.weight, torch.ones(12, dtype=torch.float64))
    if a.bias is not None:
        assert torch.equal(a.bias, torch.zeros(12, dtype=torch.float64))
    fresh = make_norm(spec, 12, dtype=torch.float64)
    assert torch.equal(a(x), fresh(x))


@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, True)])
def test_layernorm_is_a_drop_in_for_torch(affine: bool, bias: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    ours = LayerNorm((4, 6), eps=1e-6, elementwise_affine=affine, bias=bias)
    ref = nn.LayerNorm((4, 6), eps=1e-6, elementwise_affine=affine, bias=bias)
    assert list(ours.state_dict()) == list(ref.state_dict())
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    ours.load_state_dict(ref.state_dict())  # strict: same keys and shapes
    x = torch.randn(2, 3, 4, 6, generator=gen)
    assert torch.equal(ours(x), ref(x))
    spec = "layernorm" + ("" if affine else ":affine=false") + ("" if bias else ":bias=false")
    built = make_norm(spec, 24)
    tref = nn.LayerNorm(24, elementwise_affine=affine, bias=bias)
    assert {k: v.shape for k, v in built.state_dict().items()} == {
        k: v.shape for k, v in tref.state_dict().items()}


def test_rmsnorm_matches_torch_rmsnorm() -> None:
    gen = torch.Generator().manual_seed(2)
    ours = RMSNorm((4, 6), eps=1e-6, dtype=torch.float64)
    ref = nn.RMSNorm((4, 6), eps=1e-6, dtype=torch.float64)
    assert list(ours.state_dict()) == list(ref.state_dict())
    with torch.no_grad():
        ref.weight.copy_(torch.randn(4, 6, generator=gen, dtype=torch.float64))
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-12, atol=1e-12)


def test_modules_take_device_and_dtype() -> None:
    for name in available():
        m = make_norm(name, 8, device="cpu", dtype=torch.float64)
        for p in m.parameters():
            assert p.dtype == torch.float64 and p.device.type == "cpu"
        x = torch.randn(2, 8, dtype=torch.float64)
        assert m(x).dtype == torch.float64


def test_normspec_str_omits_defaults() -> None:
    assert str(parse_spec("adanorm")) == "adanorm"
    assert str(parse_spec("adanorm:C=1")) == "adanorm"
    assert str(parse_spec("ada:C=2")) == "adanorm:C=2.0"
    assert isinstance(parse_spec("groupln:groups=2"), NormSpec)
