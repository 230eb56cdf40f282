"""Every registered experiment's claims follow the pre-registration contract."""

import json
import math

import pytest

from lnlab.experiments import available, get_experiment
from lnlab.experiments.claims import Check, CheckBound, Effect, Equivalence, NonInferiority
from lnlab.experiments.framework import MIN_QUICK_SEEDS

EXPERIMENTS = available()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_claims_are_pre_registered_with_the_new_rules(name):
    exp = get_experiment(name)
    assert exp.claims
    for c in exp.claims:
        d = json.loads(json.dumps(c.to_dict(), allow_nan=False))
        assert d["measured_by"].endswith(".analyze"), c.id
        assert d["rule_text"] and d["kind"] in ("check", "empirical")
        if c.kind == "check":
            assert isinstance(c.rule, Check | CheckBound), c.id
            assert "tolerance" in d and math.isfinite(d["tolerance"]), c.id
        else:
            assert isinstance(c.rule, Effect | Equivalence | NonInferiority), c.id
            assert d["minimal_effect"] > 0, c.id  # no margin 0
            assert d["direction"] in (">", "<", "!=", "="), c.id
            assert c.rule.min_n >= 3, c.id
        for q in c.requires:
            assert any(o.id == q and o.kind == "check" for o in exp.claims), (c.id, q)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_scale_has_enough_seeds_for_empirical_claims(name):
    exp = get_experiment(name)
    if any(c.kind == "empirical" for c in exp.claims):
        assert exp.seeds["quick"] >= MIN_QUICK_SEEDS
