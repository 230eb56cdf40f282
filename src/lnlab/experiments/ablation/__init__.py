"""Norm-variant ablation: LayerNorm, LayerNorm-simple, DetachNorm, AdaNorm and no norm.

Method (after Xu et al., "Understanding and Improving Layer Normalization", NeurIPS 2019).
Every norm of a model is replaced by one variant (the paper's definition, not the released
snapshot's, which swaps only the final norms; docs/papers/xu_adanorm_and_weight_decay.md §4.3):

- *none*: identity ("w/o Norm");
- *layernorm*: g ⊙ N(x) + b with N(x) = (x − μ)/σ;
- *layernorm_simple*: N(x), no gain or bias;
- *detach_both* (DetachNorm), *detach_mean*, *detach_std*: N(x) with the derivative of μ, of
  σ, or of both cut (forward unchanged);
- *adanorm_C…*: C(1 − k·y) ⊙ y, y = N(x), k = 1/10, the factor detached (the official code).
  C is swept at full ({0.5, 1, 1.5, 2}: the values the official scripts try; quick runs 1);
  C = 1 (the official README's command) is the one the claims test, fixed in advance.

Tasks, at CPU scale:

- *mnist1d_mlp*, *digits_mlp*: a ReLU MLP (Linear → norm → ReLU per hidden block, no residual;
  depth 2 is the paper's 3-layer MNIST network) on MNIST-1D and scikit-learn digits;
- *tokens_preln*, *tokens_postln*: a Pre-LN and a Post-LN transformer classifier (mean
  pooling) on the synthetic motif task (stand-in for RT/SST5);
- *pystdlib_lm*: a Pre-LN causal transformer language model on characters of the Python
  standard library's source (``pystdlib`` dataset; fixed contiguous train/validation split,
  vocabulary from the training split), the stand-in for Enwiki8, reported in bits per
  character (validation loss / ln 2).

Depth is a factor (blocks: 2 and 6 at quick, 2, 6 and 12 at full) so that divergence with depth
can show. Quick runs the two MLP tasks only (the transformer tasks and the char-LM, whose claims
A5.lm and A6.lm are then "not run", need "full": they cost several times the 10-minute budget of
the whole quick reproduction), and no w/o-Norm arm (no claim reads it). All runs use Adam
without weight decay, warm-up or clipping, and each setting is repeated over seeds
(initialization and batch order; data fixed). A run whose loss becomes non-finite is *diverged*:
it is counted and shown as "diverged" in the table, as in the paper; in the paired comparisons
of the claims it scores chance level (accuracy 1/classes, bpc = log2 vocabulary), i.e.
divergence counts against the variant that diverged.

Measured, per run: final test accuracy (validation bpc for the LM), training and validation
loss per epoch (convergence curves), and, at the middle and last epoch of every classification
run, the backward statistics of claim A1 at every norm site on 256 real training samples
(``lnlab.analysis.gradients.gradient_hook``: measured mean/variance of ∂ℓ/∂x against Xu's
closed forms). AdaNorm runs also probe their norms' forward on 256 training samples at the
end (claims A2, A4). The exact claims A1–A4 are also unit tests of the norms themselves
(tests/norms/test_norms_xu.py); here they are checked on real training batches.

The package reads in that order: this file (the claims), ``sweep`` (the settings per scale),
``protocol`` (one run and its probes), ``measures`` (what the claims test), ``figures`` (and
the results table).
"""

from __future__ import annotations

from lnlab.experiments.ablation.figures import cell, figures, table
from lnlab.experiments.ablation.measures import (
    A1_GROUPS,
    EXACT_TOL,
    XU_TOL,
    analyze,
    closed_form_deviation,
    pooled_difference,
    score,
    xu_deviation,
)
from lnlab.experiments.ablation.protocol import LN2, adanorm_probe, run
from lnlab.experiments.ablation.sweep import (
    ADANORM,
    CLS_TASKS,
    EXTRA_SCALES,
    LM_TASK,
    SETTINGS,
    TASK_LABELS,
    TASKS,
    VARIANTS,
    sweep,
)
from lnlab.experiments.claims import Check, Claim, Effect, Equivalence, NonInferiority

