"""Label-noise measurements: on the noisy samples, memorized vs recovered vs random predictions.

Pure functions of predictions and labels, as integer counts (so the shares are exact and sum
to 1). Singhal & Kim's protocol (``lnlab.experiments.memorization.removal``) records them every
epoch.
"""

from __future__ import annotations

from fractions import Fraction

import torch

from lnlab.errors import LnlabError

__all__ = ["noisy_counts", "shares_from_counts"]


def noisy_counts(preds: torch.Tensor, noisy_labels: torch.Tensor, true_labels: torch.Tensor,
                 mask: torch.Tensor) -> dict[str, int]:
    """Counts on the noisy samples: prediction = noisy label (mem), = true label (rec), else
    (rand). Noisy and true labels differ on every noisy sample, so the three are disjoint."""
    m = mask.bool()
    p, yn, yt = preds[m], noisy_labels[m], true_labels[m]
    if bool((yn == yt).any()):
        raise LnlabError("a sample marked noisy has its true label; the shares would overlap")
    mem = int((p == yn).sum())
    rec = int((p == yt).sum())
    # counted on its own, not as n − mem − rec, so that mem + rec + rand = n is a real check
    rand = int(((p != yn) & (p != yt)).sum())
    return {"n_noisy": int(m.sum()), "n_mem": mem, "n_rec": rec, "n_rand": rand}


def shares_from_counts(counts: dict[str, int]) -> dict[str, Fraction]:
    """Exact shares (``Fraction``) of memorization, recovery and random; they sum to 1."""
    n = counts["n_noisy"]
    if n <= 0:
        raise LnlabError("no noisy samples: memorization shares are undefined")
    return {k: Fraction(counts[f"n_{k}"], n) for k in ("mem", "rec", "rand")}
