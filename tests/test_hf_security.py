"""A model directory is data, never code: no unpickling, no custom modelling code, no download.

Each trap writes a marker file when it is triggered; every test first proves that its trap
works (so the test can fail), then loads the directory through lnlab and checks the marker is
absent and the error names the problem.
"""

from __future__ import annotations

import json
import pickle
import runpy

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lnlab.cli import main  # noqa: E402
from lnlab.errors import LnlabError  # noqa: E402
from lnlab.models import build_model  # noqa: E402
from lnlab.models.hf import load_config  # noqa: E402
from lnlab.models.hf_classifier import build_hf_classifier, hf_placement  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class _Trap:
    """Unpickling this creates ``path`` (a stand-in for arbitrary code execution)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _tiny_bert_config():
    return transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32,
                                   max_position_embeddings=32)


def _pickle_dir(tmp_path, marker):
    d = tmp_path / "pickled"
    d.mkdir()
    _tiny_bert_config().save_pretrained(d)
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    return d


def _remote_code_dir(tmp_path, marker):
    d = tmp_path / "remote"
    d.mkdir()
    code = f"open({str(marker)!r}, 'w').close()\n"
    (d / "evil.py").write_text(code)
    cfg = _tiny_bert_config().to_dict()
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                       "AutoModelForSequenceClassification": "evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture
def no_torch_load(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("torch.load was called on a model directory")
    monkeypatch.setattr(torch, "load", refuse)


def test_the_traps_work(tmp_path):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Trap(probe)))
    assert probe.exists()
    probe.unlink()
    d = _remote_code_dir(tmp_path, probe)
    runpy.run_path(str(d / "evil.py"))
    assert probe.exists()


def test_a_pickle_in_a_model_directory_is_never_unpickled(tmp_path, no_torch_load):
    marker = tmp_path / "UNPICKLED"
    d = _pickle_dir(tmp_path, marker)
    with pytest.raises(LnlabError, match=r"pickle.*model\.safetensors"):
        build_model(f"hf:{d}", input_shape=(8,), num_classes=2, vocab_size=32)
    with pytest.raises(LnlabError, match=r"pytorch_model\.bin"):
        build_hf_classifier("bert", num_classes=2, vocab_size=32, init=d)
    assert main(["inspect", f"hf:{d}"]) == 2
    assert not marker.exists()


def test_safetensors_are_read_even_beside_a_pickle(tmp_path, no_torch_load):
    marker = tmp_path / "UNPICKLED"
    d = _pickle_dir(tmp_path, marker)
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification(_tiny_bert_config())
    hf.save_pretrained(d)  # model.safetensors next to the trap
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    m = build_model(f"hf:{d}", input_shape=(8,), num_classes=2, vocab_size=32).eval()
    x = torch.randint(1, 32, (2, 8))
    torch.testing.assert_close(m(x), hf.eval()(input_ids=x, attention_mask=torch.ones_like(x))
                               .logits)
    assert not marker.exists()


def test_custom_code_never_runs(tmp_path, capsys):
    marker = tmp_path / "CODE_RAN"
    d = _remote_code_dir(tmp_path, marker)
    for call in (lambda: build_model(f"hf:{d}", input_shape=(8,), num_classes=2,
                                     vocab_size=32),
                 lambda: load_config(d),
                 lambda: hf_placement(str(d)),
                 lambda: build_hf_classifier("bert", num_classes=2, vocab_size=32, init=d)):
        with pytest.raises(LnlabError, match="auto_map"):
            call()
    capsys.readouterr()
    for argv in (["inspect", f"hf:{d}"], ["audit", f"hf:{d}"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "auto_map" in err and err.count("\n") == 1
    assert not marker.exists()


def test_loads_pass_the_safe_flags(tmp_path, monkeypatch):
    """Belt and braces: the flags reach transformers even where the checks above pass."""
    seen = []
    real_cfg = transformers.AutoConfig.from_pretrained
    auto = transformers.AutoModelForSequenceClassification
    real_model = auto.from_pretrained

    def spy_cfg(*a, **k):
        seen.append(("config", k))
        return real_cfg(*a, **k)

    def spy_model(*a, **k):
        seen.append(("model", k))
        return real_model(*a, **k)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", spy_cfg)
    monkeypatch.setattr(auto, "from_pretrained", spy_model)
    transformers.BertForSequenceClassification(_tiny_bert_config()).save_pretrained(tmp_path)
    build_model(f"hf:{tmp_path}", input_shape=(8,), num_classes=2, vocab_size=32)
    assert {kind for kind, _ in seen} == {"config", "model"}
    for _, k in seen:
        assert k["trust_remote_code"] is False and k["local_files_only"] is True
    assert all(k["use_safetensors"] is True for kind, k in seen if kind == "model")


def test_the_conversion_the_error_suggests_works(tmp_path):
    """A benign .bin, converted with the command from the message, then loads (safetensors)."""
    import re
    import subprocess
    import sys

    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification(_tiny_bert_config()).eval()
    hf.config.save_pretrained(tmp_path)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(LnlabError) as e:
        build_model(f"hf:{tmp_path}", input_shape=(8,), num_classes=2, vocab_size=32)
    command = re.search(r'python -c "(.*)"$', str(e.value)).group(1)
    subprocess.run([sys.executable, "-c", command], check=True, timeout=120)
    m = build_model(f"hf:{tmp_path}", input_shape=(8,), num_classes=2, vocab_size=32).eval()
    x = torch.randint(1, 32, (2, 8))
    torch.testing.assert_close(m(x), hf(input_ids=x, attention_mask=torch.ones_like(x)).logits,
                               rtol=0, atol=0)
