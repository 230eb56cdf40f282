"""Surgery on Hugging Face models built from tiny configs (no download)."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lnlab.models.hf import build_hf, hf_example_input, tiny_config  # noqa: E402
from lnlab.surgery import (  # noqa: E402
    find_norms,
    norm_placement,
    select_sites,
    strip_affine,
    swap_norms,
)

pytestmark = pytest.mark.usefixtures("one_thread")


LAYERS = 6
# arch: (placement, embedding norms, final norms, norm class, block stack, block norm suffixes)
EXPECTED = {
    "bert": ("post", 1, 0, "torch.nn.LayerNorm", "bert.encoder.layer",
             ("attention.output.LayerNorm", "output.LayerNorm")),
    "distilbert": ("post", 1, 0, "torch.nn.LayerNorm", "distilbert.transformer.layer",
                   ("sa_layer_norm", "output_layer_norm")),
    "roberta": ("post", 1, 0, "torch.nn.LayerNorm", "roberta.encoder.layer",
                ("attention.output.LayerNorm", "output.LayerNorm")),
    "electra": ("post", 1, 0, "torch.nn.LayerNorm", "electra.encoder.layer",
                ("attention.output.LayerNorm", "output.LayerNorm")),
    "deberta-v2": ("post", 1, 0, "torch.nn.LayerNorm", "deberta.encoder.layer",
                   ("attention.output.LayerNorm", "output.LayerNorm")),
    "gpt2": ("pre", 0, 1, "torch.nn.LayerNorm", "transformer.h", ("ln_1", "ln_2")),
    "gpt_neo": ("pre", 0, 1, "torch.nn.LayerNorm", "transformer.h", ("ln_1", "ln_2")),
    "roberta-prelayernorm": ("pre", 1, 1, "torch.nn.LayerNorm",
                             "roberta_prelayernorm.encoder.layer",
                             ("attention.LayerNorm", "intermediate.LayerNorm")),
    "vit": ("pre", 0, 1, "torch.nn.LayerNorm", "vit.layers",
            ("layernorm_before", "layernorm_after")),
    "qwen2": ("pre", 0, 1, "transformers.Qwen2RMSNorm", "model.layers",
              ("input_layernorm", "post_attention_layernorm")),
}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {a: build_hf(a, layers=LAYERS, classify=True, num_labels=3) for a in EXPECTED}


def _randomize(model):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for s in find_norms(model):
            for p in ("weight", "bias"):
                t = s.module._parameters.get(p)
                if t is not None:
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.5 + 1.0)


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_find_norms_counts_blocks_and_groups(models, arch):
    _, n_emb, n_final, cls, stack, suffixes = EXPECTED[arch]
    model = models[arch]
    sites = find_norms(model)
    assert len(sites) == 2 * LAYERS + n_emb + n_final
    groups = Counter(s.group for s in sites)
    assert groups == {k: v for k, v in {"embedding": n_emb, "early": 4, "middle": 4,
                                        "later": 4, "final": n_final}.items() if v}
    blocks = [s for s in sites if s.block is not None]
    assert [s.name for s in blocks] == [f"{stack}.{i}.{suf}" for i in range(LAYERS)
                                        for suf in suffixes]
    assert all(s.stack == stack and s.n_blocks == LAYERS for s in blocks)
    assert [s.group for s in blocks] == [g for g in ("early", "middle", "later")
                                         for _ in range(4)]
    assert all(s.cls == cls for s in sites)
    if n_final:
        assert sites[-1].group == "final" and sites[-1].block is None
    if n_emb:
        assert sites[0].group == "embedding" and "embeddings" in sites[0].name
    # registration order agrees with a real forward pass, and every norm runs
    traced = find_norms(model, hf_example_input(model))
    assert [s.name for s in traced] == [s.name for s in sites]
    assert all(s.called for s in traced)


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_pre_post_detection(models, arch):
    model = models[arch]
    want = EXPECTED[arch][0]
    assert norm_placement(model).kind == want
    traced = norm_placement(model, hf_example_input(model))
    assert traced.kind == want and traced.evidence.startswith("traced")


def test_qwen2_is_rmsnorm_without_bias(models):
    sites = find_norms(models["qwen2"])
    assert all(s.kind == "rmsnorm" and s.has_gain and not s.has_bias and s.eps == 1e-6
               for s in sites)


@pytest.mark.parametrize("arch", ["bert", "gpt2", "qwen2", "vit", "distilbert"])
def test_strip_affine_early_equals_manual_unit_affine(models, arch):
    model = copy.deepcopy(models[arch]).eval()
    _randomize(model)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for s in select_sites(find_norms(ref), "early"):
            s.module.weight.fill_(1.0)
            if s.has_bias:
                s.module.bias.zero_()
    untouched = {s.name: {p: t.detach().clone() for p, t in s.module._parameters.items()
                          if t is not None}
                 for s in find_norms(model) if s.group != "early"}
    report = strip_affine(model, "early")
    assert len(report) == 4
    ex = hf_example_input(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**ex).logits, ref(**ex).logits, rtol=0, atol=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for s in find_norms(model):
        if s.group == "early":
            assert not s.has_gain and not s.has_bias
            assert not any(n.startswith(s.name + ".") for n in trainable)
        else:
            for p, t in untouched[s.name].items():
                assert torch.equal(s.module._parameters[p], t)


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_swap_adanorm_trains_a_step(models, arch):
    model = copy.deepcopy(models[arch]).train()
    report = swap_norms(model, "adanorm")
    assert len(report) == len(find_norms(models[arch]))
    sites = find_norms(model)
    assert all(s.kind == "adanorm" for s in sites)
    assert sites[0].eps == find_norms(models[arch])[0].eps  # eps carried over
    ex = hf_example_input(model, batch=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(**ex, labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    opt.step()
    assert torch.isfinite(out.loss)


def test_tiny_config_layers_and_unknown_arch():
    assert tiny_config("gpt-neo", layers=3).num_layers == 3
    from lnlab.errors import LnlabError

    with pytest.raises(LnlabError, match="tiny configs exist for bert"):
        tiny_config("not-a-model")


def test_encoder_decoder_has_two_stacks_and_t5_norm_is_rms():
    cfg = transformers.T5Config(d_model=16, d_kv=4, d_ff=32, num_layers=3, num_decoder_layers=3,
                                num_heads=4, vocab_size=50, decoder_start_token_id=0)
    sites = find_norms(transformers.T5Model(cfg))
    assert {s.stack for s in sites if s.stack} == {"encoder.block", "decoder.block"}
    assert [s.name for s in sites if s.group == "final"] == ["encoder.final_layer_norm",
                                                             "decoder.final_layer_norm"]
    assert Counter(s.group for s in sites if s.stack == "decoder.block") == {
        "early": 3, "middle": 3, "later": 3}
    assert all(s.kind == "rmsnorm" and s.cls == "transformers.T5LayerNorm" for s in sites)


def test_gemma_style_gain_is_stripped_to_an_exact_identity():
    # Gemma's RMSNorm multiplies by (1 + weight): the neutral stored value is 0, not 1.
    cfg = transformers.AutoConfig.for_model(
        "gemma", hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, vocab_size=64, head_dim=8)
    model = transformers.AutoModel.from_config(cfg).eval()
    _randomize(model)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for s in find_norms(ref):
            s.module.weight.zero_()
    report = strip_affine(model)
    assert "gain=0" in report.changes[0].note
    ids = torch.randint(0, 64, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).last_hidden_state,
                                   ref(input_ids=ids).last_hidden_state, rtol=0, atol=0)
