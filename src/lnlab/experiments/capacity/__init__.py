"""LayerNorm's nonlinearity and the capacity of LN-Nets and LN-G (Ni et al., ICML 2024).

Method (``docs/papers/ni_nonlinearity.md``; claim numbers follow its §5). Four run kinds:

* ``theory`` (no training, one run per seed): the measurements behind claims 1–5 and 7 —
  LN's shift/scale invariance and non-additivity on Gaussian vectors (claim 1); random affine
  maps of every output size never lower LSSR (claim 2, :mod:`lnlab.analysis.ssr`); the XOR
  set, whose LSSR is infinite for every affine image, gets a finite LSSR after one
  Linear(2→3)+LN layer, random Linear(3→3)+LN layers lower LSSR in a share of draws, and the
  constructed LN-Net drives it to 0 (claim 3); the width-3 construction
  (:mod:`lnlab.analysis.lnnet`) on random problems of m points in d dimensions with K classes:
  layers, width and training accuracy (claim 4); the VC demo, every labelling of L+2 points
  with L LN layers (claim 5); and the Hessian measure H of LN-G over Gaussian inputs in
  d = 64 for g = 1..16 groups, medians, against ‖J‖² (claim 7, :mod:`lnlab.analysis.nonlinearity`).
* ``proxy`` (no training): the random-feature capacity proxy of claim 8 — N Gaussian points
  in d = 32 with 10 random labels, a fixed random Linear(32→256) without bias, LN-G with g
  groups, and a least-squares readout; training accuracy per g, and the same readout on the
  raw inputs (the linear classifier).
* ``fit`` (claims 6 and 9): random-label fitting. A subset of MNIST-1D (first 2,000 training
  signals, 40 features) and of the 8×8 digits (first 1,000, flattened to 64) gets uniformly
  random labels (drawn from the run seed, so every arm of a seed fits the same labels). We
  train a linear classifier (one affine map; best over learning rates 1e-3, 1e-2, 1e-1 per
  seed: the "linear upper bound" of the paper, which bounds every linear network), an LN-Net
  (4 × [Linear(64) → LN], no activation, then a readout), the same LN-Net with LN-G,
  g ∈ {2, 4, 8, 16} (group size ≥ 4), and a width-2 LN-Net (claim 6). Adam, batch 100,
  lr 1e-2 for the LN-G comparisons, learning rate halved every 20 epochs, 100 epochs (full:
  150, and batch sizes 128/256 for the linear grid as in the paper's Appendix F.1). The LN-Net
  and the width-2 LN-Net compared with the linear classifier get the linear classifier's whole
  (lr, batch) grid and are scored, like it, by their best point. Metric: final training
  accuracy on the random labels.
* ``practical`` (claim 10): LN vs LN-G (8 features per group, the authors' later advice) inside
  a small CNN (3 conv layers, 16 channels, norm over channels at each position) and a small
  Pre-LN Transformer (2 blocks, dim 32, patches of 8) on MNIST-1D with its true labels; final
  test accuracy over seeds.

Subset sizes were chosen by a timing/pilot probe so that the linear classifier fits about a
quarter of the random labels and the plain LN-Net is far from 100% (neither trivial nor
hopeless); the claims below were written before the quick run.

The package reads in that order: this file (the claims), ``sweep`` (the settings per scale),
``protocol`` (the four run kinds: theory and proxy measure, fit and practical train),
``measures`` (what the claims test), ``figures`` (and the results table).
"""

from __future__ import annotations

from lnlab.experiments.capacity.figures import figures, table
from lnlab.experiments.capacity.measures import analyze, fit_table
from lnlab.experiments.capacity.protocol import (
    proxy_measurements,
    run,
    subset_arrays,
    subset_file,
    theory_measurements,
)
from lnlab.experiments.capacity.sweep import (
    CONSTRUCT,
    CURVE_DIM,
    CURVE_GROUPS,
    EXTRA_SCALES,
    FIT_DEPTH,
    FIT_GROUPS,
    FIT_WIDTH,
    LINEAR_LRS,
    PRACTICAL,
    PROXY_GROUPS,
    SETTINGS,
    sweep,
)
from lnlab.experiments.claims import (
    Check,
    CheckBound,
    Claim,
    Effect,
    Equivalence,
    NonInferiority,
)
from lnlab.experiments.framework import spearman

