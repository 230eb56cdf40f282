"""Built-in datasets: MNIST-1D, scikit-learn digits and three synthetic tasks.

None of them downloads anything.  MNIST-1D is generated procedurally by the ``mnist1d``
package; the generated arrays are cached on disk (``$LNLAB_CACHE_DIR`` or ``~/.cache/lnlab``)
so that a sweep of hundreds of runs pays the generation cost once.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import random as _pyrandom
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lnlab.data.base import Dataset, Options, as_dataset, split_indices
from lnlab.data.text import load_pystdlib
from lnlab.data.wordnet import load_wordnet
from lnlab.errors import LnlabError
from lnlab.io import save_npz, write_with
from lnlab.limits import array_bytes, require_memory


def cache_dir() -> Path:
    """Where generated arrays are cached: ``$LNLAB_CACHE_DIR`` or ``~/.cache/lnlab``."""
    env = os.environ.get("LNLAB_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "lnlab"


def _cached_arrays(key: str, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load ``key`` from the cache or build it and store it atomically (temp file + replace).

    Concurrent workers may build the same entry; the last ``os.replace`` wins and every reader
    sees a complete file.  A cache that cannot be written is not an error.
    """
    path = cache_dir() / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            pass  # corrupt or foreign file: rebuild it
    arrays = make()
    with contextlib.suppress(LnlabError):  # a cache that cannot be written is not an error
        write_with(path, lambda tmp: save_npz(tmp, **arrays))
    return arrays


def load_mnist1d(opts: Options, seed: int) -> Dataset:
    """MNIST-1D (Greydanus 2020): 40-sample 1-D signals of 10 digit templates.

    Defaults give the standard dataset (5,000 samples, generator seed 42, 4,000/1,000 split).
    ``size`` makes larger sets (rounded down to a multiple of 10, the package makes
    ``size // 10`` samples per class); the run seed does not change the data.
    """
    del seed  # the standard dataset is fixed; use the option to change it
    size = opts.get_int("size", 5000, lo=20)
    gen_seed = opts.get_int("seed", 42, lo=0)
    opts.done()
    try:  # the version names the cache entry; importing mnist1d (matplotlib!) costs ~1 s
        version = importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError:
        raise LnlabError("dataset 'mnist1d' needs the mnist1d package: "
                         "pip install 'lnlab[data]'") from None

    def make() -> dict[str, np.ndarray]:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = size
        args.seed = gen_seed
        # make_dataset seeds and draws from the *global* numpy / random generators; keep the
        # caller's streams untouched.
        np_state, py_state = np.random.get_state(), _pyrandom.getstate()
        try:
            d = make_dataset(args)
        finally:
            np.random.set_state(np_state)
            _pyrandom.setstate(py_state)
        return {"x": d["x"].astype(np.float32), "y": d["y"].astype(np.int64),
                "x_test": d["x_test"].astype(np.float32),
                "y_test": d["y_test"].astype(np.int64)}

    a = _cached_arrays(f"mnist1d-{version}-n{size}-s{gen_seed}", make)
    name = "mnist1d" if (size, gen_seed) == (5000, 42) else f"mnist1d:size={size},seed={gen_seed}"
    return as_dataset(a["x"], a["y"], a["x_test"], a["y_test"], name=name, kind="vector",
                      num_classes=10)


