"""fold_affine: a norm's gain and bias moved into the linear maps that read its output."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lnlab.errors import LnlabError
from lnlab.models import build_model, parse_model_spec
from lnlab.surgery import find_norms
from lnlab.surgery_fold import fold_affine

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize_norms(model: nn.Module, seed: int) -> None:
    """Pretrained-looking LN parameters, far from (1, 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in find_norms(model):
            w, b = s.module.weight, s.module.bias
            w.copy_(torch.empty(w.shape, dtype=torch.float64).uniform_(0.3, 1.7, generator=g))
            b.copy_(0.3 * torch.randn(b.shape, dtype=torch.float64, generator=g))


def lnlab_transformer(ln: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    spec = parse_model_spec(f"transformer:layers=3,dim=16,heads=2,ln={ln},mlp_ratio=2")
    m = build_model(spec, input_shape=(6,), num_classes=3, vocab_size=20).double().eval()
    _randomize_norms(m, seed)
    return m


def tokens(seed: int = 0, n: int = 4, length: int = 6) -> torch.Tensor:
    return torch.randint(1, 20, (n, length), generator=torch.Generator().manual_seed(seed))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), where=st.sampled_from(["blocks", "early", "later"]))
def test_pre_ln_fold_is_exact_in_float64(seed: int, where: str) -> None:
    model = lnlab_transformer("pre", seed)
    x = tokens(seed)
    before = model(x)
    n_params = sum(p.numel() for p in model.parameters())
    report = fold_affine(model, where, example_input=x)
    after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-12, atol=1e-12)
    assert report.output_change < 1e-13  # type: ignore[attr-defined]
    folded = {c.site for c in report}
    assert folded and all(s.group in (where,) or where == "blocks" for s in find_norms(model)
                          if s.name in folded)
    for s in find_norms(model):  # folded sites: (1, 0), frozen, out of the parameters
        assert (s.has_gain, s.has_bias) == ((False, False) if s.name in folded else (True, True))
    assert sum(p.numel() for p in model.parameters()) == n_params - 2 * 16 * len(folded)


def test_fold_matches_the_formula_on_one_block() -> None:
    """Independent reference: W(g⊙n + b) + c written out by hand."""
    model = lnlab_transformer("pre", 3)
    blk = model.blocks[0]
    g, b = blk.norm1.weight.detach().clone(), blk.norm1.bias.detach().clone()
    w, c = blk.attn.qkv.weight.detach().clone(), blk.attn.qkv.bias.detach().clone()
    fold_affine(model, lambda s: s.name == "blocks.0.norm1", example_input=tokens())
    torch.testing.assert_close(blk.attn.qkv.weight, w * g[None, :], rtol=0, atol=1e-15)
    torch.testing.assert_close(blk.attn.qkv.bias, c + w @ b, rtol=0, atol=1e-14)


def test_final_norm_before_pooling_is_refused() -> None:
    """lnlab's final norm is pooled (CLS token) before the head: not a direct linear reader."""
    model = lnlab_transformer("pre")
    with pytest.raises(LnlabError, match="final_norm"):
        fold_affine(model, "all", example_input=tokens())
    rep = fold_affine(model, "all", example_input=tokens(), skip_unfoldable=True)
    assert [s for s, _ in rep.skipped] == ["final_norm"]


def test_post_ln_is_refused() -> None:
    model = lnlab_transformer("post")
    with pytest.raises(LnlabError, match="residual stream"):
        fold_affine(model, "blocks", example_input=tokens())


hf = pytest.importorskip("transformers")


def hf_classifier(arch: str, seed: int = 0) -> nn.Module:
    from lnlab.models.hf import tiny_config

    cfg = tiny_config(arch, layers=3, hidden=16, heads=2, vocab=30)
    cfg.num_labels = 3
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "hidden_dropout_prob",
                 "attention_probs_dropout_prob", "attention_dropout", "embed_dropout",
                 "resid_dropout"):
        if hasattr(cfg, name):
            setattr(cfg, name, 0.0)
    cfg.pad_token_id = 0
    torch.manual_seed(seed)
    m = hf.AutoModelForSequenceClassification.from_config(cfg).double().eval()
    _randomize_norms(m, seed)
    return m


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_hf_pre_ln_fold_all_is_exact(arch: str) -> None:
    """GPT-2 (Conv1D readers; the final LN feeds the bias-free score head) and GPT-Neo
    (bias-free q/k/v): every LN folds, outputs unchanged in float64."""
    model = hf_classifier(arch)
    x = {"input_ids": tokens(1, length=7) % 30 + 1}
    before = model(**x).logits
    report = fold_affine(model, "all", example_input=x)
    assert len(report) == 2 * 3 + 1
    torch.testing.assert_close(model(**x).logits, before, rtol=1e-12, atol=1e-12)
    assert any("bias added" in c.note for c in report)  # a bias-free reader got a bias


def test_hf_post_ln_bert_is_refused() -> None:
    model = hf_classifier("bert")
    x = {"input_ids": tokens(2, length=7) % 30 + 1}
    before = model(**x).logits
    with pytest.raises(LnlabError, match="residual stream"):
        fold_affine(model, "blocks", example_input=x)
    torch.testing.assert_close(model(**x).logits, before, rtol=0, atol=0)  # untouched


class _SharedLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lin(torch.tanh(self.lin(self.norm(x)))))


class _TwiceNorm(_SharedLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lin(self.norm(torch.tanh(self.lin(self.norm(x))))))


@pytest.mark.parametrize(("cls", "match"), [(_SharedLinear, "shared weights"),
                                            (_TwiceNorm, "more than once")])
def test_shared_modules_are_refused(cls: type, match: str) -> None:
    torch.manual_seed(0)
    model = cls().double()
    _randomize_norms(model, 0)
    x = torch.randn(3, 4, dtype=torch.float64)
    before = model(x)
    with pytest.raises(LnlabError, match=match):
        fold_affine(model, "all", example_input=x)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
