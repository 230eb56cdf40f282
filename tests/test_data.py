"""Datasets: built-ins, user files, spec parsing and error messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnlab.data import Dataset, load_dataset
from lnlab.data.base import split_spec
from lnlab.data.builtin import _occurs
from lnlab.errors import LnlabError


def _check(ds: Dataset) -> None:
    feat = torch.int64 if ds.info.kind == "tokens" else torch.float32
    assert ds.x_train.dtype == feat and ds.x_test.dtype == feat
    assert ds.y_train.dtype == torch.int64 and ds.y_test.dtype == torch.int64
    assert tuple(ds.x_train.shape[1:]) == ds.info.input_shape
    assert int(ds.y_train.min()) >= 0 and int(ds.y_train.max()) < ds.info.num_classes
    if ds.info.kind != "tokens":
        assert torch.isfinite(ds.x_train).all()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LNLAB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_mnist1d_standard_split_cached_and_rng_untouched(cache):
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    ds = load_dataset("mnist1d")
    assert np.array_equal(np.random.get_state()[1], before)  # global numpy RNG restored
    _check(ds)
    assert (len(ds.y_train), len(ds.y_test)) == (4000, 1000)
    assert ds.info.input_shape == (40,) and ds.info.num_classes == 10
    assert ds.info.kind == "vector" and ds.info.name == "mnist1d"
    # the package centres the whole set and scales it to unit std
    allx = torch.cat([ds.x_train, ds.x_test]).double()
    assert abs(float(allx.mean())) < 1e-5 and abs(float(allx.std()) - 1) < 1e-3
    assert len(list(cache.glob("mnist1d-*.npz"))) == 1
    again = load_dataset("mnist1d")  # from the cache
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)
    # class balance: the generator makes size // 10 samples per class
    counts = torch.bincount(torch.cat([ds.y_train, ds.y_test]), minlength=10)
    assert counts.tolist() == [500] * 10


def test_mnist1d_size_option(cache):
    ds = load_dataset("mnist1d:size=200")
    assert (len(ds.y_train), len(ds.y_test)) == (160, 40)
    assert ds.info.name == "mnist1d:size=200,seed=42"


def test_corrupt_cache_is_rebuilt(cache):
    cache.mkdir(parents=True)
    ds = load_dataset("mnist1d:size=100")
    (f,) = cache.glob("*.npz")
    f.write_bytes(b"not a zip")
    assert torch.equal(load_dataset("mnist1d:size=100").x_train, ds.x_train)


def test_digits_fixed_split_scaled():
    a, b = load_dataset("digits"), load_dataset("digits", seed=5)
    _check(a)
    assert a.info.input_shape == (8, 8) and a.info.kind == "image"
    assert len(a.y_train) + len(a.y_test) == 1797 and len(a.y_test) == 359
    assert float(a.x_train.min()) == 0.0 and float(a.x_train.max()) == 1.0
    assert torch.equal(a.x_test, b.x_test)


def test_clusters_and_random():
    c = load_dataset("clusters:n=300,dim=5,classes=3,spread=0.5")
    _check(c)
    assert c.info.input_shape == (5,) and c.info.num_classes == 3
    assert len(c.y_train) + len(c.y_test) == 300
    assert torch.equal(c.x_train, load_dataset("clusters:n=300,dim=5,classes=3,spread=0.5").x_train)
    assert not torch.equal(c.x_train, load_dataset("clusters:n=300,dim=5,classes=3,spread=0.5",
                                                   seed=1).x_train)
    # with small spread, the nearest class mean classifies the test set almost perfectly
    means = torch.stack([c.x_train[c.y_train == k].mean(0) for k in range(3)])
    pred = torch.cdist(c.x_test, means).argmin(1)
    assert float((pred == c.y_test).double().mean()) > 0.95
    r = load_dataset("random:n=500,dim=7,classes=5,seed=3")
    _check(r)
    assert r.info.input_shape == (7,) and r.info.num_classes == 5
    assert torch.equal(r.y_train, load_dataset("random:n=500,dim=7,classes=5", seed=3).y_train)


def test_tokens_task_has_exactly_one_motif_and_distractors():
    ds = load_dataset("tokens:vocab=40,length=20,n=600,classes=4,distractors=2")
    _check(ds)
    assert ds.info.kind == "tokens" and ds.info.vocab_size == 40
    assert ds.info.input_shape == (20,)
    x = torch.cat([ds.x_train, ds.x_test]).numpy()
    y = torch.cat([ds.y_train, ds.y_test]).numpy()
    motifs = ds.extra["motifs"]
    hits = _occurs(x, motifs)
    assert (hits.sum(1) == 1).all()
    assert (hits.argmax(1) == y).all()  # the label is the motif that occurs
    assert x.min() >= 1 and x.max() < 40  # 0 is reserved for padding
    # every row also holds all tokens of two other classes' motifs (the distractors), so
    # the set of tokens present is consistent with at least 3 classes
    present = np.array([[set(m) <= set(row) for m in motifs.tolist()] for row in x])
    assert (present.sum(1) >= 3).all()


def test_split_spec():
    assert split_spec("mnist1d") == ("mnist1d", {})
    assert split_spec("clusters:n=5,dim=2") == ("clusters", {"n": "5", "dim": "2"})
    assert split_spec("C:/data/x.csv:label=y") == ("C:/data/x.csv", {"label": "y"})
    assert split_spec("/a:b/x.csv") == ("/a:b/x.csv", {})


@pytest.mark.parametrize("spec, msg", [
    ("imagenet", "unknown dataset 'imagenet'"),
    ("clusters:bogus=1", "unknown option 'bogus'"),
    ("clusters:n=abc", "expected an integer"),
    ("clusters:classes=1", "must be >= 2"),
    ("clusters:classes=２", "non-ASCII"),
    ("clusters:n=99999999999999999999", "far too large"),
    ("clusters:spread=-1", "spread"),
    ("clusters:n", "must look like name=value"),
    ("tokens:vocab=8,classes=9", "vocab"),
    ("/no/such/file.csv", "no such dataset or file"),
    ("", "non-empty"),
])
def test_bad_specs(spec, msg):
    with pytest.raises(LnlabError, match=msg) as e:
        load_dataset(spec)
    assert "\n" not in str(e.value)


# -- user files -------------------------------------------------------------------------------

def test_npz_split_and_presplit(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "d.npz"
    np.savez(p, x=rng.standard_normal((50, 3, 4)), y=rng.integers(0, 3, 50))
    ds = load_dataset(f"{p}:test_frac=0.3")
    _check(ds)
    assert (len(ds.y_train), len(ds.y_test)) == (35, 15)
    assert ds.info.input_shape == (3, 4) and ds.info.kind == "image"
    q = tmp_path / "e.npz"
    np.savez(q, x_train=rng.integers(0, 9, (20, 6)), y_train=np.arange(20) % 2,
             x_test=rng.integers(0, 9, (5, 6)), y_test=np.arange(5) % 2)
    tok = load_dataset(f"{q}:kind=tokens")
    _check(tok)
    assert tok.info.kind == "tokens" and tok.info.vocab_size == 9
    assert tok.info.num_classes == 2 and len(tok.y_test) == 5


def test_npz_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(LnlabError, match="could not read"):
        load_dataset(str(bad))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, a=np.zeros(3))
    with pytest.raises(LnlabError, match="expected arrays"):
        load_dataset(str(wrong))
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4))
    with pytest.raises(LnlabError, match="could not read"):  # pickled arrays are refused
        load_dataset(str(obj))


def _table(tmp_path, fmt):
    import pandas as pd

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"f1": rng.standard_normal(40), "f2": rng.standard_normal(40),
                       "target": np.where(np.arange(40) % 2, "cat", "dog")})
    p = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        df.to_csv(p, index=False)
    else:
        df.to_parquet(p)
    return p


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables(tmp_path, fmt):
    p = _table(tmp_path, fmt)
    ds = load_dataset(f"{p}:label=target,test_frac=0.25")
    _check(ds)
    assert ds.info.input_shape == (2,) and ds.info.num_classes == 2
    assert ds.extra["classes"] == ["cat", "dog"] and ds.extra["feature_names"] == ["f1", "f2"]
    assert (len(ds.y_train), len(ds.y_test)) == (30, 10)
    with pytest.raises(LnlabError, match="no label column 'label'") as e:
        load_dataset(str(p))
    assert "target" in str(e.value)  # lists the columns


def test_table_errors(tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,label\n1,0\n2,1,3,4\n")
    with pytest.raises(LnlabError, match="could not read"):
        load_dataset(str(ragged))
    text = tmp_path / "text.csv"
    text.write_text("a,b,label\n1,x,0\n2,y,1\n3,z,0\n4,w,1\n5,v,0\n")
    with pytest.raises(LnlabError, match="'b' is not numeric"):
        load_dataset(str(text))
    missing = tmp_path / "missing.csv"
    missing.write_text("a,label\n1,0\n,1\n3,0\n4,1\n5,0\n")
    with pytest.raises(LnlabError, match="missing"):
        load_dataset(str(missing))
    pq = tmp_path / "bad.parquet"
    pq.write_bytes(b"PAR1 nope")
    with pytest.raises(LnlabError, match="could not read"):
        load_dataset(str(pq))
    other = tmp_path / "x.txt"
    other.write_text("hi")
    with pytest.raises(LnlabError, match="unsupported data file"):
        load_dataset(str(other))


def test_hf_text_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_dict({
        "text": ["the cat sat", "a dog ran fast", "the dog sat", "cat ran"],
        "label": [0, 1, 1, 0]})
    test = datasets.Dataset.from_dict({"text": ["the zebra sat down today"], "label": [1]})
    path = tmp_path / "hf_text"
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(path))
    ds = load_dataset(f"{path}:length=4")
    _check(ds)
    assert ds.info.kind == "tokens" and ds.info.input_shape == (4,)
    vocab = ds.extra["vocab"]
    assert "zebra" not in vocab  # built on the training split only
    assert ds.info.vocab_size == len(vocab) + 2
    # "the zebra sat down today" -> the, <unk>, sat, <unk> (truncated to 4)
    assert ds.x_test[0].tolist() == [vocab["the"], 1, vocab["sat"], 1]
    # "cat ran" is padded with 0
    assert ds.x_train[3].tolist() == [vocab["cat"], vocab["ran"], 0, 0]


def test_hf_image_dataset_single_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)) for _ in range(10)]
    d = datasets.Dataset.from_dict({"image": imgs, "label": [i % 3 for i in range(10)]},
                                   features=datasets.Features({
                                       "image": datasets.Image(),
                                       "label": datasets.ClassLabel(num_classes=3)}))
    path = tmp_path / "hf_img"
    d.save_to_disk(str(path))
    ds = load_dataset(f"{path}:test_frac=0.2")
    _check(ds)
    assert ds.info.kind == "image" and ds.info.input_shape == (6, 5)
    assert ds.info.num_classes == 3 and len(ds.y_test) == 2
    assert float(ds.x_train.min()) >= 0 and float(ds.x_train.max()) <= 1
    with pytest.raises(LnlabError, match="no label column 'y'"):
        load_dataset(f"{path}:label=y")


def test_hf_not_a_dataset(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(LnlabError, match="not a dataset saved"):
        load_dataset(str(tmp_path / "folder"))
