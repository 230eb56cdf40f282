"""Hugging Face round trips after surgery: save -> load gives the same model, bit for bit.

Tiny BERT (Post-LN), GPT-2 (Pre-LN, tied LM head) and Llama (RMSNorm with its own forward)
are built from configs here (no download).
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")

from lnlab.errors import LnlabError  # noqa: E402
from lnlab.models import build_model  # noqa: E402
from lnlab.models.hf import tiny_config  # noqa: E402
from lnlab.models.hf_classifier import HFClassifier  # noqa: E402
from lnlab.surgery import (  # noqa: E402
    SurgeryNotSavedWarning,
    export_plain_hf,
    find_norms,
    from_pretrained,
    save_pretrained,
    strip_affine,
    swap_norms,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = {
    "bert": ("bert", transformers.AutoModelForSequenceClassification),
    "gpt2": ("gpt2", transformers.AutoModelForCausalLM),       # tied wte / lm_head
    "llama": ("llama", transformers.AutoModelForCausalLM),     # LlamaRMSNorm, custom forward
}


def _build(arch: str):
    key, auto = ARCHS[arch]
    torch.manual_seed(0)
    cfg = tiny_config(key, layers=3, hidden=16, heads=2, vocab=40)
    cfg.num_labels = 3
    model = auto.from_config(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # gains and biases far from 1 and 0, so losing them shows
        for s in find_norms(model):
            for p in ("weight", "bias"):
                t = s.module._parameters.get(p)
                if t is not None:
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.5 + 1.0)
    return model, auto


def _logits(model, x):
    with torch.no_grad():
        return model(input_ids=x, attention_mask=torch.ones_like(x)).logits


def _operate(model, swap: bool):
    strip_affine(model, "early")
    if swap:
        swap_norms(model, "adanorm:k=0.2", "middle")
        swap_norms(model, "groupln:groups=2,eps=0.001", "final")
        strip_affine(model, ["later"])
        gen = torch.Generator().manual_seed(2)
        with torch.no_grad():  # the swapped variants' own (copied) gains, moved off
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 1e-3)


X = torch.randint(3, 40, (2, 7), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_lnlab_round_trip_is_exact(arch, tmp_path):
    model, _ = _build(arch)
    _operate(model, swap=True)
    before = _logits(model, X)
    save_pretrained(model, tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())["lnlab_surgery"]
    assert {e["op"] for e in record} == {"strip_affine", "swap_norms"}
    loaded = from_pretrained(tmp_path)
    assert torch.equal(_logits(loaded, X), before)
    assert [(n, p.shape) for n, p in loaded.named_parameters()] == \
        [(n, p.shape) for n, p in model.named_parameters()]
    assert [s.cls for s in find_norms(loaded)] == [s.cls for s in find_norms(model)]
    # and again: the reloaded model carries the same record
    save_pretrained(loaded, tmp_path / "again")
    assert torch.equal(_logits(from_pretrained(tmp_path / "again"), X), before)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_stock_save_warns_and_stock_load_differs(arch, tmp_path):
    model, auto = _build(arch)
    _operate(model, swap=True)
    before = _logits(model, X)
    with pytest.warns(SurgeryNotSavedWarning, match="lnlab.surgery.from_pretrained"):
        model.save_pretrained(tmp_path)
    stock = auto.from_pretrained(tmp_path, use_safetensors=True).eval()
    assert not torch.allclose(_logits(stock, X), before, atol=1e-4)  # the bug this fixes
    assert torch.equal(_logits(from_pretrained(tmp_path), X), before)  # record was saved


def test_unmodified_models_save_without_warning(tmp_path):
    model, _ = _build("bert")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SurgeryNotSavedWarning)
        model.save_pretrained(tmp_path)
    assert torch.equal(_logits(from_pretrained(tmp_path), X), _logits(model, X))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_export_plain_hf_loads_identically_in_stock_transformers(arch, tmp_path):
    model, auto = _build(arch)
    _operate(model, swap=False)
    assert any(s.module._parameters.get("weight") is None or "weight" in s.module._buffers
               for s in find_norms(model))
    before = _logits(model, X)
    export_plain_hf(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert "lnlab_surgery" not in cfg
    # every gain is in the file: the stock model does not depend on its own init defaults
    saved = load_file(str(tmp_path / "model.safetensors"))
    plain_sites = find_norms(auto.from_config(transformers.AutoConfig.from_pretrained(tmp_path)))
    assert all(f"{s.name}.weight" in saved for s in plain_sites)
    stock = auto.from_pretrained(tmp_path, use_safetensors=True).eval()
    assert torch.equal(_logits(stock, X), before)


def test_export_refuses_swapped_variants(tmp_path):
    model, _ = _build("gpt2")
    swap_norms(model, "rmsnorm", "final")
    with pytest.raises(LnlabError, match=r"swapped.*lnlab\.surgery\.from_pretrained"):
        export_plain_hf(model, tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_round_trip_through_lnlabs_wrapper(tmp_path):
    torch.manual_seed(0)
    m = build_model("hf:bert:layers=2,dim=16", input_shape=(8,), num_classes=2,
                    vocab_size=30).eval()
    report = swap_norms(m, "layernorm_simple", "embedding")
    assert report[0].site.startswith("hf.")  # names inside the wrapper...
    saved = save_pretrained(m, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary directory left
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]
    entry = json.loads((saved / "config.json").read_text())["lnlab_surgery"][0]
    assert not entry["site"].startswith("hf.")  # ...are recorded relative to the HF model
    x = torch.randint(1, 30, (3, 8))
    again = HFClassifier(from_pretrained(saved)).eval()
    assert torch.equal(again(x), m(x))


def test_a_record_that_does_not_fit_is_refused(tmp_path):
    model, _ = _build("bert")
    strip_affine(model, "early")
    save_pretrained(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["lnlab_surgery"][0]["site"] = "bert.encoder.layer.9.output.LayerNorm"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LnlabError, match="does not apply"):
        from_pretrained(tmp_path)
    cfg["lnlab_surgery"] = [{"op": "melt", "site": "x", "root": "BertModel"}]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LnlabError):
        from_pretrained(tmp_path)


def test_modified_models_still_copy_and_pickle(tmp_path):
    """The warning comes from a per-instance subclass; copies keep it, and stay exact."""
    import copy
    import pickle

    model, _ = _build("gpt2")
    _operate(model, swap=True)
    before = _logits(model, X)
    twins = (copy.deepcopy(model), pickle.loads(pickle.dumps(model)))  # our own object
    for i, twin in enumerate(twins):
        assert type(twin).__name__ == "GPT2LMHeadModel"
        assert torch.equal(_logits(twin, X), before)
        with pytest.warns(SurgeryNotSavedWarning):
            twin.save_pretrained(tmp_path / str(i))
