"""Random spec strings fed to every public spec parser: a valid object or LnlabError.

The parsers are reached through their public functions only (``lnlab.norms.parse_spec``,
``lnlab.models.parse_model_spec``, the dataset spec splitter and option readers, the
``hf:`` spec), so the property holds whatever the parsers look like inside.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lnlab.errors import LnlabError

NAMES = ["layernorm", "rmsnorm", "groupln", "adanorm", "detachnorm", "none", "mlp",
         "transformer", "cnn", "lnnet", "clusters", "random", "tokens", "hf:bert", "hf:gpt2",
         "LayerNorm", "layer-norm", ""]
KEYS = ["eps", "groups", "affine", "bias", "k", "detach", "depth", "width", "norm",
        "residual", "final_norm", "act", "n", "dim", "classes", "layers", "heads", "dropout",
        "spread", "test_frac", "x"]
VALUES = ["1", "0", "-1", "2", "1e-5", "nan", "inf", "-inf", "true", "no", "１", "٣",
          "99999999999999999999", "1e999", "0x10", "1_000", " 3 ", "", "a", "pre", "post",
          "layernorm;eps=1e-3", "rmsnorm", "3.5", "=", ":", ","]


@st.composite
def spec_strings(draw: st.DrawFn) -> str:
    """Mostly near-valid specs (a real name, real keys, odd values), sometimes noise."""
    if draw(st.booleans()):
        return draw(st.text(max_size=40))
    name = draw(st.sampled_from(NAMES))
    items = draw(st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)),
                          max_size=4))
    sep = draw(st.sampled_from([",", ";", ", "]))
    opts = sep.join(f"{k}={v}" for k, v in items)
    return f"{name}:{opts}" if opts or draw(st.booleans()) else name


def _norm(spec: str) -> object:
    from lnlab.norms import parse_spec

    return parse_spec(spec)


def _model(spec: str) -> object:
    from lnlab.models import parse_model_spec

    return parse_model_spec(spec)


def _data(spec: str) -> object:
    """The dataset spec, read the way ``load_dataset`` reads it, without generating data."""
    from lnlab.data.base import Options, split_spec

    name, raw = split_spec(spec, ("clusters", "random", "tokens"))
    opts = Options(name, raw)
    for key in list(raw):
        if key in ("n", "dim", "classes", "seed"):
            opts.get_int(key, 1, lo=1)
        elif key in ("spread", "test_frac"):
            opts.get_float(key, 0.5, lo=0, hi=1, lo_open=True, hi_open=True)
        else:
            opts.get_str(key, None)
    opts.done()
    return name, raw


def _hf(spec: str) -> object:
    from lnlab.models.hf_classifier import parse_hf_model

    return parse_hf_model(spec if spec.startswith("hf:") else "hf:" + spec)


PARSERS = {"norm": _norm, "model": _model, "data": _data, "hf": _hf}


@pytest.mark.parametrize("kind", sorted(PARSERS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=spec_strings())
def test_parser_returns_a_value_or_a_user_error(kind, spec):
    try:
        out = PARSERS[kind](spec)
    except LnlabError as e:
        assert str(e).strip(), "a user error must say what is wrong"
        assert "\n" not in str(e).strip()
        return
    assert out is not None


@pytest.mark.parametrize("kind", sorted(PARSERS))
@pytest.mark.parametrize("digit", ["１", "٣", "²"])
def test_non_ascii_digits_are_refused(kind, digit):
    """``int()`` accepts full-width and other Unicode digits; a spec must not."""
    spec = {"norm": f"groupln:groups={digit}", "model": f"mlp:depth={digit}",
            "data": f"clusters:n={digit}", "hf": f"hf:bert:layers={digit}"}[kind]
    with pytest.raises(LnlabError):
        PARSERS[kind](spec)
