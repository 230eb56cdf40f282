"""One grammar for every ``name[:k=v,...]`` string: lnlab.specs and the four parsers on it."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnlab.data.base import Options, split_spec
from lnlab.errors import LnlabError
from lnlab.models import parse_model_spec
from lnlab.models.hf_classifier import parse_hf_model
from lnlab.norms import parse_spec
from lnlab.specs import (
    MAX_INT,
    Option,
    SpecError,
    parse_bool,
    parse_float,
    parse_int,
    parse_options,
    split_items,
)
from lnlab.specs import split_spec as generic_split


def test_spec_error_is_the_user_error():
    assert issubclass(SpecError, LnlabError) and issubclass(SpecError, ValueError)


@pytest.mark.parametrize("text, value", [("3", 3), ("-2", -2), ("+7", 7), (" 12 ", 12)])
def test_parse_int_accepts_plain_ascii(text, value):
    assert parse_int(text) == value


@pytest.mark.parametrize("text", ["１", "٣", "1_000", "1e3", "3.0", "", "0x10", "²"])
def test_parse_int_refuses_what_python_int_would_bend(text):
    with pytest.raises(SpecError):
        parse_int(text)


@pytest.mark.parametrize("text", ["nan", "NaN", "１.5", "1_0.0", "0x1p3", "", "e5"])
def test_parse_float_refuses(text):
    with pytest.raises(SpecError):
        parse_float(text)


def test_parse_bool_spellings():
    assert [parse_bool(s) for s in ("1", "TRUE", "yes", "on", "0", "False", "no", "off")] == \
        [True] * 4 + [False] * 4
    with pytest.raises(SpecError, match="boolean"):
        parse_bool("maybe")


@pytest.mark.parametrize("spec, match", [
    ("groupln:groups=１", "non-ASCII character '１'"),          # Python's int() says 1
    ("groupln:groups=99999999999999999999", "far too large"),
    ("layernorm:eps=inf", "finite"),
    ("layernorm:eps=nan", "expected a number"),
    ("layernorm:eps=1,eps=2", "given twice"),
    ("adanorm:C=[2", "unbalanced"),
])
def test_norm_specs_share_the_checks(spec, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(spec)


@pytest.mark.parametrize("spec, match", [
    ("mlp:width=99999999999999999999", r"out of range; it must be in \[1, 1048576\]"),
    ("mlp:width=5000000", r"out of range; it must be in \[1, 1048576\]"),
    ("mlp:depth=１", "non-ASCII"),
    ("mlp:norm=groupln;groups=２", "non-ASCII"),
    ("transformer:dropout=nan", "expected a number"),
    ("hf:bert:layers=0", "out of range"),
    ("hf:bert:dim=99999999999999999999", "hf option dim=.* is out of range"),
    ("hf:bert:norm=rmsnorm", "unknown option 'norm' for model 'hf'"),
    ("hf:", "needs an architecture"),
    ("hf:b\x00rt", "not an architecture name"),
    ("hf:" + "a" * 5000, "not an architecture name"),
    ("hf:./ckpt:layers=2", "hf:PATH takes no options"),
    ("hf:./" + "a" * 5000 + ":layers=2", "hf:PATH takes no options"),
])
def test_model_specs_share_the_checks(spec, match):
    with pytest.raises(SpecError, match=match):
        parse_model_spec(spec)


def test_hf_specs_parse_to_model_specs(tmp_path):
    ms = parse_model_spec("hf:GPT-Neo:layers=2")
    assert (ms.name, ms.source, ms.path, ms.options["layers"]) == ("hf", "gpt_neo", False, 2)
    assert str(ms) == "hf:gpt_neo:layers=2"
    assert ms.full() == "hf:gpt_neo:layers=2,dim=32,heads=4,dropout=0"
    assert parse_model_spec(str(ms)) == ms
    assert parse_hf_model("hf:bert") == ("bert", {"layers": 3, "dim": 32, "heads": 4,
                                                  "dropout": 0.0})
    p = parse_model_spec(f"hf:{tmp_path}")
    assert p.path and p.source == str(tmp_path) and p.options == {}
    assert parse_model_spec("hf:./ckpt").path  # a path, even before it exists


def test_case_of_choices_and_canonical_round_trip():
    ms = parse_model_spec("mlp:residual=PRE,act=GELU,norm=[groupln:groups=4]")
    assert ms.options["residual"] == "pre" and ms.options["act"] == "gelu"
    assert parse_model_spec(str(ms)) == ms and parse_model_spec(ms.full()) == ms


def test_data_specs_use_the_same_splitter():
    assert split_spec("clusters:n=10,dim=2", ["clusters"]) == ("clusters", {"n": "10",
                                                                            "dim": "2"})
    assert split_spec(r"C:\data\x.csv:label=y") == (r"C:\data\x.csv", {"label": "y"})
    assert split_spec("dir:with:colons/x.npz") == ("dir:with:colons/x.npz", {})
    opts = Options("clusters", {"n": "１０"})
    with pytest.raises(SpecError, match="non-ASCII"):
        opts.get_int("n", 5, lo=1)
    with pytest.raises(SpecError, match=r"must be in \(0, 1\)"):
        Options("digits", {"test_frac": "1"}).get_float("test_frac", 0.2, lo=0, hi=1,
                                                         lo_open=True, hi_open=True)


def test_split_items_respects_brackets_and_reports_bad_items():
    assert split_items("a=1,b=[x:y=2,z=3]") == [("a", "1"), ("b", "[x:y=2,z=3]")]
    for bad in ("a", "=1", "a=1,a=2", "a=[1", "a=1]"):
        with pytest.raises(SpecError):
            split_items(bad)


def test_parse_options_types_defaults_and_unknown_keys():
    schema = (Option("n", "int", 4, lo=1), Option("p", "float", 0.5, lo=0, hi=1),
              Option("on", "bool", False), Option("mode", "choice", "a", choices=("a", "b")))
    assert parse_options([("n", "7"), ("mode", "B")], schema, owner="toy") == \
        {"n": 7, "p": 0.5, "on": False, "mode": "b"}
    with pytest.raises(SpecError, match="valid options: n, p, on, mode"):
        parse_options([("q", "1")], schema, owner="toy")
    with pytest.raises(SpecError, match=r"toy option p=2 is out of range; it must be in \[0, 1\]"):
        parse_options([("p", "2")], schema, owner="toy")
    assert Option("big", "int", 0).parse(str(MAX_INT)) == MAX_INT
    for big in (MAX_INT + 1, -MAX_INT - 1):
        with pytest.raises(SpecError, match="far too large"):
            Option("big", "int", 0).parse(str(big))


# Random strings built from the characters that matter to the grammar, plus any unicode.
_ALPHABET = st.sampled_from([*":,=;[]. -_/1２٣eE+", "hf", "mlp", "groupln", "norm", "layers",
                             "width", "inf", "nan", "clusters", "n", "true"])
_SPECS = st.one_of(st.lists(_ALPHABET, max_size=12).map("".join), st.text(max_size=20))


@settings(max_examples=300, deadline=None)
@given(_SPECS)
def test_every_parser_gives_a_value_or_the_user_error(text):
    """Fuzz: each spec parser returns a parsed object or raises SpecError, nothing else."""
    for parse in (parse_spec, parse_model_spec, lambda s: split_spec(s, ["clusters"]),
                  lambda s: generic_split(s, what="x", path_like=True)):
        with contextlib.suppress(SpecError):
            parse(text)
    if text.startswith("hf:"):
        with contextlib.suppress(SpecError):
            parse_hf_model(text)