__all__ = ["A1_GROUPS", "ADANORM", "CLAIMS", "CLS_TASKS", "DESCRIPTION", "EXACT_TOL",
           "EXTRA_SCALES", "LM_TASK", "LN2", "NAME", "SETTINGS", "TASKS", "TASK_LABELS",
           "VARIANTS", "XU_TOL", "adanorm_probe", "analyze", "cell", "closed_form_deviation",
           "figures", "pooled_difference", "run", "score", "sweep", "table", "xu_deviation"]

NAME = "ablation"
DESCRIPTION = ("Xu et al.'s norm ablation: no norm, LayerNorm, LayerNorm-simple, DetachNorm "
               "(both / mean / std) and AdaNorm on MLP, Pre-/Post-LN transformer and a "
               "character LM, over depth; gradient re-centering/re-scaling on real batches.")
SEEDS = {"quick": 5, "full": 5}
OPTIONS = {"tiny": "1 = the tiny scale (older form of --scale tiny)"}
HEADLINE_METRIC = "final_test_loss"
PAPER = "Xu et al. 2019, Understanding and Improving Layer Normalization"
NOTES = "research note xu_adanorm_and_weight_decay.md §7"


# --------------------------------------------------------------------------- claims
# A1–A4 are checks (closed forms on real batches, every site within the tolerance). A5–A8 are
# empirical, with minimal effects fixed before any run: from the paper's Tables 1–3 where they
# give numbers (research note §2, §7: LN-simple's worst loss vs LN is 0.55 points → a 1-point
# non-inferiority margin; Enwiki8 bpc differences of 0.05 → an equivalence margin of 0.05 bpc
# and a minimal DetachNorm excess of 0.01 bpc; AdaNorm's smallest classification gain, +0.22 on
# MNIST → 0.2 points), stated where they do not: 0.5 points for the DetachNorm and detach-μ/σ
# accuracy gaps (as before), 0.02 nats for the over-fitting curves (no numbers in the paper;
# about 1% of the losses here).
_CLS = "pooled over classification tasks × depths"
M = "lnlab.experiments.ablation.analyze"
CLAIMS = [
    Claim("A1.full", PAPER + ", Theorem (1); " + NOTES,
          "With μ and σ derivatives kept (LayerNorm, LayerNorm-simple), the gradient a norm "
          "passes back is re-centred and re-scaled: mean(∂ℓ/∂x) = 0 and "
          "var = (D_g − m²)/σ² ≤ D_g/σ², on real training batches. Unit-tested in "
          "tests/norms/test_norms_xu.py.",
          "A1 deviation[none]",
          "relative deviation from Xu's closed forms ≤ 1e-3 at every site, epoch and task",
          Check(0.0, XU_TOL), measured_by=M),
    Claim("A1.detach_mean", PAPER + ", Theorem (2); " + NOTES,
          "With μ detached: mean(∂ℓ/∂x) = ḡ/σ and var = (D_g − m²)/σ² on real batches.",
          "A1 deviation[mean]", "relative deviation ≤ 1e-3 everywhere",
          Check(0.0, XU_TOL), measured_by=M),
    Claim("A1.detach_std", PAPER + ", Theorem (3); " + NOTES,
          "With σ detached: mean(∂ℓ/∂x) = 0 and var = D_g/σ² on real batches.",
          "A1 deviation[std]", "relative deviation ≤ 1e-3 everywhere",
          Check(0.0, XU_TOL), measured_by=M),
    Claim("A1.detach_both", PAPER + ", Theorem (0); " + NOTES,
          "DetachNorm: mean(∂ℓ/∂x) = ḡ/σ and var = D_g/σ² (no re-centring, no re-scaling).",
          "A1 deviation[both]", "relative deviation ≤ 1e-3 everywhere",
          Check(0.0, XU_TOL), measured_by=M),
    Claim("A2", PAPER + " (AdaNorm design); " + NOTES,
          "AdaNorm's output has mean −C·k over the features for every input (the mean of z is "
          "bounded), on the trained models' real activations. Unit-tested in "
          "tests/norms/test_norms_xu.py.",
          "A2 |mean(z) + Ck·mean(y²)|/(Ck)",
          "≤ 1e-4 at every AdaNorm site (mean(y²) = 1 − eps/(Var x + eps), 1 at eps = 0)",
          Check(0.0, EXACT_TOL), measured_by=M),
    Claim("A3", PAPER + " (AdaNorm backward, official code); " + NOTES,
          "AdaNorm's backward equals LayerNorm-simple's backward applied to C(1 − k·y) ⊙ g "
          "(φ detached), so Σ_i ∂ℓ/∂x_i = 0, on real training batches.",
          "A3 deviation", "relative deviation from the closed form (and of the mean from 0) "
          "≤ 1e-4", Check(0.0, EXACT_TOL), measured_by=M),
    Claim("A4", NOTES + " (k = 1/10, Chebyshev)",
          "With k = 1/10 at most 1% of units have φ(y) ≤ 0, and none when H ≤ 100 (all widths "
          "here are ≤ 100).", "A4 max share of φ ≤ 0", "0 on every row",
          Check(0.0, 0.0), measured_by=M),
    Claim("A5", PAPER + ", Table 1 (LayerNorm-simple no worse on 6/8); " + NOTES,
          "LayerNorm-simple (no gain and bias) is no worse than LayerNorm.",
          "acc[LayerNorm-simple] − acc[LayerNorm]",
          f"not worse by more than 1 point ({_CLS})", NonInferiority(">", 1.0),
          measured_by=M),
    Claim("A5.lm", PAPER + ", Table 1 (Enwiki8: 1.07 vs 1.07 bpc); " + NOTES,
          "On character LM, LayerNorm-simple matches LayerNorm in bpc.",
          "bpc[LayerNorm-simple] − bpc[LayerNorm]", "equivalent within ±0.05 bpc",
          Equivalence(0.05), measured_by=M),
    Claim("A6", PAPER + ", Table 2 (LN-simple beats DetachNorm on 6/8); " + NOTES,
          "The derivatives of μ and σ matter: LayerNorm-simple beats DetachNorm (same forward).",
          "acc[LayerNorm-simple] − acc[DetachNorm]",
          f"paired difference > 0.5 points ({_CLS})", Effect(">", 0.5), measured_by=M),
    Claim("A6.lm", PAPER + ", Table 2 (Enwiki8: 1.12 vs 1.07 bpc); " + NOTES,
          "On character LM, DetachNorm has higher bpc than LayerNorm-simple.",
          "bpc[DetachNorm] − bpc[LayerNorm-simple]",
          "paired difference > 0.01 bpc (pooled over depths; paper: 0.05)",
          Effect(">", 0.01), measured_by=M),
    Claim("A6.depth", PAPER + " (En-De, 12 layers: DetachNorm diverges); " + NOTES,
          "DetachNorm's deficit grows with depth (it diverges in deep models).",
          "A6 gap[deepest] − A6 gap[shallowest]",
          "paired difference > 0.5 points (classification tasks)", Effect(">", 0.5),
          measured_by=M),
    Claim("A7", PAPER + " (\"the derivative of variance is more important than that of mean "
          "for deeper networks\"); " + NOTES,
          "In the deepest models, detaching σ hurts more than detaching μ.",
          "acc[detach mean] − acc[detach std] (deepest)",
          "paired difference > 0.5 points (classification tasks, deepest depth)",
          Effect(">", 0.5), measured_by=M),
    Claim("A8", PAPER + ", Table 3 (AdaNorm beats LN on 7/8); " + NOTES,
          "AdaNorm (C = 1) is better than LayerNorm.",
          "acc[AdaNorm] − acc[LayerNorm]",
          f"paired difference > 0.2 points ({_CLS}; paper: +0.22 to +1.31 on classification)",
          Effect(">", 0.2), measured_by=M),
    Claim("A8.gap", PAPER + " (convergence curves: LN lower training, higher validation "
          "loss than AdaNorm); " + NOTES,
          "LayerNorm over-fits more than AdaNorm: its validation − training loss gap is larger.",
          "gap[LayerNorm] − gap[AdaNorm]",
          "paired difference > 0.02 nats (pooled over all tasks × depths)",
          Effect(">", 0.02), measured_by=M),
    Claim("A8.train", PAPER + " (convergence curves); " + NOTES,
          "AdaNorm has a higher final training loss than LayerNorm.",
          "train_loss[AdaNorm] − train_loss[LayerNorm]",
          "paired difference > 0.02 nats (pooled over all tasks × depths)",
          Effect(">", 0.02), measured_by=M),
]
