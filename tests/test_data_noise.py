"""Label noise: exact counts, labels drawn from the other classes, seeded, uniform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lnlab.data import apply_label_noise, random_labels
from lnlab.errors import LnlabError


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), k=st.integers(2, 12), rate=st.floats(0, 0.999),
       seed=st.integers(0, 2**31))
def test_noise_exact_count_other_class(n, k, rate, seed):
    y = torch.as_tensor(np.random.default_rng(seed).integers(0, k, n))
    out = apply_label_noise(y, rate, k, seed)
    assert int(out.mask.sum()) == round(rate * n)
    assert torch.equal(out.original, y)
    assert (out.labels[out.mask] != y[out.mask]).all()       # a different class ...
    assert torch.equal(out.labels[~out.mask], y[~out.mask])  # ... and only there
    if n:
        assert int(out.labels.min()) >= 0 and int(out.labels.max()) < k
    again = apply_label_noise(y, rate, k, seed)
    assert torch.equal(again.labels, out.labels) and torch.equal(again.mask, out.mask)


def test_noise_is_uniform_over_other_classes():
    # all samples class 0, rate 0.9 of 20000 -> 18000 flips spread over classes 1..4
    y = torch.zeros(20000, dtype=torch.int64)
    out = apply_label_noise(y, 0.9, 5, seed=3)
    counts = torch.bincount(out.labels[out.mask], minlength=5).double()
    assert counts[0] == 0
    expected = 18000 / 4
    chi2 = float(((counts[1:] - expected) ** 2 / expected).sum())
    assert chi2 < 16.3  # 3 degrees of freedom, p = 0.001
    # which samples flip is uniform too: both halves get about half of the flips
    assert abs(int(out.mask[:10000].sum()) - 9000) < 200


def test_noise_does_not_touch_global_rng():
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    apply_label_noise(torch.arange(10) % 3, 0.5, 3, seed=1)
    assert torch.equal(torch.rand(3), a)


def test_noise_seed_changes_selection():
    y = torch.arange(1000) % 10
    a, b = apply_label_noise(y, 0.1, 10, 0), apply_label_noise(y, 0.1, 10, 1)
    assert not torch.equal(a.mask, b.mask)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_noise_rate_out_of_range(rate):
    with pytest.raises(LnlabError, match=r"noise rate must be in \[0, 1\)"):
        apply_label_noise(torch.zeros(5, dtype=torch.int64), rate, 3, 0)


def test_noise_bad_labels():
    with pytest.raises(LnlabError, match="labels must lie"):
        apply_label_noise(torch.tensor([0, 5]), 0.5, 3, 0)
    with pytest.raises(LnlabError, match="at least 2 classes"):
        apply_label_noise(torch.tensor([0, 0]), 0.5, 1, 0)


def test_random_labels():
    y = torch.arange(6000) % 6
    out = random_labels(y, 6, seed=0)
    assert torch.equal(out.mask, out.labels != y) and torch.equal(out.original, y)
    assert int(out.labels.min()) >= 0 and int(out.labels.max()) < 6
    kept = 1 - float(out.mask.double().mean())
    assert abs(kept - 1 / 6) < 0.03  # chance agreement
    assert torch.equal(random_labels(y, 6, seed=0).labels, out.labels)
