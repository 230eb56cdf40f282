"""Character LM support: the ``pystdlib`` dataset, ``causal=true`` transformers and the
trainer's sequence targets (cross-entropy over every position, per-token accuracy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnlab.data import available, load_dataset
from lnlab.data.text import encode_chars, stdlib_text, windows
from lnlab.errors import LnlabError
from lnlab.models import build_model
from lnlab.train import TrainConfig, train
from lnlab.train.loop import evaluate, sequence_loss

SPEC = "pystdlib:chars=4000,context=16"


def test_stdlib_text_is_sorted_files_and_deterministic(tmp_path):
    for name, text in (("b.py", "bbb"), ("a.py", "aa"), ("c.txt", "ignored"), ("d.py", "d")):
        (tmp_path / name).write_text(text)
    text, files = stdlib_text(5, tmp_path)
    assert files == ["a.py", "b.py"] and text == "aa\nbb"
    assert stdlib_text(5, tmp_path) == (text, files)
    with pytest.raises(LnlabError, match="only"):
        stdlib_text(100, tmp_path)


def test_vocab_from_train_split_and_unknown_id():
    tr, va, vocab = encode_chars("abca", "abz")
    assert vocab == "\x00abc"
    assert tr.tolist() == [1, 2, 3, 1] and va.tolist() == [1, 2, 0]


def test_windows_are_next_character_targets():
    ids = np.arange(11)
    x, y = windows(ids, 3)
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert (y == x + 1).all()
    with pytest.raises(LnlabError, match="shorter"):
        windows(np.arange(3), 3)


def test_pystdlib_dataset():
    assert "pystdlib" in available()
    ds = load_dataset(SPEC)
    assert ds.info.kind == "tokens" and ds.info.input_shape == (16,)
    assert ds.y_train.shape == ds.x_train.shape and ds.y_test.shape == ds.x_test.shape
    assert ds.info.num_classes == ds.info.vocab_size == len(ds.extra["vocab"])
    # the target of position t is the input at t + 1 (within and across windows)
    assert torch.equal(ds.y_train[:, :-1], ds.x_train[:, 1:])
    assert torch.equal(ds.y_train[:-1, -1], ds.x_train[1:, 0])
    # 90/10 contiguous split of 4000 characters: 3600 train, 400 validation
    assert len(ds.x_train) == 3599 // 16 and len(ds.x_test) == 399 // 16
    vocab = ds.extra["vocab"]
    text, _ = stdlib_text(4000)
    decoded = "".join(vocab[i] for i in ds.x_train[0].tolist())
    assert decoded == text[:16]
    again = load_dataset(SPEC)
    assert torch.equal(again.x_test, ds.x_test)
    with pytest.raises(LnlabError, match="unknown option"):
        load_dataset("pystdlib:chars=4000,ctx=3")


def test_causal_transformer_shapes_and_causality():
    torch.manual_seed(0)
    m = build_model("transformer:layers=2,dim=16,heads=2,causal=true,norm=layernorm_simple",
                    input_shape=(8,), num_classes=11, vocab_size=11).eval()
    assert m.cls_token is None
    x = torch.randint(0, 11, (3, 8))
    out = m(x)
    assert out.shape == (3, 8, 11)
    x2 = x.clone()
    x2[:, 5] = (x2[:, 5] + 1) % 11
    out2 = m(x2)
    assert torch.allclose(out[:, :5], out2[:, :5], atol=1e-6)  # the past cannot see the future
    assert not torch.allclose(out[:, 5:], out2[:, 5:])
    plain = build_model("transformer:layers=1,dim=16,heads=2", input_shape=(8,),
                        num_classes=3, vocab_size=11)
    assert plain(x).shape == (3, 3)


def test_sequence_loss_and_evaluate_per_token():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 7, dtype=torch.float64)
    y = torch.randint(0, 7, (4, 5))
    ref = F.cross_entropy(logits.permute(0, 2, 1), y)  # torch's (N, C, T) form
    assert torch.allclose(sequence_loss(logits, y), ref)
    model = torch.nn.Identity()
    ev = evaluate(model, logits, y, chunk=3)
    assert math.isclose(ev.loss, float(ref), rel_tol=1e-6)  # evaluate works in float32
    assert ev.acc == pytest.approx(float((logits.argmax(-1) == y).double().mean()))
    assert ev.preds.shape == y.shape


def test_train_language_model_and_reject_classifier():
    cfg = TrainConfig(model="transformer:layers=1,dim=16,heads=2,causal=true", data=SPEC,
                      epochs=2, batch_size=32, lr=3e-3, threads=1)
    r = train(cfg)
    assert r.status == "finished"
    e0, e1 = r.epochs
    assert e1["train_loss"] < e0["train_loss"] < math.log(r.info.num_classes) + 0.5
    assert 0 <= e1["test_acc"] <= 1
    with pytest.raises(LnlabError, match="causal"):
        train(TrainConfig(model="transformer:layers=1,dim=16,heads=2", data=SPEC, epochs=1))
    with pytest.raises(LnlabError, match="one label per sample"):
        train(TrainConfig(model="transformer:layers=1,dim=16,heads=2,causal=true", data=SPEC,
                          epochs=1, noise=0.1))
