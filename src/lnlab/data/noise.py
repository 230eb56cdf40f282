"""Label noise: flip an exact share of labels to a uniformly drawn *other* class.

The memorisation analyses (Singhal & Kim) need to know which samples are noisy and what their
true labels were, so both are returned with the noisy labels and stored with each run.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from lnlab.errors import LnlabError


class NoisyLabels(NamedTuple):
    """``labels``: what the model is trained on; ``mask``: True where ``labels != original``."""

    labels: torch.Tensor
    mask: torch.Tensor
    original: torch.Tensor


def _check(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise LnlabError("labels must be a 1-D integer tensor")
    if num_classes < 2:
        raise LnlabError(f"label noise needs at least 2 classes, got {num_classes}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise LnlabError(f"labels must lie in [0, {num_classes})")
    return y.to(torch.int64)


def apply_label_noise(y: torch.Tensor, rate: float, num_classes: int,
                      seed: int) -> NoisyLabels:
    """Give exactly ``round(rate * n)`` samples a new label drawn uniformly from the others.

    Which samples and which new labels depend only on ``seed`` (a private generator, so the
    global RNG is untouched).  ``rate`` must be in [0, 1).
    """
    if not isinstance(rate, (int, float)) or not math.isfinite(rate) or not 0 <= rate < 1:
        raise LnlabError(f"noise rate must be in [0, 1), got {rate}")
    y = _check(y, num_classes)
    n = len(y)
    k = round(rate * n)
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=g)[:k]
    # y + s (mod C) with s uniform in 1..C-1 is uniform over the C-1 other classes.
    shift = torch.randint(1, num_classes, (k,), generator=g)
    labels = y.clone()
    labels[idx] = (y[idx] + shift) % num_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return NoisyLabels(labels, mask, y.clone())


def random_labels(y: torch.Tensor, num_classes: int, seed: int) -> NoisyLabels:
    """Redraw every label uniformly from all classes (Zhang et al.'s random-label setting).

    About 1/C of the samples keep their label by chance; ``mask`` marks those that changed.
    """
    y = _check(y, num_classes)
    g = torch.Generator().manual_seed(int(seed))
    labels = torch.randint(0, num_classes, (len(y),), generator=g)
    return NoisyLabels(labels, labels != y, y.clone())
