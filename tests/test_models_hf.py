"""``build_model`` resolves ``hf:ARCH`` and ``hf:PATH``; every command builds HF models there."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lnlab.cli import main  # noqa: E402
from lnlab.errors import LnlabError  # noqa: E402
from lnlab.models import HF_DEFAULTS, build_model, parse_model_spec  # noqa: E402
from lnlab.models.hf_classifier import (  # noqa: E402
    HFClassifier,
    build_hf_classifier,
    save_hf_classifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hf_arch_is_the_same_model_the_memorization_protocol_built():
    """Same construction and RNG use as before the refactor, so stored results still hold."""
    torch.manual_seed(0)
    a = build_model("hf:bert:layers=2,dim=16", input_shape=(8,), num_classes=3, vocab_size=20)
    torch.manual_seed(0)
    b = build_hf_classifier("bert", num_classes=3, vocab_size=20, length=8, layers=2, dim=16)
    assert isinstance(a, HFClassifier) and str(a.spec) == "hf:bert:layers=2,dim=16"
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randint(1, 20, (2, 8))
    assert a.eval()(x).shape == (2, 3)


def test_defaults_and_positions():
    m = build_model("hf:gpt2", input_shape=(100,), num_classes=2, vocab_size=50)
    cfg = m.hf.config
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head) == (HF_DEFAULTS["layers"], HF_DEFAULTS["dim"],
                                                     HF_DEFAULTS["heads"])
    assert cfg.n_positions >= 100 and cfg.vocab_size == 50 and cfg.resid_pdrop == 0.0
    assert m.eval()(torch.randint(1, 50, (1, 100))).shape == (1, 2)


def test_vision_arch_takes_images():
    m = build_model("hf:vit:layers=1,dim=16", input_shape=(3, 16, 16), num_classes=4).eval()
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 4)


def test_text_arch_refuses_real_valued_inputs():
    m = build_model("hf:bert:layers=1,dim=16", input_shape=(8,), num_classes=2)
    with pytest.raises(LnlabError, match="takes token ids"):
        m(torch.randn(2, 8))


def test_hf_path_loads_weights_or_builds_from_a_config(tmp_path):
    torch.manual_seed(0)
    src = build_model("hf:bert:layers=1,dim=16", input_shape=(8,), num_classes=2,
                      vocab_size=30).eval()
    save_hf_classifier(src, tmp_path / "ckpt")
    m = build_model(f"hf:{tmp_path / 'ckpt'}", input_shape=(8,), num_classes=2,
                    vocab_size=30).eval()
    assert m.spec.path and m.spec.source == str(tmp_path / "ckpt")
    x = torch.randint(1, 30, (2, 8))
    assert torch.equal(m(x), src(x))
    with pytest.raises(LnlabError, match="vocabulary of 30"):
        build_model(f"hf:{tmp_path / 'ckpt'}", input_shape=(8,), num_classes=2, vocab_size=99)
    cfg_only = tmp_path / "cfg"
    transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=40).save_pretrained(
        cfg_only)
    g = build_model(f"hf:{cfg_only}", input_shape=(8,), num_classes=3, vocab_size=40)
    assert type(g.hf).__name__ == "GPT2ForSequenceClassification" and g.hf.config.n_layer == 2
    with pytest.raises(LnlabError, match=r"no config\.json"):
        build_model(f"hf:{tmp_path}", input_shape=(8,), num_classes=2)


@pytest.mark.parametrize("spec", ["hf:bert:layers=1,dim=16", "CKPT"])
def test_train_accepts_hf_specs(capsys, tmp_path, spec):
    if spec == "CKPT":
        torch.manual_seed(0)
        save_hf_classifier(build_model("hf:gpt2:layers=1,dim=16", input_shape=(8,),
                                       num_classes=4, vocab_size=64), tmp_path / "ckpt")
        spec = f"hf:{tmp_path / 'ckpt'}"
    code = main(["train", "--model", spec, "--data", "tokens:n=120,length=8", "--epochs", "1",
                 "--batch-size", "60", "--threads", "1", "--json"])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["status"] == "finished"


def test_audit_and_inspect_accept_hf_path_with_weights(capsys, tmp_path):
    torch.manual_seed(0)
    save_hf_classifier(build_model("hf:gpt2:layers=2,dim=16", input_shape=(8,),
                                   num_classes=2, vocab_size=40), tmp_path)
    assert main(["inspect", f"hf:{tmp_path}", "--json"]) == 0
    sites = json.loads(capsys.readouterr().out)["sites"]
    assert [s["name"] for s in sites] == ["h.0.ln_1", "h.0.ln_2", "h.1.ln_1", "h.1.ln_2",
                                          "ln_f"]
    assert main(["audit", f"hf:{tmp_path}", "--json", "--rtol", "1e-6"]) == 0
    assert json.loads(capsys.readouterr().out)["joint"][0]["invariant"]


def test_layers_flag_is_the_spec_option():
    from lnlab.commands.inspect import with_hf_layers

    assert with_hf_layers("hf:bert", 5) == "hf:bert:layers=5"
    assert parse_model_spec(with_hf_layers("hf:bert:dim=16,layers=2", 4)).options["layers"] == 4
    assert with_hf_layers("mlp:depth=2", 5) == "mlp:depth=2"
    with pytest.raises(LnlabError, match="--layers"):
        with_hf_layers("hf:bert", 0)