def load_digits(opts: Options, seed: int) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images), pixel values scaled to [0, 1].

    The split is fixed (seeded with 0, 20% test) so every run sees the same test set.
    """
    del seed
    test_frac = opts.get_float("test_frac", 0.2, lo=0, hi=1, lo_open=True, hi_open=True)
    opts.done()
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError:
        raise LnlabError("dataset 'digits' needs scikit-learn: pip install 'lnlab[data]'") from None
    d = _load()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    tr, te = split_indices(len(y), test_frac, 0)
    return as_dataset(x[tr], y[tr], x[te], y[te], name="digits", kind="image", num_classes=10)


def load_clusters(opts: Options, seed: int) -> Dataset:
    """Gaussian clusters: ``classes`` centres drawn from N(0, I_dim), points at std ``spread``.

    With dim=16 the centres are ~5.7 apart, so spread=1 is easy and spread=3 overlaps.
    """
    n = opts.get_int("n", 2000, lo=4)
    dim = opts.get_int("dim", 16, lo=1)
    classes = opts.get_int("classes", 4, lo=2)
    spread = opts.get_float("spread", 1.0, lo=0)
    test_frac = opts.get_float("test_frac", 0.2, lo=0, hi=1, lo_open=True, hi_open=True)
    seed = opts.get_int("seed", seed, lo=0)
    opts.done()
    require_memory(4 * array_bytes((n, dim), 8), f"clusters with n={n}, dim={dim}")
    rng = np.random.default_rng([seed, 1])
    centres = rng.standard_normal((classes, dim))
    y = rng.permutation(np.arange(n) % classes)
    x = centres[y] + spread * rng.standard_normal((n, dim))
    tr, te = split_indices(n, test_frac, seed)
    return as_dataset(x[tr], y[tr], x[te], y[te], name=f"clusters:n={n},dim={dim},"
                      f"classes={classes},spread={spread}", kind="vector", num_classes=classes)


def load_random(opts: Options, seed: int) -> Dataset:
    """Random points N(0, I_dim) with uniformly random labels: pure memorisation."""
    n = opts.get_int("n", 1000, lo=4)
    dim = opts.get_int("dim", 32, lo=1)
    classes = opts.get_int("classes", 10, lo=2)
    test_frac = opts.get_float("test_frac", 0.2, lo=0, hi=1, lo_open=True, hi_open=True)
    seed = opts.get_int("seed", seed, lo=0)
    opts.done()
    require_memory(4 * array_bytes((n, dim), 8), f"random with n={n}, dim={dim}")
    rng = np.random.default_rng([seed, 2])
    x = rng.standard_normal((n, dim))
    y = rng.integers(0, classes, size=n)
    tr, te = split_indices(n, test_frac, seed)
    return as_dataset(x[tr], y[tr], x[te], y[te], name=f"random:n={n},dim={dim},"
                      f"classes={classes}", kind="vector", num_classes=classes)


def _motif_sets(rng: np.random.Generator, classes: int, motif: int, pool: int) -> np.ndarray:
    """``classes`` distinct ordered motifs of ``motif`` distinct tokens from ids 1..pool."""
    if math.perm(pool, motif) < classes:
        raise LnlabError("tokens: too few motif tokens for that many classes; raise vocab")
    seen: set[tuple[int, ...]] = set()
    out = []
    while len(out) < classes:
        m = tuple(int(t) for t in rng.choice(pool, motif, replace=False) + 1)
        if m not in seen:
            seen.add(m)
            out.append(m)
    return np.array(out, dtype=np.int64)


def _occurs(rows: np.ndarray, motifs: np.ndarray) -> np.ndarray:
    """(n, K) bool: does motif k occur as a contiguous run in row i."""
    win = np.lib.stride_tricks.sliding_window_view(rows, motifs.shape[1], axis=1)  # n, W, m
    return (win[:, :, None, :] == motifs[None, None]).all(-1).any(1)


def load_tokens(opts: Options, seed: int) -> Dataset:
    """Token-sequence classification: which of K planted motifs occurs in the sequence.

    Stand-in for the documents' text tasks.  Each class has a motif of ``motif`` tokens (by
    default the motifs use disjoint tokens; ``pool=`` draws them from a smaller shared pool).
    Every sequence holds its class motif once, contiguous and in order, plus the motif tokens
    of ``distractors`` other classes, scattered in a scrambled order, over random background
    tokens.  A bag of words sees the tokens of 1 + distractors classes and cannot tell which
    is the label (it reaches about 1 / (1 + distractors)); order and adjacency decide, which
    attention must learn from positions.  Exactly one motif occurs per row (rows where a
    scattered distractor formed a motif by chance are redrawn).  With the defaults a 2-layer
    Pre-LN transformer (dim 32, mean pooling, Adam 3e-3) stays near 50% test accuracy for
    ~20 epochs, then learns adjacency and reaches ~88% by epoch 30.
    """
    vocab = opts.get_int("vocab", 64, lo=8)
    length = opts.get_int("length", 32, lo=4)
    n = opts.get_int("n", 8000, lo=4)
    classes = opts.get_int("classes", 4, lo=2)
    motif = opts.get_int("motif", 2, lo=2)
    distractors = opts.get_int("distractors", 1, lo=0)
    pool = opts.get_int("pool", classes * motif, lo=motif)
    test_frac = opts.get_float("test_frac", 0.2, lo=0, hi=1, lo_open=True, hi_open=True)
    seed = opts.get_int("seed", seed, lo=0)
    opts.done()
    if vocab < pool + 3:
        raise LnlabError(f"tokens: vocab={vocab} too small for a pool of {pool} motif tokens "
                         f"({classes} classes x motif={motif} by default); need vocab >= "
                         f"{pool + 3} or a smaller pool=")
    if length < motif * (1 + distractors) + 1:
        raise LnlabError(f"tokens: length={length} too short for motif={motif} and "
                         f"distractors={distractors}; need >= {motif * (1 + distractors) + 1}")
    if distractors > classes - 1:
        raise LnlabError(f"tokens: distractors={distractors} must be <= classes - 1")
    require_memory(4 * array_bytes((n, length), 8), f"tokens with n={n}, length={length}")
    rng = np.random.default_rng([seed, 3])
    motifs = _motif_sets(rng, classes, motif, pool)
    y = rng.permutation(np.arange(n) % classes)
    rows = np.empty((n, length), dtype=np.int64)
    todo = np.arange(n)
    for _ in range(1000):
        for i in todo:
            row = rng.integers(pool + 1, vocab, size=length)
            start = int(rng.integers(0, length - motif + 1))
            row[start:start + motif] = motifs[y[i]]
            free = np.setdiff1d(np.arange(length), np.arange(start, start + motif))
            others = rng.permutation(np.delete(np.arange(classes), y[i]))[:distractors]
            if distractors:
                toks = np.concatenate([rng.permutation(motifs[c]) for c in others])
                row[rng.choice(free, len(toks), replace=False)] = toks
            rows[i] = row
        hits = _occurs(rows[todo], motifs)
        ok = hits.sum(1) == 1
        todo = todo[~ok]
        if not len(todo):
            break
    else:  # pragma: no cover - needs a pathological spec
        raise LnlabError("tokens: could not place motifs without ambiguity; raise length")
    tr, te = split_indices(n, test_frac, seed)
    return as_dataset(rows[tr], y[tr], rows[te], y[te], name=f"tokens:vocab={vocab},"
                      f"length={length},n={n},classes={classes}", kind="tokens",
                      num_classes=classes, vocab_size=vocab, extra={"motifs": motifs})


BUILTIN: dict[str, Callable[[Options, int], Dataset]] = {
    "mnist1d": load_mnist1d,
    "digits": load_digits,
    "clusters": load_clusters,
    "random": load_random,
    "tokens": load_tokens,
    "pystdlib": load_pystdlib,
    "wordnet": load_wordnet,
}


