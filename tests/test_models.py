"""Reference models: spec strings, shapes, each block's formula (float64), init, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lnlab.errors import LnlabError
from lnlab.models import (
    available_models,
    build_model,
    escape_norm,
    parse_model_spec,
    unescape_norm,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def ln_ref(x: torch.Tensor, g=None, b=None, eps=1e-5, groups: int = 1) -> torch.Tensor:
    """Independent (numpy) LayerNorm / LN-G over the last dim, in float64."""
    a = x.detach().double().numpy()
    shp = a.shape
    a = a.reshape(*shp[:-1], groups, shp[-1] // groups)
    mu = a.mean(-1, keepdims=True)
    var = ((a - mu) ** 2).mean(-1, keepdims=True)
    y = ((a - mu) / np.sqrt(var + eps)).reshape(shp)
    if g is not None:
        y = y * g.detach().double().numpy()
    if b is not None:
        y = y + b.detach().double().numpy()
    return torch.from_numpy(y)


def randomize_norm_affine(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every norm gain/bias a random value so formula tests can see them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5 + 1.0)


# --------------------------------------------------------------------------- specs

def test_available_models():
    assert available_models() == ["mlp", "lnnet", "transformer", "cnn", "hf"]


def test_defaults_and_canonical_forms():
    ms = parse_model_spec("mlp")
    assert ms.options["depth"] == 4 and ms.options["residual"] == "none"
    assert str(ms) == "mlp"
    assert ms.full() == ("mlp:depth=4,width=256,norm=layernorm,residual=none,final_norm=false,"
                         "act=relu,mlp_ratio=1,bias=true")
    ms = parse_model_spec("transformer:layers=6,dim=128,heads=4,ln=post,mlp_ratio=4,dropout=0,"
                          "pool=cls,patch=4,norm=layernorm")
    assert str(ms) == "transformer:ln=post"
    assert parse_model_spec(ms.full()) == ms
    assert len({ms, parse_model_spec(ms.full()), parse_model_spec("transformer")}) == 2


@pytest.mark.parametrize("written", [
    "cnn:norm=groupln;groups=4", "cnn:norm=groupln:groups=4", "cnn:norm=[groupln:groups=4]",
    "CNN:norm=lng;groups=4",
])
def test_nested_norm_spec_escapes_are_equivalent(written):
    ms = parse_model_spec(written)
    assert ms.options["norm"] == "groupln:groups=4"
    assert str(ms) == "cnn:norm=groupln;groups=4"


def test_nested_norm_with_several_options_round_trips():
    for written in ("mlp:norm=adanorm;C=2;k=0.2,depth=2", "mlp:depth=2,norm=[adanorm:C=2,k=0.2]",
                    "mlp:norm=adanorm:C=2;k=0.2,depth=2"):
        ms = parse_model_spec(written)
        assert ms.options["depth"] == 2
        assert ms.options["norm"] == "adanorm:C=2.0,k=0.2"
        assert parse_model_spec(str(ms)) == ms
    assert unescape_norm(escape_norm("detachnorm:detach=mean,affine=true")) == \
        "detachnorm:detach=mean,affine=True"


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 64), width=st.integers(1, 4096),
       residual=st.sampled_from(["none", "pre", "post", "branch"]),
       final=st.booleans(), groups=st.sampled_from([1, 2, 4]),
       norm=st.sampled_from(["layernorm", "rmsnorm", "groupln", "adanorm", "none"]))
def test_spec_round_trip(depth, width, residual, final, groups, norm):
    nspec = f"groupln;groups={groups}" if norm == "groupln" else norm
    s = (f"mlp:depth={depth},width={width},residual={residual},"
         f"final_norm={str(final).lower()},norm={nspec}")
    ms = parse_model_spec(s)
    assert parse_model_spec(str(ms)) == ms
    assert parse_model_spec(ms.full()) == ms
    assert ms.options["depth"] == depth and ms.options["final_norm"] is final


@pytest.mark.parametrize("spec, match", [
    ("resnet", "valid models: mlp, lnnet, transformer, cnn"),
    ("mlp:widht=3", "valid options: depth, width, norm"),
    ("mlp:residual=middle", "must be one of none, pre, post, branch"),
    ("mlp:depth=0", r"out of range; it must be in \[1, 10000\]"),
    ("mlp:depth", "must look like name=value"),
    ("mlp:norm=batchnorm", "valid names: layernorm"),
    ("transformer:dropout=1.5", r"must be in \[0, 1\)"),
    ("", "non-empty"),
])
def test_bad_specs_raise_lnlab_error(spec, match):
    with pytest.raises(LnlabError, match=match):
        parse_model_spec(spec)


def test_build_errors_are_lnlab_errors():
    with pytest.raises(LnlabError, match="does not divide"):
        build_model("mlp:width=10,norm=groupln;groups=4", input_shape=(5,), num_classes=2)
    with pytest.raises(LnlabError, match="valid patch sizes: 1, 2, 4, 8"):
        build_model("transformer:patch=3", input_shape=(8, 8), num_classes=2)
    with pytest.raises(LnlabError, match="heads=3 must divide dim=32"):
        build_model("transformer:dim=32,heads=3", input_shape=(8,), num_classes=2)
    with pytest.raises(LnlabError, match="need the transformer"):
        build_model("mlp", input_shape=(8,), num_classes=2, vocab_size=10)


# --------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("spec, shape, vocab", [
    ("mlp:depth=2,width=16", (40,), None),
    ("mlp:depth=2,width=16,residual=pre,final_norm=true", (8, 8), None),
    ("lnnet:depth=3,width=3", (40,), None),
    ("transformer:layers=2,dim=16,heads=2", (40,), None),
    ("transformer:layers=2,dim=16,heads=2,pool=mean,patch=2", (8, 8), None),
    ("transformer:layers=1,dim=16,heads=2,patch=2", (3, 8, 8), None),
    ("transformer:layers=2,dim=16,heads=2,ln=post", (12,), 50),
    ("cnn:channels=8,layers=2", (40,), None),
    ("cnn:channels=8,layers=4,norm=groupln;groups=4", (8, 8), None),
    ("cnn:channels=8,layers=1,downsample=false", (3, 8, 8), None),
])
def test_output_shapes(spec, shape, vocab):
    torch.manual_seed(0)
    model = build_model(spec, input_shape=shape, num_classes=7, vocab_size=vocab)
    x = torch.randint(0, vocab, (5, *shape)) if vocab else torch.randn(5, *shape)
    y = model(x)
    assert y.shape == (5, 7)
    assert torch.isfinite(y).all()
    assert model.spec == parse_model_spec(spec)


@pytest.mark.parametrize("spec, shape", [
    ("transformer:layers=1,dim=8,heads=2,patch=2", (4, 4)),
    ("cnn:channels=4,layers=2", (3, 4, 4)),
    ("mlp:depth=1,width=4", (5,)),
])
def test_models_run_in_float64(spec, shape):
    m = build_model(spec, input_shape=shape, num_classes=2).double()
    y = m(torch.randn(2, *shape))  # float32 data is cast to the model's dtype
    assert y.dtype == torch.float64


def test_blocks_are_numbered_for_surgery():
    m = build_model("transformer:layers=3,dim=16,heads=2", input_shape=(8,), num_classes=2)
    names = {n for n, _ in m.named_modules()}
    assert {"blocks.0.norm1", "blocks.2.norm2", "final_norm", "head"} <= names
    m = build_model("mlp:depth=2,width=8,residual=post", input_shape=(4,), num_classes=2)
    params = {n for n, _ in m.named_parameters()}
    assert params == {"input_proj.weight", "input_proj.bias", "readout.weight", "readout.bias",
                      *(f"blocks.{i}.{p}.{w}" for i in range(2) for p in ("fc1", "fc2", "norm")
                        for w in ("weight", "bias"))}
    m = build_model("mlp:depth=2,width=8", input_shape=(4,), num_classes=2)
    assert {n for n, _ in m.named_parameters()} == {
        "readout.weight", "readout.bias",
        *(f"blocks.{i}.{p}.{w}" for i in range(2) for p in ("fc", "norm")
          for w in ("weight", "bias"))}


# --------------------------------------------------------------------------- formulas

@pytest.mark.parametrize("residual", ["none", "pre", "post", "branch"])
def test_mlp_block_matches_its_definition(residual):
    torch.manual_seed(1)
    m = build_model(f"mlp:depth=3,width=12,residual={residual},act=relu",
                    input_shape=(12,), num_classes=3).double()
    randomize_norm_affine(m)
    blk = m.blocks[1]
    h = torch.randn(6, 12, dtype=torch.float64) * 3 + 1
    g, b = blk.norm.weight, blk.norm.bias

    def lin(layer, v):
        return v @ layer.weight.detach().T + layer.bias.detach()

    if residual == "none":
        want = torch.relu(ln_ref(lin(blk.fc, h), g, b))
    else:
        def F(v):
            return lin(blk.fc2, torch.relu(lin(blk.fc1, v)))
        want = {"pre": lambda: h + F(ln_ref(h, g, b)),
                "post": lambda: ln_ref(h + F(h), g, b),
                "branch": lambda: h + ln_ref(F(h), g, b)}[residual]()
    torch.testing.assert_close(blk(h).detach(), want, rtol=1e-10, atol=1e-10)


def test_mlp_final_norm_and_whole_forward():
    torch.manual_seed(2)
    m = build_model("mlp:depth=2,width=8,residual=pre,final_norm=true,act=tanh",
                    input_shape=(2, 3), num_classes=4).double()
    randomize_norm_affine(m)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    h = m.input_proj(x.flatten(1))
    for blk in m.blocks:
        h = h + blk.fc2(torch.tanh(blk.fc1(ln_ref(h, blk.norm.weight, blk.norm.bias))))
    want = m.readout(ln_ref(h, m.final_norm.weight, m.final_norm.bias))
    torch.testing.assert_close(m(x), want, rtol=1e-10, atol=1e-10)
    assert build_model("mlp", input_shape=(4,), num_classes=2).final_norm is None


def test_lnnet_is_linear_and_norm_only():
    torch.manual_seed(3)
    m = build_model("lnnet:depth=4,width=3", input_shape=(5,), num_classes=2).double()
    randomize_norm_affine(m)
    x = torch.randn(7, 5, dtype=torch.float64)
    h = x
    for blk in m.blocks:
        h = ln_ref(blk.fc(h), blk.norm.weight, blk.norm.bias)
    torch.testing.assert_close(m(x), m.readout(h), rtol=1e-10, atol=1e-10)
    assert not any(isinstance(mod, (torch.nn.ReLU, torch.nn.GELU)) for mod in m.modules())


def attention_ref(attn, x):
    """Multi-head self-attention by the textbook formula, one head at a time."""
    d = x.shape[-1]
    w, bias = attn.qkv.weight.detach(), attn.qkv.bias.detach()
    q, k, v = (x @ w.T + bias).split(d, dim=-1)
    dh = d // attn.heads
    outs = []
    for h in range(attn.heads):
        sl = slice(h * dh, (h + 1) * dh)
        scores = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(dh)
        outs.append(torch.softmax(scores, dim=-1) @ v[..., sl])
    return torch.cat(outs, -1) @ attn.proj.weight.detach().T + attn.proj.bias.detach()


@pytest.mark.parametrize("ln", ["pre", "post"])
def test_transformer_block_matches_its_definition(ln):
    torch.manual_seed(4)
    m = build_model(f"transformer:layers=2,dim=16,heads=4,ln={ln},mlp_ratio=2",
                    input_shape=(12,), num_classes=3).double()
    randomize_norm_affine(m)
    blk = m.blocks[1]
    x = torch.randn(3, 5, 16, dtype=torch.float64)

    def n1(v):
        return ln_ref(v, blk.norm1.weight, blk.norm1.bias)

    def n2(v):
        return ln_ref(v, blk.norm2.weight, blk.norm2.bias)

    def ffn(v):
        return blk.mlp.fc2(torch.nn.functional.gelu(blk.mlp.fc1(v)))

    if ln == "pre":
        x1 = x + attention_ref(blk.attn, n1(x))
        want = x1 + ffn(n2(x1))
    else:
        x1 = n1(x + attention_ref(blk.attn, x))
        want = n2(x1 + ffn(x1))
    torch.testing.assert_close(blk(x), want.detach(), rtol=1e-9, atol=1e-9)


def test_transformer_final_norm_rules():
    def build(s):
        return build_model(f"transformer:layers=1,dim=8,heads=2,{s}", input_shape=(8,),
                           num_classes=2)
    assert build("ln=pre").final_norm is not None
    assert build("ln=post").final_norm is None
    assert build("ln=post,final_norm=true").final_norm is not None
    assert build("ln=pre,final_norm=false").final_norm is None


def test_transformer_patch_embedding_is_vit_style():
    torch.manual_seed(5)
    m = build_model("transformer:layers=1,dim=8,heads=2,patch=2", input_shape=(4, 4),
                    num_classes=2)
    x = torch.randn(1, 4, 4)
    tokens = m.embed(x)[0, 1:] - m.pos_embed[0, 1:]
    # token 1 (row 0, column 1) is the patch x[0:2, 2:4] flattened
    patch = x[0, 0:2, 2:4].reshape(-1)
    torch.testing.assert_close(tokens[1], m.patch_embed(patch), rtol=1e-6, atol=1e-6)
    assert m.pos_embed.shape == (1, 5, 8)


def test_cnn_norm_acts_over_channels_at_each_position():
    torch.manual_seed(6)
    m = build_model("cnn:channels=8,layers=1,norm=groupln;groups=2,downsample=false",
                    input_shape=(3, 5, 5), num_classes=2).double()
    randomize_norm_affine(m)
    blk = m.blocks[0]
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    c = blk.conv(x).permute(0, 2, 3, 1)  # channels last
    want = torch.relu(ln_ref(c, blk.norm.weight, blk.norm.bias, groups=2)).permute(0, 3, 1, 2)
    torch.testing.assert_close(blk(x), want.detach(), rtol=1e-10, atol=1e-10)
    m1 = build_model("cnn:channels=4,layers=2", input_shape=(16,), num_classes=2)
    assert isinstance(m1.blocks[0].conv, torch.nn.Conv1d)


# --------------------------------------------------------------------------- init, training

@pytest.mark.parametrize("spec", ["mlp:depth=2,width=16", "transformer:layers=1,dim=16,heads=2",
                                  "cnn:channels=4,layers=2", "lnnet"])
def test_init_is_deterministic_from_the_torch_seed(spec):
    def params(seed):
        torch.manual_seed(seed)
        return build_model(spec, input_shape=(8,), num_classes=3).state_dict()
    a, b, c = params(0), params(0), params(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("spec, shape, vocab", [
    ("mlp:depth=2,width=32,residual=none", (16,), None),
    ("mlp:depth=2,width=32,residual=pre,norm=rmsnorm", (16,), None),
    ("mlp:depth=2,width=32,residual=post,norm=adanorm", (16,), None),
    ("mlp:depth=2,width=32,residual=branch,norm=groupln;groups=4", (16,), None),
    ("lnnet:depth=4,width=8", (16,), None),
    ("transformer:layers=2,dim=16,heads=2,ln=post,dropout=0.1", (16,), None),
    ("transformer:layers=2,dim=16,heads=2,pool=mean", (8,), 20),
    ("cnn:channels=8,layers=2,norm=groupln;groups=2", (4, 4), None),
])
def test_trains_on_a_toy_batch(spec, shape, vocab):
    torch.manual_seed(0)
    model = build_model(spec, input_shape=shape, num_classes=3, vocab_size=vocab)
    x = torch.randint(0, vocab, (24, *shape)) if vocab else torch.randn(24, *shape)
    y = torch.randint(0, 3, (24,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
