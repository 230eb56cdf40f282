"""Dataset containers, spec parsing and the helpers every loader shares.

A dataset spec is ``name[:option=value,...]`` (``"mnist1d"``, ``"clusters:n=500,classes=3"``,
``"data/train.csv:label=y"``), split by :func:`lnlab.specs.split_spec` like every other spec.
Options are typed by :class:`Options` through :class:`lnlab.specs.Option`, and unknown names are
rejected so a typo fails loudly instead of silently using a default.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lnlab.errors import LnlabError
from lnlab.specs import Option, SpecError
from lnlab.specs import split_spec as _split

KINDS = ("vector", "image", "tokens")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its input: shape (per sample), classes and vocabulary."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    vocab_size: int | None = None
    kind: str = "vector"  # "vector" | "image" | "tokens"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "vocab_size": self.vocab_size,
                "kind": self.kind}


@dataclass
class Dataset:
    """In-memory train/test tensors: float32 features or int64 token ids, int64 labels.

    Kept as plain tensors (no DataLoader) because the trainer indexes batches with a
    permutation, which is the fastest way to feed small models.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: DatasetInfo
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("x_train", "x_test"):
            t = getattr(self, name)
            want = torch.int64 if self.info.kind == "tokens" else torch.float32
            if t.dtype != want:
                raise TypeError(f"{name} must be {want}, got {t.dtype}")
            if tuple(t.shape[1:]) != tuple(self.info.input_shape):
                raise ValueError(f"{name} has sample shape {tuple(t.shape[1:])}, "
                                 f"info says {self.info.input_shape}")
        for name in ("y_train", "y_test"):
            if getattr(self, name).dtype != torch.int64:
                raise TypeError(f"{name} must be int64")
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError("features and labels differ in length")

    def __repr__(self) -> str:
        i = self.info
        return (f"Dataset({i.name!r}, kind={i.kind}, input_shape={i.input_shape}, "
                f"classes={i.num_classes}, vocab={i.vocab_size}, "
                f"train={len(self.y_train)}, test={len(self.y_test)})")


def split_spec(spec: str, known: Collection[str] = ()) -> tuple[str, dict[str, str]]:
    """Split ``name:opt=val,...`` into the name and raw option strings.

    A name in ``known`` ends at the first ``:``.  Otherwise the spec may be a file path that
    itself contains ``:``, so the options part is taken after the *last* colon, and only when
    what follows it looks like ``key=value`` pairs (:func:`lnlab.specs.split_spec`).
    """
    name, items = _split(spec, what="dataset", known={k.lower() for k in known},
                         path_like=True)
    return name, dict(items)


class Options:
    """Typed access to a spec's options; ``done()`` rejects any option that was not read."""

    def __init__(self, dataset: str, raw: dict[str, str]):
        self.dataset = dataset
        self.raw = dict(raw)
        self.known: list[str] = []

    def _get(self, key: str) -> str | None:
        self.known.append(key)
        return self.raw.get(key)  # typed values are checked (ASCII, range) by specs.Option

    def _parse(self, opt: Option) -> Any:
        raw = self._get(opt.name)
        return opt.default if raw is None else opt.parse(raw, self.dataset)

    def get_int(self, key: str, default: int, *, lo: int | None = None,
                hi: int | None = None) -> int:
        return self._parse(Option(key, "int", default, lo=lo, hi=hi))

    def get_float(self, key: str, default: float, *, lo: float | None = None,
                  hi: float | None = None, lo_open: bool = False,
                  hi_open: bool = False) -> float:
        return self._parse(Option(key, "float", default, lo=lo, hi=hi, lo_open=lo_open,
                                  hi_open=hi_open))

    def get_str(self, key: str, default: str | None) -> str | None:
        raw = self._get(key)
        return default if raw is None else raw

    def get_choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        return self._parse(Option(key, "choice", default, choices=choices))

    def done(self) -> None:
        unknown = [k for k in self.raw if k not in self.known]
        if unknown:
            valid = ", ".join(sorted(set(self.known))) or "none"
            raise SpecError(f"unknown option {unknown[0]!r} for dataset {self.dataset!r}; "
                            f"valid options: {valid}")


def split_indices(n: int, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random train/test split of ``range(n)`` (test gets round(test_frac * n))."""
    n_test = round(test_frac * n)
    if n_test < 1 or n - n_test < 1:
        raise LnlabError(f"test_frac={test_frac} leaves an empty split of {n} samples")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def encode_labels(y_train: np.ndarray, y_test: np.ndarray,
                  where: str) -> tuple[np.ndarray, np.ndarray, int, list[Any] | None]:
    """Turn labels of any type into int64 class ids.

    Non-negative integer labels keep their values (class k stays k, num_classes = max + 1);
    anything else (strings, negative or fractional numbers) is mapped to the index of its
    value in the sorted set of labels of both splits.  Returns the class names when remapped.
    """
    both = np.concatenate([np.asarray(y_train).ravel(), np.asarray(y_test).ravel()])
    if both.size == 0:
        raise LnlabError(f"{where}: no labels")
    if both.dtype.kind in "iub":
        if both.min() >= 0:
            return (np.asarray(y_train, np.int64).ravel(), np.asarray(y_test, np.int64).ravel(),
                    int(both.max()) + 1, None)
    elif both.dtype.kind == "f":
        if not np.isfinite(both).all():
            raise LnlabError(f"{where}: labels contain NaN or infinite values")
        if (both == np.round(both)).all() and both.min() >= 0:
            return (np.asarray(y_train).ravel().astype(np.int64),
                    np.asarray(y_test).ravel().astype(np.int64), int(both.max()) + 1, None)
    try:
        classes = sorted(set(both.tolist()))
    except TypeError:
        raise LnlabError(f"{where}: labels of mixed types cannot be ordered") from None
    index = {c: i for i, c in enumerate(classes)}
    enc = np.array([index[v] for v in both.tolist()], dtype=np.int64)
    n_tr = np.asarray(y_train).size
    return enc[:n_tr], enc[n_tr:], len(classes), classes


def as_dataset(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
               y_test: np.ndarray, *, name: str, kind: str, num_classes: int,
               vocab_size: int | None = None, extra: dict[str, Any] | None = None) -> Dataset:
    """Wrap numpy arrays as a :class:`Dataset` with the right dtypes."""
    dtype = torch.int64 if kind == "tokens" else torch.float32
    xt = torch.as_tensor(np.ascontiguousarray(x_train)).to(dtype)
    xs = torch.as_tensor(np.ascontiguousarray(x_test)).to(dtype)
    yt = torch.as_tensor(np.ascontiguousarray(y_train, dtype=np.int64))
    ys = torch.as_tensor(np.ascontiguousarray(y_test, dtype=np.int64))
    if num_classes < 2:
        raise LnlabError(f"dataset {name!r} has {num_classes} class(es); need at least 2")
    info = DatasetInfo(name=name, input_shape=tuple(int(s) for s in xt.shape[1:]),
                       num_classes=int(num_classes), vocab_size=vocab_size, kind=kind)
    return Dataset(xt, yt, xs, ys, info, extra or {})
