"""Character-level language modelling on the Python standard library's own source code.

A stand-in for Enwiki8 that needs no download: every Python installation ships megabytes of
real, human-written text in ``sysconfig.get_paths()["stdlib"]``. The corpus is the top-level
``*.py`` files of that directory in sorted filename order, concatenated (each file followed by
a newline) and cut after ``chars`` characters, so the same Python version always gives the
same text. The first ``1 - val_frac`` of the characters are the training split and the rest
the validation split (a contiguous, fixed split, as in Enwiki8's 90M/5M/5M). The vocabulary is
the sorted set of characters of the training split; id 0 is reserved for characters that only
occur in the validation split. Samples are windows of ``context`` characters, taken every
``context`` characters (non-overlapping), and the target of each position is the next
character, so ``y`` has the same shape as ``x``: a sequence target, one class per position.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import numpy as np

from lnlab.data.base import Dataset, Options, as_dataset
from lnlab.errors import LnlabError

__all__ = ["encode_chars", "load_pystdlib", "stdlib_text", "windows"]

UNK = "\x00"


def stdlib_text(chars: int, root: str | Path | None = None) -> tuple[str, list[str]]:
    """The first ``chars`` characters of the sorted top-level ``*.py`` files under ``root``
    (default: this interpreter's standard library), and the names of the files used."""
    base = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in base.glob("*.py") if p.is_file())
    if not files:
        raise LnlabError(f"pystdlib: no *.py files found in {base}")
    parts: list[str] = []
    used: list[str] = []
    total = 0
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace").replace(UNK, "") + "\n"
        parts.append(text)
        used.append(f.name)
        total += len(text)
        if total >= chars:
            break
    corpus = "".join(parts)
    if len(corpus) < chars:
        raise LnlabError(f"pystdlib: the standard library has only {len(corpus)} characters "
                         f"of top-level source; use chars <= {len(corpus)}")
    return corpus[:chars], used


def encode_chars(train: str, val: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Ids for both splits with a vocabulary built on ``train`` only (id 0 = unknown)."""
    vocab = UNK + "".join(sorted(set(train)))
    index = {c: i for i, c in enumerate(vocab)}
    enc = [np.fromiter((index.get(c, 0) for c in s), dtype=np.int64, count=len(s))
           for s in (train, val)]
    return enc[0], enc[1], vocab


def windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping (input, next-character target) windows of length ``context``."""
    n = (len(ids) - 1) // context
    if n < 1:
        raise LnlabError(f"pystdlib: a split of {len(ids)} characters is shorter than one "
                         f"window of context={context} (+1); raise chars or lower context")
    x = ids[: n * context].reshape(n, context)
    y = ids[1: n * context + 1].reshape(n, context)
    return x, y


def load_pystdlib(opts: Options, seed: int) -> Dataset:
    """``pystdlib:chars=200000,context=64,val_frac=0.1`` (see the module docstring)."""
    del seed  # a fixed corpus and a fixed split
    chars = opts.get_int("chars", 200_000, lo=64)
    context = opts.get_int("context", 64, lo=2)
    val_frac = opts.get_float("val_frac", 0.1, lo=0, hi=1, lo_open=True, hi_open=True)
    opts.done()
    text, files = stdlib_text(chars)
    cut = round(len(text) * (1 - val_frac))
    tr_ids, va_ids, vocab = encode_chars(text[:cut], text[cut:])
    x_tr, y_tr = windows(tr_ids, context)
    x_va, y_va = windows(va_ids, context)
    name = f"pystdlib:chars={chars},context={context},val_frac={val_frac}"
    return as_dataset(x_tr, y_tr, x_va, y_va, name=name, kind="tokens",
                      num_classes=len(vocab), vocab_size=len(vocab),
                      extra={"vocab": vocab, "files": files,
                             "python": ".".join(map(str, sys.version_info[:2]))})
