"""User data files: ``.npz``, ``.csv``, ``.parquet`` and Hugging Face ``save_to_disk`` folders.

Every failure (missing file, unreadable file, missing label column, non-numeric features,
ragged images) becomes an :class:`~lnlab.errors.LnlabError` with a one-line message.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lnlab.data.base import Dataset, Options, as_dataset, encode_labels, split_indices
from lnlab.errors import LnlabError

PAD, UNK = 0, 1
_WORD = re.compile(r"\w+|[^\w\s]")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def column_list(names: list[str], limit: int = 100) -> str:
    """Every column name, so that the right one can be picked from the message; only a very
    wide table is cut, and then the message says how many names it left out."""
    if len(names) <= limit:
        return ", ".join(names) or "none"
    return f"{', '.join(names[:limit])}, ... and {len(names) - limit} more ({len(names)} in all)"


def _kind_for(x: np.ndarray, want: str | None) -> str:
    if want:
        return want
    return "vector" if x.ndim == 2 else "image"


def _need_two_classes(y_train: np.ndarray, where: str) -> None:
    """A classifier trained on one class learns nothing; such a file is a mistake (wrong
    label column, a filtered export), not an experiment."""
    n = len(np.unique(y_train))
    if n < 2:
        raise LnlabError(f"{where}: the training labels hold {n} class{'es' if n != 1 else ''}; "
                         f"a classifier needs at least two (wrong label column?)")


def _finish(name: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray,
            y_te: np.ndarray, kind: str | None, where: str) -> Dataset:
    """Validate feature arrays, encode labels and build the Dataset."""
    if x_tr.ndim < 2 or x_te.ndim < 2 or x_tr.shape[1:] != x_te.shape[1:]:
        raise LnlabError(f"{where}: features must be arrays of shape (n, ...) with the same "
                         f"sample shape in train and test, got {x_tr.shape} and {x_te.shape}")
    if len(x_tr) != np.asarray(y_tr).size or len(x_te) != np.asarray(y_te).size:
        raise LnlabError(f"{where}: features and labels differ in length")
    if len(x_tr) == 0 or len(x_te) == 0:
        raise LnlabError(f"{where}: empty train or test split")
    for arr in (x_tr, x_te):
        if arr.dtype.kind not in "biuf":
            raise LnlabError(f"{where}: features must be numeric, got dtype {arr.dtype}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise LnlabError(f"{where}: features contain NaN or infinite values")
    kind = _kind_for(x_tr, kind)
    vocab = None
    if kind == "tokens":
        if x_tr.dtype.kind not in "iub" or min(x_tr.min(), x_te.min()) < 0:
            raise LnlabError(f"{where}: kind=tokens needs non-negative integer token ids")
        vocab = int(max(x_tr.max(), x_te.max())) + 1
    ytr, yte, k, classes = encode_labels(y_tr, y_te, where)
    _need_two_classes(ytr, where)
    extra: dict[str, Any] = {"classes": classes} if classes is not None else {}
    return as_dataset(x_tr, ytr, x_te, yte, name=name, kind=kind, num_classes=k,
                      vocab_size=vocab, extra=extra)


def load_npz(path: Path, opts: Options, seed: int) -> Dataset:
    """Arrays ``x``/``y`` (split with ``test_frac``) or ``x_train/y_train/x_test/y_test``."""
    test_frac = opts.get_float("test_frac", 0.2, lo=0, hi=1, lo_open=True, hi_open=True)
    kind = opts.get_choice("kind", "", ("", "vector", "image", "tokens")) or None
    seed = opts.get_int("seed", seed, lo=0)
    opts.done()
    where = str(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise LnlabError(f"could not read {where} as .npz (damaged or truncated?): "
                         f"{_one_line(e)}") from None
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        x_tr, y_tr = arrays["x_train"], arrays["y_train"]
        x_te, y_te = arrays["x_test"], arrays["y_test"]
    elif {"x", "y"} <= arrays.keys():
        x, y = arrays["x"], arrays["y"]
        if x.ndim < 2 or len(x) != y.size:
            raise LnlabError(f"{where}: x must have shape (n, ...) and y n labels")
        tr, te = split_indices(len(x), test_frac, seed)
        x_tr, y_tr, x_te, y_te = x[tr], y.ravel()[tr], x[te], y.ravel()[te]
    else:
        raise LnlabError(f"{where}: expected arrays x, y or x_train, y_train, x_test, y_test; "
                         f"found {', '.join(sorted(arrays)) or 'none'}")
    return _finish(path.name, x_tr, y_tr, x_te, y_te, kind, where)


def load_table(path: Path, opts: Options, seed: int) -> Dataset:
    """A CSV or Parquet table: every column but the label column is a numeric feature."""
    label = opts.get_str("label", "label")
    test_frac = opts.get_float("test_frac", 0.2, lo=0, hi=1, lo_open=True, hi_open=True)
    seed = opts.get_int("seed", seed, lo=0)
    opts.done()
    where = str(path)
    try:
        import pandas as pd
    except ImportError:
        raise LnlabError("reading CSV and Parquet tables needs pandas: "
                         "pip install 'lnlab[files]'") from None
    try:
        df = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except ImportError as e:
        raise LnlabError(f"reading {where} needs pyarrow (pip install 'lnlab[files]'): "
                         f"{_one_line(e)}") from None
    except Exception as e:  # pandas raises many types for malformed files
        raise LnlabError(f"could not read {where}: {_one_line(e)}") from None
    cols = [str(c) for c in df.columns]
    if label not in cols:
        raise LnlabError(f"{where} has no label column {label!r} (columns: "
                         f"{column_list(cols)}); choose one with --label COLUMN "
                         f"(label=COLUMN in the spec)")
    df.columns = cols
    feats = df.drop(columns=[label])
    if feats.shape[1] == 0:
        raise LnlabError(f"{where} has no feature columns besides {label!r}")
    bad = [c for c in feats.columns if not pd.api.types.is_numeric_dtype(feats[c])]
    if bad:
        raise LnlabError(f"{where}: feature column {bad[0]!r} is not numeric")
    x = feats.to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise LnlabError(f"{where}: feature columns contain missing or infinite values")
    y = df[label].to_numpy()
    if df[label].isna().any():
        raise LnlabError(f"{where}: label column {label!r} has missing values")
    tr, te = split_indices(len(df), test_frac, seed)
    ds = _finish(path.name, x[tr], y[tr], x[te], y[te], "vector", where)
    ds.extra["feature_names"] = list(feats.columns)
    return ds


def build_vocab(texts: list[str], max_size: int, min_freq: int) -> dict[str, int]:
    """Word-level vocabulary from the training texts: 0 = padding, 1 = unknown.

    Built from the training split only so that no test information leaks into the inputs.
    Ties in frequency are broken alphabetically, which makes it deterministic.
    """
    counts = Counter(w for t in texts for w in _WORD.findall(t.lower()))
    words = sorted((w for w, c in counts.items() if c >= min_freq),
                   key=lambda w: (-counts[w], w))[: max(0, max_size - 2)]
    return {w: i + 2 for i, w in enumerate(words)}


def tokenize(texts: list[str], vocab: dict[str, int], length: int) -> np.ndarray:
    """Word ids padded with 0 / truncated to ``length``; unknown words become 1."""
    out = np.zeros((len(texts), length), dtype=np.int64)
    for i, t in enumerate(texts):
        ids = [vocab.get(w, UNK) for w in _WORD.findall(t.lower())][:length]
        out[i, : len(ids)] = ids
    return out


def _hf_column_kind(feature: Any) -> str:
    name = type(feature).__name__
    if name == "Image":
        return "image"
    if name == "Value":
        return "text" if feature.dtype in ("string", "large_string") else "number"
    if name == "ClassLabel":
        return "number"
    return "array"


def _images(col: list[Any], where: str) -> np.ndarray:
    arrs = [np.asarray(im, dtype=np.float32) for im in col]
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise LnlabError(f"{where}: images have different sizes {sorted(shapes)[:3]}; "
                         f"resize them first")
    x = np.stack(arrs)
    if x.ndim == 4:  # (n, H, W, C) -> (n, C, H, W)
        x = x.transpose(0, 3, 1, 2)
    if x.max(initial=0) > 1.0:
        x = x / 255.0
    return x


def load_hf(path: Path, opts: Options, seed: int) -> Dataset:
    """A Hugging Face ``datasets`` folder written by ``save_to_disk``.

    Uses the ``train`` and ``test`` (or ``validation``) splits, or splits a single split with
    ``test_frac``.  A text column is tokenized word by word with a vocabulary built on the
    training split (``vocab`` words at most, ``length`` tokens per example); an image column
    becomes float tensors in [0, 1]; numeric or array columns become features.
    """
    label = opts.get_str("label", None)
    text_col = opts.get_str("text", None)
    image_col = opts.get_str("image", None)
    length = opts.get_int("length", 64, lo=1)
    max_vocab = opts.get_int("vocab", 20000, lo=3)
    min_freq = opts.get_int("min_freq", 1, lo=1)
    test_frac = opts.get_float("test_frac", 0.2, lo=0, hi=1, lo_open=True, hi_open=True)
    seed = opts.get_int("seed", seed, lo=0)
    opts.done()
    where = str(path)
    try:
        import datasets as hfd
    except ImportError:
        raise LnlabError("reading Hugging Face datasets needs the datasets package: "
                         "pip install 'lnlab[hf]'") from None
    try:
        obj = hfd.load_from_disk(str(path))
    except Exception as e:
        raise LnlabError(f"could not read {where} as a saved Hugging Face dataset: "
                         f"{_one_line(e)}") from None
    if isinstance(obj, hfd.DatasetDict):
        test_name = next((s for s in ("test", "validation", "valid") if s in obj), None)
        if "train" in obj and test_name:
            train, test = obj["train"], obj[test_name]
        elif len(obj) == 1:
            (whole,) = obj.values()
            train, test = _split_hf(whole, test_frac, seed)
        else:
            raise LnlabError(f"{where}: splits {', '.join(obj)} — need train and test "
                             f"(or validation), or a single split")
    else:
        train, test = _split_hf(obj, test_frac, seed)
    feats = train.features
    names = list(feats)
    if label is None:
        label = next((c for c in ("label", "labels", "target", "y") if c in names), None)
        if label is None:
            raise LnlabError(f"{where}: no label column found (columns: "
                             f"{column_list(names)}); choose one with --label COLUMN "
                             f"(label=COLUMN in the spec)")
    if label not in names or label not in test.features:
        raise LnlabError(f"{where} has no label column {label!r} (columns: "
                         f"{column_list(names)}); choose one with --label COLUMN "
                         f"(label=COLUMN in the spec)")
    kinds = {c: _hf_column_kind(feats[c]) for c in names if c != label}
    if text_col is None and image_col is None:
        text_col = next((c for c in kinds if kinds[c] == "text"), None)
        if text_col is None:
            image_col = next((c for c in kinds if kinds[c] == "image"), None)
    for col in (text_col, image_col):
        if col is not None and col not in kinds:
            raise LnlabError(f"{where} has no column {col!r} (columns: {column_list(names)})")
    y_tr, y_te = np.asarray(train[label]), np.asarray(test[label])
    name = path.name
    if text_col is not None:
        tr_texts, te_texts = list(train[text_col]), list(test[text_col])
        if not all(isinstance(t, str) for t in tr_texts + te_texts):
            raise LnlabError(f"{where}: column {text_col!r} is not text")
        vocab = build_vocab(tr_texts, max_vocab, min_freq)
        x_tr, x_te = tokenize(tr_texts, vocab, length), tokenize(te_texts, vocab, length)
        ytr, yte, k, classes = encode_labels(y_tr, y_te, where)
        _need_two_classes(ytr, where)
        extra: dict[str, Any] = {"vocab": vocab}
        if classes is not None:
            extra["classes"] = classes
        return as_dataset(x_tr, ytr, x_te, yte, name=name, kind="tokens", num_classes=k,
                          vocab_size=len(vocab) + 2, extra=extra)
    if image_col is not None:
        return _finish(name, _images(list(train[image_col]), where), y_tr,
                       _images(list(test[image_col]), where), y_te, "image", where)
    cols = [c for c in kinds if kinds[c] in ("number", "array")]
    if not cols:
        raise LnlabError(f"{where}: no text, image or numeric feature column")
    try:
        x_tr = np.concatenate([np.asarray(train[c], np.float64).reshape(len(train), -1)
                               for c in cols], 1)
        x_te = np.concatenate([np.asarray(test[c], np.float64).reshape(len(test), -1)
                               for c in cols], 1)
    except (ValueError, TypeError) as e:
        raise LnlabError(f"{where}: feature columns are not numeric arrays: "
                         f"{_one_line(e)}") from None
    return _finish(name, x_tr, y_tr, x_te, y_te, "vector", where)


def _split_hf(ds: Any, test_frac: float, seed: int) -> tuple[Any, Any]:
    tr, te = split_indices(len(ds), test_frac, seed)
    return ds.select(tr.tolist()), ds.select(te.tolist())


def load_path(path: Path, opts: Options, seed: int) -> Dataset:
    """Dispatch on what ``path`` is: .npz, .csv, .parquet or a saved HF dataset folder."""
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file() \
                or (path / "state.json").is_file():
            return load_hf(path, opts, seed)
        raise LnlabError(f"{path} is a folder but not a dataset saved with save_to_disk")
    if not path.is_file():
        raise LnlabError(f"no such dataset or file: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path, opts, seed)
    if suffix in (".csv", ".parquet", ".pq"):
        return load_table(path, opts, seed)
    raise LnlabError(f"unsupported data file {path.name!r}: use .npz, .csv, .parquet or a "
                     f"Hugging Face dataset folder")
