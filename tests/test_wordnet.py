"""The WordNet definition-classification loader, on a small data.noun file written here."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lnlab.data import load_dataset
from lnlab.data.wordnet import DEFAULT_PATH, parse_data_noun
from lnlab.errors import LnlabError

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

HEADER = ("  1 This software and database is being provided to you, the LICENSEE, by  \n"
          "  2 Princeton University under the following license.  \n")
# lexicographer file numbers: 04 act, 05 animal, 18 person, 20 plant
WORDS = {"04": "act", "05": "animal", "18": "person", "20": "plant"}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "the", "of", "any", "and", "that", "who",
         "is", "kind", "small", "large", "tree", "bird", "doing", "someone", *WORDS.values()]


def _line(offset: int, lex: str, gloss: str) -> str:
    return f"{offset:08d} {lex} n 01 w{offset} 0 000 | {gloss}  \n"


def write_data_noun(path: Path, per_class: int = 12, duplicate: bool = True) -> Path:
    lines = [HEADER]
    off = 100
    for lex, word in WORDS.items():
        for i in range(per_class):
            gloss = f"a {word} kind {i} of the {word}"
            if i % 3 == 0:
                gloss += f'; "the {word} is small"; "another example"'
            lines.append(_line(off, lex, gloss))
            off += 1
    if duplicate:  # the same definition in two classes: ambiguous, must be dropped
        lines.append(_line(off, "04", "a kind of doing that is large"))
        lines.append(_line(off + 1, "05", "a kind of doing that is large"))
    path.write_text("".join(lines))
    return path


def write_tokenizer(path: Path, bert_style: bool = True) -> Path:
    import transformers as tf
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(VOCAB)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.normalizer = normalizers.Lowercase()
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    kw = {}
    if bert_style:
        t.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        kw = {"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    else:
        kw = {"eos_token": "[SEP]"}  # GPT-style: no padding token at all
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", **kw)
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(path))
    # resolve_checkpoint wants a checkpoint directory: config + safetensors weights
    (path / "config.json").write_text('{"model_type": "bert"}')
    (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, Path]:
    return write_data_noun(tmp_path / "data.noun"), write_tokenizer(tmp_path / "tok")


def spec(data: Path, tok: Path, **kw: object) -> str:
    opts = {"path": data, "tokenizer": tok, "classes": "act+animal+person+plant",
            "n_train": 24, "n_test": 12, "length": 8, **kw}
    return "wordnet:" + ",".join(f"{k}={v}" for k, v in opts.items())


def test_parse_skips_header_and_examples(fake: tuple[Path, Path]) -> None:
    rows = list(parse_data_noun(fake[0]))
    assert len(rows) == 4 * 12 + 2
    assert rows[0] == ("act", "a act kind 0 of the act")  # the quoted examples are gone
    assert collections.Counter(c for c, _ in rows) == {"act": 13, "animal": 13, "person": 12,
                                                       "plant": 12}


def test_load_balanced_disjoint_tokenized(fake: tuple[Path, Path]) -> None:
    data, tok = fake
    ds = load_dataset(spec(data, tok))
    assert ds.info.kind == "tokens" and ds.info.num_classes == 4
    assert ds.x_train.shape == (24, 8) and ds.x_test.shape == (12, 8)
    assert torch.bincount(ds.y_train).tolist() == [6] * 4
    assert torch.bincount(ds.y_test).tolist() == [3] * 4
    tr, te = ds.extra["text_train"], ds.extra["text_test"]
    assert not set(tr) & set(te)
    assert "a kind of doing that is large" not in tr + te  # duplicated definition dropped
    # labels match the class named in the text; ids are the tokenizer's, [CLS] first
    names = ds.extra["classes"]
    for text, y in zip(tr, ds.y_train.tolist(), strict=True):
        assert text.split()[1] == names[y].removeprefix("noun.")
    assert (ds.x_train[:, 0] == 2).all()
    assert ds.extra["pad_id"] == 0 and ds.info.vocab_size == len(VOCAB)
    first = ds.x_train[0].tolist()
    words = ["[CLS]", *tr[0].lower().split(), "[SEP]"]
    if len(words) > 8:  # truncation keeps the closing [SEP]
        words = [*words[:7], "[SEP]"]
    want = [VOCAB.index(w) if w in VOCAB else 1 for w in words]
    assert first[:len(want)] == want


def test_split_is_deterministic_per_seed(fake: tuple[Path, Path]) -> None:
    data, tok = fake
    a, b = load_dataset(spec(data, tok, seed=3)), load_dataset(spec(data, tok, seed=3))
    c = load_dataset(spec(data, tok, seed=4))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.extra["text_test"] != c.extra["text_test"]


def test_truncation_counted(fake: tuple[Path, Path]) -> None:
    data, tok = fake
    ds = load_dataset(spec(data, tok, length=6))  # "[CLS] a act kind 0 of the act [SEP]" = 9
    assert ds.extra["truncated_share"]["train"] == 1.0
    assert (ds.x_train[:, 5] == 3).all()  # truncation keeps the closing [SEP]


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(per_train=st.integers(1, 8), per_test=st.integers(1, 4), seed=st.integers(0, 50))
def test_split_property(fake: tuple[Path, Path], per_train: int, per_test: int,
                        seed: int) -> None:
    data, tok = fake
    ds = load_dataset(spec(data, tok, n_train=4 * per_train, n_test=4 * per_test, seed=seed))
    assert torch.bincount(ds.y_train, minlength=4).tolist() == [per_train] * 4
    assert torch.bincount(ds.y_test, minlength=4).tolist() == [per_test] * 4
    assert not set(ds.extra["text_train"]) & set(ds.extra["text_test"])


def test_gpt_style_tokenizer_pads_with_eos(tmp_path: Path) -> None:
    data = write_data_noun(tmp_path / "data.noun")
    tok = write_tokenizer(tmp_path / "gpt", bert_style=False)
    ds = load_dataset(spec(data, tok, length=12))
    assert ds.extra["pad_id"] == 3
    assert (ds.x_train[:, -1] == 3).all()


@pytest.mark.parametrize(("kw", "match"), [
    ({"classes": "act+unicorn"}, "unknown class 'unicorn'"),
    ({"classes": "act"}, "at least 2"),
    ({"n_train": 400}, "fewer than"),
    ({"n_test": 3}, "at least one per class"),
    ({"colour": "red"}, "unknown option 'colour'"),
])
def test_bad_specs(fake: tuple[Path, Path], kw: dict, match: str) -> None:
    with pytest.raises(LnlabError, match=match):
        load_dataset(spec(*fake, **kw))


def test_missing_wordnet_is_a_clear_error(tmp_path: Path) -> None:
    tok = write_tokenizer(tmp_path / "tok")
    with pytest.raises(LnlabError, match="wordnet-base"):
        load_dataset(spec(tmp_path / "nope" / "data.noun", tok))


def test_malformed_line(tmp_path: Path) -> None:
    p = tmp_path / "data.noun"
    p.write_text(HEADER + "00000100 04 n 01 walk 0 000 no gloss bar here\n")
    with pytest.raises(LnlabError, match="not a WordNet data line"):
        list(parse_data_noun(p))
    p.write_text(HEADER + _line(100, "99", "a thing"))
    with pytest.raises(LnlabError, match="unknown lexicographer file 99"):
        list(parse_data_noun(p))


@pytest.mark.skipif(not DEFAULT_PATH.is_file(), reason="WordNet 3.0 (wordnet-base) not installed")
def test_real_wordnet_counts() -> None:
    """Synset counts per lexicographer file, independent of the parser: counted from the
    file's second column directly."""
    lines = [ln for ln in DEFAULT_PATH.read_text(errors="replace").splitlines()
             if ln and not ln.startswith(" ")]
    direct = collections.Counter(ln.split()[1] for ln in lines)
    parsed = collections.Counter(c for c, _ in parse_data_noun(DEFAULT_PATH))
    assert parsed["artifact"] == direct["06"] and parsed["person"] == direct["18"]
    assert parsed["plant"] == direct["20"] and parsed["act"] == direct["04"]
    assert sum(parsed.values()) == len(lines) == 82115
