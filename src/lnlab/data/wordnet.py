"""WordNet 3.0 noun definitions, labelled by lexicographer file: real, human-written text.

Singhal & Kim fine-tune on human-written text classification (Emotions, TweetTopic, News),
none of which can be downloaded here. WordNet 3.0 is installed from the operating system's
package (Debian ``wordnet-base``: ``/usr/share/wordnet/data.noun``) and holds 82,115 noun
synsets, each with a definition written by a lexicographer and filed under one of 26
lexicographer files (``noun.artifact``, ``noun.person``, ``noun.plant``, ...). The task is
"what kind of thing does this definition describe": the input is the definition (the gloss up
to its first quoted example, so the example sentences, which often contain the word itself,
are left out) and the label is the lexicographer file.

Spec: ``wordnet:tokenizer=minilm,classes=artifact+person+plant+animal+act+communication,
n_train=2400,n_test=1200,length=32,seed=0,path=/usr/share/wordnet/data.noun``.

* ``classes``: lexicographer files without the ``noun.`` prefix, joined by ``+`` (default:
  the six largest, as many classes as Emotions has);
* ``n_train`` / ``n_test``: totals, drawn **balanced** per class (``n // classes`` each),
  from a seeded permutation of each class (``seed``; the train and test draws are disjoint);
* definitions that occur more than once among the chosen classes are dropped (they would
  leak between the splits or carry two labels);
* ``tokenizer``: a checkpoint name or directory whose tokenizer encodes the text
  (:func:`lnlab.models.pretrained.load_tokenizer`), padded / truncated to ``length`` tokens.
  The padding id is kept in ``extra["pad_id"]``.

License: WordNet 3.0 license (Princeton University; permissive, attribution required), see
``docs/data/wordnet.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lnlab.data.base import Dataset, Options, as_dataset
from lnlab.errors import LnlabError

__all__ = ["DEFAULT_CLASSES", "DEFAULT_PATH", "LEXNAMES", "load_wordnet", "parse_data_noun"]

DEFAULT_PATH = Path("/usr/share/wordnet/data.noun")
DEFAULT_CLASSES = ("artifact", "person", "plant", "animal", "act", "communication")
"""The six largest noun lexicographer files (11.6k, 11.1k, 8.0k, 7.5k, 6.7k, 5.6k synsets)."""

LEXNAMES = {3: "Tops", 4: "act", 5: "animal", 6: "artifact", 7: "attribute", 8: "body",
            9: "cognition", 10: "communication", 11: "event", 12: "feeling", 13: "food",
            14: "group", 15: "location", 16: "motive", 17: "object", 18: "person",
            19: "phenomenon", 20: "plant", 21: "possession", 22: "process", 23: "quantity",
            24: "relation", 25: "shape", 26: "state", 27: "substance", 28: "time"}
"""WordNet 3.0's noun lexicographer file numbers (``lexnames(5WN)``), without ``noun.``."""


def _definition(gloss: str) -> str:
    """The definition part of a gloss: everything before the first quoted example."""
    text = gloss.strip()
    cut = text.find('"')
    if cut >= 0:
        text = text[:cut]
    return " ".join(text.strip().rstrip(";").split())


def parse_data_noun(path: str | Path) -> Iterator[tuple[str, str]]:
    """(lexicographer class, definition) for every synset line of a ``data.noun`` file.

    Lines that start with a space are the license header. Each synset line is ``offset
    lex_filenum ss_type ... | gloss``; a line without a gloss or with an unknown file number
    is a format error.
    """
    p = Path(path)
    try:
        f = p.open(encoding="utf-8", errors="replace")
    except OSError as e:
        raise LnlabError(f"wordnet: cannot read {p}: {e.strerror or e}") from None
    with f:
        for i, line in enumerate(f, 1):
            if not line.strip() or line.startswith(" "):
                continue
            head, bar, gloss = line.partition("|")
            parts = head.split()
            if not bar or len(parts) < 3 or not parts[1].isdigit():
                raise LnlabError(f"wordnet: {p}:{i} is not a WordNet data line")
            lex = LEXNAMES.get(int(parts[1]))
            if lex is None:
                raise LnlabError(f"wordnet: {p}:{i} has unknown lexicographer file {parts[1]}")
            text = _definition(gloss)
            if text:
                yield lex, text


def _data_path(raw: str | None) -> Path:
    if raw:
        return Path(raw).expanduser()
    env = os.environ.get("LNLAB_WORDNET")
    return Path(env).expanduser() if env else DEFAULT_PATH