__all__ = ["CLAIMS", "CONSTRUCT", "CURVE_DIM", "CURVE_GROUPS", "DESCRIPTION", "EXTRA_SCALES",
           "FIT_DEPTH", "FIT_GROUPS", "FIT_WIDTH", "LINEAR_LRS", "NAME", "PRACTICAL",
           "PROXY_GROUPS", "SETTINGS", "analyze", "figures", "fit_table", "proxy_measurements",
           "run", "spearman", "subset_arrays", "subset_file", "sweep", "table",
           "theory_measurements"]

NAME = "capacity"
DESCRIPTION = ("Ni et al.: LN-Nets (Linear + LayerNorm, no activation) fit random labels "
               "beyond a linear classifier, LN-G amplifies it; the width-3 construction, "
               "VC demo, SSR/LSSR and Hessian nonlinearity; LN-G in a CNN and a Transformer.")
SEEDS = {"quick": 5, "full": 5}
OPTIONS = {"tiny": "1 = the tiny scale (older form of --scale tiny)"}
HEADLINE_METRIC = "final_train_acc"
PAPER = "Ni, Guo, Jia, Huang 2024 (ICML), arXiv 2406.01255"
NOTES = "research notes ni_nonlinearity.md"

# --------------------------------------------------------------------------------- claims
# Written from docs/papers/ni_nonlinearity.md (§5) before any run. "points" = percentage points.
# Closed forms, constructions and properties of LN itself (ni.1–ni.5, ni.3a/b) are checks; Monte-
# Carlo and trained quantities are empirical (CI over seeds). Minimal effects: from the notes'
# numbers where they exist (proxy: g = 8 beats g = 1 by 17.6 points → 5; curvature ratio "far more"
# → 2×; random layers below the input LSSR in ~34% of draws → > 5%), stated otherwise: 2 points of
# training accuracy for "fits more random labels" and for width-2 "no more capacity", 0.5 test
# points for a "practical improvement" (5 of 1,000 MNIST-1D test samples), 2 points of non-
# inferiority, ρ > 0.5 for a trend. Comparisons use a pre-registered arm (the proxy's g = width/dim,
# where the group size equals the input dimension) or the mean over arms, never the best arm (a max
# over noisy arms is biased upwards).
M = "lnlab.experiments.capacity.analyze"
CLAIMS = [
    Claim("ni.1a", NOTES + " §1.1, claim 1",
          "LN (eps = 0) is invariant to x → x + c·1 and x → αx (α > 0).",
          "max |LN(x + c1) − LN(x)|, |LN(αx) − LN(x)| over Gaussian draws",
          "0 up to float64 rounding", Check(0.0, 1e-10)),
    Claim("ni.1b", NOTES + " §1.1, claim 1",
          "LN is not additive: LN(x + y) ≠ LN(x) + LN(y).",
          "median ‖LN(x+y) − LN(x) − LN(y)‖ / ‖LN(x) + LN(y)‖",
          "clearly nonzero (> 0.1)", CheckBound(">", 0.1)),
    Claim("ni.2", PAPER + " (LSSR is linear-invariant); " + NOTES + " claim 2",
          "No affine map of any rank or output size lowers LSSR.",
          "violations among 200 random affine maps", "0 on every seed",
          Check(0.0, 0.0)),
    Claim("ni.3a", NOTES + " §1.3, claim 3",
          "XOR: LSSR is infinite for the input and every affine image, finite after one "
          "Linear(2→3)+LN layer (26 in the notes).",
          "LSSR of XOR after Linear(2→3)+LN", "finite (≈ 26)", Check(26.0, 1.0)),
    Claim("ni.3b", PAPER + " (LN-Nets can go below LSSR); " + NOTES + " claim 3",
          "The constructed LN-Net collapses each class to one point: LSSR of its last layer is 0.",
          "LSSR of the last LN layer of the construction (m = 20, d = 2, K = 2)",
          "0 (numerically ≤ 1e-8)", Check(0.0, 1e-8)),
    Claim("ni.3c", NOTES + " claim 3",
          "A random Linear(3→3)+LN layer goes below the input LSSR in a sizeable share of draws "
          "(about 34% in the notes).",
          "share of 200 random layers with LSSR(out) < LSSR(in)", "> 5% (notes: ~34%)",
          Effect(">", 0.05), measured_by=M),
    Claim("ni.4", PAPER + " (Theorem: width 3, O(m) LN layers); " + NOTES + " claim 4",
          "The width-3 construction with m − K LN layers (+1 for 1-D input) fits every random "
          "labelling of m ≤ 40 points (d ∈ {1, 2, 10}, K ∈ {2, 3, 4}) with 100% accuracy.",
          "share of constructions with width 3, m − K (+1) layers and 100% accuracy",
          "1 on every seed", Check(1.0, 0.0)),
    Claim("ni.5", PAPER + " (VC-dimension lower bound); " + NOTES + " claim 5",
          "Width 3 and L LN layers shatter L + 2 generic points (VC ≥ L + 2).",
          "share of L (2..5; full 2..6) whose every labelling of L+2 points is fitted",
          "1 on every seed", Check(1.0, 0.0)),
    Claim("ni.7a", PAPER + " (group partition amplifies nonlinearity); " + NOTES + " claim 7",
          "The Hessian measure H of LN-G grows with the group number g (d = 64, groups of ≥ 8).",
          "min over g ∈ {1,2,4} of median H(2g) / median H(g)",
          "> 1.1 at every doubling (the per-seed minimum over doublings)",
          Effect(">", 0.1, null=1.0), measured_by=M),
    Claim("ni.7b", NOTES + " claim 7",
          "Grouping amplifies curvature, not slope: H grows far more than ‖J‖² from g = 1 to 8.",
          "(median H ratio g=8/g=1) / (median ‖J‖² ratio g=8/g=1)", "> 2",
          Effect(">", 1.0, null=1.0), measured_by=M),
    Claim("ni.8a", NOTES + " claim 8 (random-feature proxy)",
          "Wide LN (g = 1) on random features is about as good as the linear readout.",
          "proxy acc[g=1] − acc[linear] (points)", "equivalent to 0 within ±3 points",
          Equivalence(3.0), measured_by=M),
    Claim("ni.8b", PAPER + " (LN-G amplifies capacity); " + NOTES + " claim 8",
          "LN-G random features fit more random labels than plain LN (group size = input "
          "dimension vs g = 1).",
          "proxy acc[g=width/dim] − acc[g=1] (points)", "> 5 points (notes: +17.6)",
          Effect(">", 5.0), measured_by=M),
    Claim("ni.8c", NOTES + " claim 8",
          "The proxy accuracy peaks when the group size is about the input dimension (32).",
          "log2(best group size / 32)", "within one doubling (group size 16..64): the "
          "values are integers, so equivalence margin 1.5",
          Equivalence(1.5), measured_by=M),
    *[c for ds in ("mnist1d", "digits") for c in (
        Claim(f"ni.6.{ds}", NOTES + " §1.1, claim 6",
              f"A width-2 LN-Net has no more capacity than a linear classifier: LN on 2 "
              f"neurons is ±(1, −1) ({ds} subset).",
              f"{ds}: train_acc[width-2 LN-Net] − best train_acc[linear] (points)",
              "not above linear by more than 2 points",
              NonInferiority("<", 2.0), measured_by=M),
        Claim(f"ni.9a.{ds}", PAPER + " §6 (random-label fitting); " + NOTES + " claim 9",
              f"A trained LN-Net fits more random labels than the best linear classifier "
              f"({ds} subset).",
              f"{ds}: train_acc[LN-Net] − best train_acc[linear] (points)",
              "paired difference > 2 points", Effect(">", 2.0), measured_by=M),
        Claim(f"ni.9b.{ds}", PAPER + " §6; " + NOTES + " claim 9",
              f"LN-G fits more random labels than LN (mean over g ≥ 2 vs g = 1, {ds} subset).",
              f"{ds}: mean over g≥2 of train_acc[LN-G] − train_acc[LN] (points)",
              "paired difference > 2 points", Effect(">", 2.0), measured_by=M),
        Claim(f"ni.9c.{ds}", NOTES + " claim 9",
              f"Training accuracy rises with the group number ({ds} subset, g = 1..16).",
              f"{ds}: Spearman ρ(g, train_acc)", "ρ > 0.5", Effect(">", 0.5), measured_by=M),
    )],
    *[c for fam in PRACTICAL for c in (
        Claim(f"ni.10a.{fam}", PAPER + " (LN-G in CNNs/Transformers); " + NOTES + " claim 10",
              f"LN-G in place of LN does not hurt the {fam} on MNIST-1D.",
              f"{fam}: test_acc[LN-G] − test_acc[LN] (points)",
              "not worse by more than 2 points", NonInferiority(">", 2.0), measured_by=M),
        Claim(f"ni.10b.{fam}", PAPER + " (\"practical improvements\")",
              f"LN-G improves the {fam}'s test accuracy on MNIST-1D.",
              f"{fam}: test_acc[LN-G] − test_acc[LN] (points)",
              "paired difference > 0.5 points", Effect(">", 0.5), measured_by=M),
    )],
]
