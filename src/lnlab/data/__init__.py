"""Datasets and label noise.

>>> from lnlab.data import load_dataset, apply_label_noise
>>> ds = load_dataset("mnist1d")                     # 4,000 train / 1,000 test, 40 features
>>> noisy = apply_label_noise(ds.y_train, 0.1, ds.info.num_classes, seed=0)

Specs: ``mnist1d[:size=,seed=]``, ``digits``, ``clusters:n=,dim=,classes=,spread=``,
``random:n=,dim=,classes=``, ``tokens:vocab=,length=,n=,classes=,motif=,distractors=``,
``pystdlib:chars=,context=,val_frac=`` (next-character targets per position),
``wordnet:tokenizer=,classes=,n_train=,n_test=,length=`` (WordNet 3.0 noun definitions by
lexicographer file, tokenized for a checkpoint; ``docs/data/wordnet.md``), or a
path to ``.npz`` / ``.csv`` / ``.parquet`` / a Hugging Face ``save_to_disk`` folder.
"""

from __future__ import annotations

from pathlib import Path

from lnlab.data.base import Dataset, DatasetInfo, Options, split_spec
from lnlab.data.builtin import BUILTIN, cache_dir
from lnlab.data.files import load_path
from lnlab.data.noise import NoisyLabels, apply_label_noise, random_labels
from lnlab.errors import LnlabError
from lnlab.specs import expand_path

__all__ = [
    "Dataset",
    "DatasetInfo",
    "NoisyLabels",
    "apply_label_noise",
    "available",
    "cache_dir",
    "load_dataset",
    "random_labels",
]


def available() -> list[str]:
    """Names of the built-in datasets (files are addressed by path)."""
    return list(BUILTIN)


def load_dataset(spec: str, *, seed: int = 0) -> Dataset:
    """Load a dataset from a spec string ``name[:option=value,...]`` or a file path.

    ``seed`` seeds synthetic data and random splits of files unless the spec sets ``seed=``;
    MNIST-1D and digits are fixed datasets and ignore it.
    """
    name, raw = split_spec(spec, BUILTIN)
    key = name.lower()
    if key in BUILTIN:
        return BUILTIN[key](Options(key, raw), seed)
    looks_like_path = any(ch in name for ch in "/\\.") or Path(name).exists()
    if not looks_like_path:
        raise LnlabError(f"unknown dataset {name!r}; built-in: {', '.join(BUILTIN)}, "
                         f"or a path to .npz/.csv/.parquet or a saved Hugging Face dataset")
    path = expand_path(name)
    return load_path(path, Options(path.name, raw), seed)