def load_wordnet(opts: Options, seed: int) -> Dataset:
    """``wordnet:tokenizer=...`` (see the module docstring)."""
    tok_spec = opts.get_str("tokenizer", "minilm")
    raw_classes = opts.get_str("classes", "+".join(DEFAULT_CLASSES)) or ""
    n_train = opts.get_int("n_train", 2400, lo=2)
    n_test = opts.get_int("n_test", 1200, lo=2)
    length = opts.get_int("length", 32, lo=4, hi=512)
    seed = opts.get_int("seed", seed, lo=0)
    path = _data_path(opts.get_str("path", None))
    opts.done()
    classes = [c.strip().removeprefix("noun.") for c in raw_classes.split("+") if c.strip()]
    unknown = [c for c in classes if c not in LEXNAMES.values()]
    if unknown:
        raise LnlabError(f"wordnet: unknown class {unknown[0]!r}; valid: "
                         f"{', '.join(sorted(LEXNAMES.values()))}")
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise LnlabError("wordnet: classes must name at least 2 different lexicographer files")
    if not path.is_file():
        raise LnlabError(f"wordnet: {path} not found; install WordNet 3.0 (Debian/Ubuntu: "
                         "apt-get install wordnet-base) or pass path=/.../data.noun")
    k = len(classes)
    per_train, per_test = n_train // k, n_test // k
    if per_train < 1 or per_test < 1:
        raise LnlabError(f"wordnet: n_train and n_test must be at least one per class ({k})")
    index = {c: i for i, c in enumerate(classes)}
    rows = [(index[c], t) for c, t in parse_data_noun(path) if c in index]
    counts: dict[str, int] = {}
    for _, t in rows:
        counts[t] = counts.get(t, 0) + 1
    rows = [(y, t) for y, t in rows if counts[t] == 1]  # no duplicated definitions
    by_class: list[list[str]] = [[] for _ in classes]
    for y, t in rows:
        by_class[y].append(t)
    short = [(c, len(v)) for c, v in zip(classes, by_class, strict=True)
             if len(v) < per_train + per_test]
    if short:
        c, n = short[0]
        raise LnlabError(f"wordnet: class {c!r} has {n} definitions in {path}, fewer than the "
                         f"{per_train + per_test} asked for (lower n_train / n_test)")
    rng = np.random.default_rng([seed, 11])
    tr_text: list[str] = []
    te_text: list[str] = []
    tr_y: list[int] = []
    te_y: list[int] = []
    for y, texts in enumerate(by_class):
        order = rng.permutation(len(texts))
        te_text += [texts[j] for j in order[:per_test]]
        tr_text += [texts[j] for j in order[per_test:per_test + per_train]]
        te_y += [y] * per_test
        tr_y += [y] * per_train
    # interleave the classes (the trainer shuffles anyway; this keeps slices representative)
    tr_perm = rng.permutation(len(tr_y))
    te_perm = rng.permutation(len(te_y))
    tr_text, tr_y = [tr_text[j] for j in tr_perm], [tr_y[j] for j in tr_perm]
    te_text, te_y = [te_text[j] for j in te_perm], [te_y[j] for j in te_perm]

    from lnlab.models.pretrained import load_tokenizer

    tok = load_tokenizer(tok_spec or "minilm")
    pad_id = tok.pad_token_id
    if pad_id is None:  # GPT-style tokenizers have no padding token; pad with end-of-text
        pad_id = tok.eos_token_id if tok.eos_token_id is not None else 0

    def encode(texts: list[str]) -> tuple[np.ndarray, float]:
        full = tok(texts, truncation=False)["input_ids"]
        enc = tok(texts, truncation=True, max_length=length)["input_ids"]
        out = np.full((len(texts), length), int(pad_id), dtype=np.int64)
        for i, ids in enumerate(enc):
            out[i, :len(ids)] = ids
        return out, sum(len(ids) > length for ids in full) / max(1, len(texts))

    x_tr, cut_tr = encode(tr_text)
    x_te, cut_te = encode(te_text)
    name = (f"wordnet:classes={'+'.join(classes)},n_train={per_train * k},"
            f"n_test={per_test * k},length={length},seed={seed}")
    return as_dataset(x_tr, np.array(tr_y), x_te, np.array(te_y), name=name, kind="tokens",
                      num_classes=k, vocab_size=len(tok),
                      extra={"classes": [f"noun.{c}" for c in classes], "pad_id": int(pad_id),
                             "tokenizer": tok_spec, "source": str(path),
                             "truncated_share": {"train": cut_tr, "test": cut_te},
                             "text_train": tr_text, "text_test": te_text})
