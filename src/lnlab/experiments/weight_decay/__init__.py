"""Weight decay and LayerNorm scale invariance: where weight decay regularizes, and how.

Question. The weight-decay blog (Dar 2023) argues that in a ReLU MLP with LayerNorm and no
residual connections every hidden layer can be rescaled without changing the function, so
weight decay is statically useless there except on the readout; pre-norm residuals break the
symmetry, post-norm ones do not. The notes
(``docs/papers/xu_adanorm_and_weight_decay.md``, part (b),
§5–§7) refine this: it depends on the exact block form and on a final norm, and in training
weight decay still acts through the effective learning rate η/‖w‖² of each scale-invariant
group. This experiment measures both halves.

Architectures (``lnlab.models`` MLP specs; depth 3, width 64 in "quick"; LayerNorm without gain
and bias — ``layernorm_simple``, eps 1e-5 — so that the notes' exact statements apply):

- ``none``       no norm, no residual;
- ``ln``         (i)   h_l = ReLU(LN(W_l h_{l−1} + b_l));
- ``pre``        (ii)  h_l = h_{l−1} + F(LN(h_{l−1})), input projection, no final norm;
- ``pre+final``  (ii)  the same with a final LN before the readout;
- ``post``       (iii) h_l = LN(h_{l−1} + F(h_{l−1}));
- ``branch``     (iii′) h_l = h_{l−1} + LN(F(h_{l−1})).

Training. Plain SGD (no momentum: the effective-learning-rate algebra below is then exact),
lr η = 0.1, batch 100, constant schedule. Weight decay λ (coupled L2, which equals decoupled
decay for SGD) is applied to every *hidden* parameter and never to the readout: readout decay
is ordinary ridge regression on the features in every architecture, which neither document
disputes, and leaving it out isolates the part the blog's argument is about. Sweep ("quick"):
(i) and (ii) at λ ∈ {0, 3e-2}, the other block forms at λ = 0 (for the static checks), × 5
seeds on MNIST-1D with 15% of the training labels flipped (so that regularization matters);
"full" trains every form at six λ on MNIST-1D and on scikit-learn's digits.

Measured per run (per epoch, from a per-step hook ``lnlab.train.train(step_hooks=...)``):
for every hidden Linear layer (weight and bias as one group), the readout and, in the residual
nets, the stream writers (input projection and every fc2): the norm ‖w‖, the effective learning
rate η/‖w‖², and the per-step angular update Δ_t = ∠(w_t, w_{t+1}) averaged over the epoch.
At the end: test accuracy and the test-set argmax predictions (a compact string in the
summary), from which ``analyze`` computes the *distance of the learned function from the
no-decay run*: the share of test examples on which a run and the same-seed λ = 0 run disagree
(prediction disagreement; chosen over a KL because it needs only the argmax and is readable).

Static checks (B1–B3 and the blog's invariance table), on each trained λ = 0 MNIST-1D model in
float64: ``lnlab.analysis.scale_invariance.audit`` (every group scaled by 0.1, 0.5, 2, 10 at
eps = 0 and at the real eps, the residual stream as a joint group), plus a pure weight-decay
step on all hidden parameters (factor e^{−1}, what 1/(ηλ) decay steps do) and the eps breakdown
of the first layer at c = 0.1, 0.01, 0.001.

Norm-matched control (no weight decay, same effective learning rate). For a scale-invariant
group the decayed SGD step is w' = (1 − ηλ)w − η∇L(w), whose direction moves as
u' ∝ u − η/((1 − ηλ)‖w‖²)·∇L(u). A no-decay run with weights w_c moves its direction by
η_c/‖w_c‖²·∇L(u). So the control multiplies each hidden group's gradient (≡ its learning rate,
for plain SGD) by k_t = ‖w_c,t‖² / ((1 − ηλ)‖w_t‖²), where ‖w_t‖ is the decayed twin's norm at
the same step: its η_eff equals the twin's at every step. We match the learning rate rather than
project the weights onto the twin's norms because per-step projection would reproduce *any*
decayed run to first order (decay is itself a radial shrink), including non-invariant
architectures, and so could not tell them apart; matching η_eff reproduces the twin exactly
when the group is scale-invariant and only then. The twin is retrained inside the control run
(same config, deterministic), at the largest λ, on MNIST-1D, together with a λ = 0 reference;
all three in float64 with eps = 0 ("exact", where the invariance is exact; "full" also runs
float32 with the real eps). Residual = disagreement(control, twin) / disagreement(λ = 0, twin)
at the control's last finite epoch (a control that diverges is compared where it was sound).

Li–Arora equivalence (B5), a deterministic float64 check per seed: ``ln`` with a frozen readout
(so every trained parameter is scale-invariant) and eps = 0, 100 fixed-order minibatch steps of
(A) SGD with λ, (B) SGD without decay at η_t = η(1 − ηλ)^(−2t−1), (C) SGD at constant η; the
max over steps and hidden layers of ‖u_A − u_B‖ must be below 1e-6. Negative controls: the same
with the readout trained, and ``pre`` (no final norm). The same run checks B4 (norm growth
‖w_{t+1}‖² − ‖w_t‖² = η²‖g_t‖² and g ⊥ w without decay).

The package reads in that order: this file (the claims), ``sweep`` (the settings per scale),
``protocol`` (the training, control and Li–Arora runs and what they record), ``measures``
(what the claims test), ``figures`` (and the results and audit tables).
"""

from __future__ import annotations

from lnlab.experiments.claims import (
    Check,
    CheckBound,
    Claim,
    Effect,
    Equivalence,
    Measurement,
    NonInferiority,
)
from lnlab.experiments.framework import Results
from lnlab.experiments.weight_decay.figures import audit_rows, figures, table
from lnlab.experiments.weight_decay.measures import (
    control_measures,
    function_distance,
    measure_all,
)
from lnlab.experiments.weight_decay.protocol import (
    GroupTracker,
    disagreement,
    encode_preds,
    hidden_groups,
    run,
    static_checks,
    tracked_groups,
)
from lnlab.experiments.weight_decay.sweep import (
    ARCHS,
    EXTRA_SCALES,
    LI_ARORA,
    SETTINGS,
    model_spec,
    sweep,
)

__all__ = [
    "ARCHS",
    "CLAIMS",
    "DESCRIPTION",
    "EXTRA_SCALES",
    "LI_ARORA",
    "NAME",
    "SETTINGS",
    "GroupTracker",
    "analyze",
    "audit_rows",
    "control_measures",
    "disagreement",
    "encode_preds",
    "figures",
    "function_distance",
    "hidden_groups",
    "model_spec",
    "run",
    "static_checks",
    "sweep",
    "table",
    "tracked_groups",
]

NAME = "weight-decay"
DESCRIPTION = ("Weight decay vs LayerNorm scale invariance (the weight-decay blog and notes "
               "part (b)): six MLP block forms × weight decay × seeds; audit table, effective "
               "learning rate, angular updates, a norm-matched control and the Li–Arora check.")
SEEDS = {"quick": 5, "full": 5}
OPTIONS = {"tiny": "1 = the tiny scale (older form of --scale tiny)"}
HEADLINE_METRIC = "final_test_acc"

NOTES = "research notes xu_adanorm_and_weight_decay.md §7"
BLOG = "Dar 2023, 'Weight decay is useless without residual connections' (blog)"
AUDIT = "lnlab audit (README, audit section): corrections to the notes' table"
# ----------------------------------------------------------------------------- claims
# Written from the blog and the notes before any run; thresholds follow the notes' wording
# ("< 1e-12 relative", "O(1)", "within about 10–20%", "largely disappears"). The invariance
# audit (blog.*, B1–B3) and the exact training identities (B4, B5) are checks: every seed's
# value within the tolerance or on the stated side of the bound. B6 and B7 are empirical
# (CI over seeds): B6 an equivalence with the notes' 20%, B7 a change of > 1 point in either
# direction (the smallest accuracy change we call a change at 1,000 test samples: 10
# samples), the control's residual < 0.5 ("largely"), and its accuracy equivalent within
# ±1 point.

M = "lnlab.experiments.weight_decay.analyze"
CLAIMS = [
    # --- the blog's own statements: the invariance table per architecture (audit, trained λ=0)
    Claim("blog.ln", BLOG,
          "With LayerNorm and no residual connections every hidden layer can be rescaled "
          "without changing the function, so weight decay cannot constrain most of the weights.",
          "unconstrained_share[ln]", "share of Σ‖θ‖² that function-preserving rescaling "
          "sends to 0 > 0.5", CheckBound(">", 0.5)),
    Claim("blog.ln_readout", BLOG,
          "... except the last layer: rescaling the readout changes the output.",
          "change[ln/readout]", "max relative logit change > 0.1", CheckBound(">", 0.1)),
    Claim("blog.pre", BLOG,
          "(Pre-norm) residual connections break the symmetry: nothing can be rescaled away.",
          "unconstrained_share[pre]", "unconstrained share = 0", Check(0.0, 1e-9)),
    Claim("blog.pre_final", BLOG,
          "The same holds for a pre-norm residual net with a final norm (the blog does not "
          "distinguish; the notes §5.3 (ii) predict the opposite).",
          "unconstrained_share[pre+final]", "unconstrained share = 0 (notes: > 0.5)",
          Check(0.0, 1e-9)),
    # The blog's "post-norm" block is h + LN(F(h)) (the residual added after the norm): that
    # reading is the claim. The Transformer's Post-LN block LN(h + F(h)) is a different,
    # separately labelled architecture ("post"), checked beside it.
    Claim("blog.post", BLOG,
          "Post-norm residual connections 'suffer from the same problem': the blog's post-norm "
          "block h + LN(F(h)), where every branch weight is invariant (notes (iii′)).",
          "unconstrained_share[branch]", "unconstrained share > 0.5",
          CheckBound(">", 0.5)),
    Claim("blog.post_transformer", BLOG + "; notes §5.3 (iii)",
          "Not the blog's block: the Transformer-style Post-LN block LN(h + F(h)) would 'suffer "
          "the same problem' only if its block weights were invariant (the notes predict they "
          "are not).",
          "unconstrained_share[post]", "unconstrained share > 0.5",
          CheckBound(">", 0.5)),
    Claim("blog.none", BLOG,
          "Without LayerNorm nothing is scale-invariant (ReLU nets are only equivariant).",
          "unconstrained_share[none]", "unconstrained share = 0", Check(0.0, 1e-9)),
    # --- B1: (i) exact invariance of each hidden layer
    Claim("B1.hidden", NOTES,
          "In (i) scaling any hidden (W_l, b_l) by c ∈ [0.1, 10] changes the logits by < 1e-12 "
          "relative (float64, eps = 0).",
          "change[ln/hidden]", "max over hidden layers and factors < 1e-12",
          Check(0.0, 1e-12)),
    Claim("B1.readout", NOTES, "In (i) the readout is not invariant.",
          "change[ln/readout]", "max relative change > 0.1", CheckBound(">", 0.1)),
    Claim("B1.eps", NOTES,
          "With eps = 1e-5 the change grows as c shrinks (≈ 2.6e-4, 2.5e-2, 0.67 at c = 0.1, "
          "0.01, 0.001 for unit pre-activation variance).",
          "eps_growth[ln]", "change(c=1e-3) / change(c=0.1) > 10 (first hidden layer)",
          CheckBound(">", 10.0)),
    # --- B2: the residual forms
    Claim("B2.pre_fc2", NOTES, "In (ii) scaling one block's W2 changes the logits by O(1).",
          "change[pre/min_fc2]", "min over blocks of the max relative change > 0.1",
          CheckBound(">", 0.1)),
    Claim("B2.stream_final", NOTES,
          "In (ii) the joint scaling of all stream writers is invariant with a final LN ...",
          "change[pre+final/stream]", "max relative change < 1e-10", Check(0.0, 1e-10)),
    Claim("B2.stream_nofinal", NOTES, "... and not invariant without it.",
          "change[pre/stream]", "max relative change > 0.1", CheckBound(">", 0.1)),
    Claim("B2.post", NOTES, "In (iii) LN(h + F(h)) block weights are not invariant.",
          "change[post/min_block]", "min over fc1/fc2 groups of the max change > 0.01",
          CheckBound(">", 0.01)),
    Claim("B2.branch", NOTES, "In (iii′) h + LN(F(h)) block weights (W2) are invariant.",
          "change[branch/fc2]", "max over blocks of the fc2 group's change < 1e-10",
          Check(0.0, 1e-10)),
    # --- B3: a pure decay step on all hidden parameters
    Claim("B3.ln", NOTES, "A pure hidden weight-decay step leaves the function unchanged in (i).",
          "decay_step[ln]", "relative logit change < 1e-10 (hidden × e^-1, eps = 0)",
          Check(0.0, 1e-10)),
    Claim("B3.branch", NOTES, "... and in (iii′) (every hidden parameter decayed, biases too).",
          "decay_step[branch]", "relative logit change < 1e-10", Check(0.0, 1e-10),
          notes="The audit's correction predicts this fails with biased branches: a decayed "
                "b2 shrinks by s while W2·relu(W1 h + b1) shrinks by s²."),
    Claim("B3.branch_keep_b2", AUDIT,
          "In (iii′) a decay step on the blocks preserves the function when b2 is not "
          "decayed.",
          "decay_step_keep_b2[branch]", "relative logit change < 1e-10 (blocks × e^-1 except "
          "every fc2.bias)",
          Check(0.0, 1e-10)),
    Claim("B3.pre", NOTES, "A pure hidden decay step changes the function in (ii).",
          "decay_step[pre]", "relative logit change > 1e-3", CheckBound(">", 1e-3)),
    Claim("B3.post", NOTES, "... and in (iii).",
          "decay_step[post]", "relative logit change > 1e-3", CheckBound(">", 1e-3)),
    # --- B4, B5: exact training identities (deterministic float64 runs)
    Claim("B4.norm_growth", NOTES,
          "In (i) without weight decay, SGD gives ‖w_{t+1}‖² − ‖w_t‖² = η²‖g_t‖² for each "
          "hidden group.", "b4_norm_identity", "max relative deviation < 1e-9",
          Check(0.0, 1e-9)),
    Claim("B4.orthogonal", NOTES, "... and cos(g_t, w_t) = 0.",
          "b4_cos", "max |cos| < 1e-9", Check(0.0, 1e-9)),
    Claim("B5.equivalence", NOTES,
          "Li–Arora: with every trained parameter scale-invariant, SGD with λ and SGD without "
          "decay at η(1 − ηλ)^(−2t−1) give the same directions.",
          "li_arora_direction_gap", "max ‖u_A − u_B‖ over steps and layers < 1e-6",
          Check(0.0, 1e-6)),
    Claim("B5.norm_ratio", NOTES, "... with ‖w_B,t‖ / ‖w_A,t‖ = (1 − ηλ)^(−t).",
          "li_arora_norm_ratio_error", "relative error < 1e-9", Check(0.0, 1e-9)),
    Claim("B5.constant_lr", NOTES, "Constant η without decay follows different directions.",
          "li_arora_gap_constant_lr", "max ‖u_A − u_C‖ > 1e-3", CheckBound(">", 1e-3)),
    Claim("B5.readout_trained", NOTES,
          "The equivalence fails when a non-invariant parameter (the readout) is trained ...",
          "li_arora_gap_readout_trained", "max ‖u_A − u_B‖ > 1e-3",
          CheckBound(">", 1e-3)),
    Claim("B5.pre", NOTES, "... or in (ii) without a final LN.",
          "li_arora_gap_pre", "max ‖u_A − u_B‖ > 1e-3", CheckBound(">", 1e-3)),
    # --- B6: rotational equilibrium
    Claim("B6.angle", NOTES,
          "At equilibrium (t ≳ 3/(ηλ)) the mean per-step angle of each hidden layer in (i) is "
          "≈ sqrt(2ηλ) for plain SGD, within about 10–20%.",
          "angle_ratio[ln]", "last-epoch mean angle / sqrt(2ηλ) equivalent to 1 within ±0.2 "
          "(the notes' 20%; largest λ, MNIST-1D)", Equivalence(0.2, null=1.0), measured_by=M),
    # --- B7: accuracy, and the norm-matched control
    Claim("B7.change", NOTES, "In (i), changing λ changes test accuracy.",
          "acc_change[ln]", "acc(λ_max) − acc(0) beyond ±1 point, either sign (MNIST-1D)",
          Effect("!=", 1.0), measured_by=M),
    Claim("B7.control_ln", NOTES,
          "In (i) the effect of λ largely disappears under the norm-matched no-decay control.",
          "control_residual[ln]", "disagreement(control, decayed) / disagreement(λ=0, decayed)"
          " below 1 by > 0.5 (residual < 0.5)", Effect("<", 0.5, null=1.0), measured_by=M),
    Claim("B7.control_ln_acc", NOTES,
          "... in accuracy: the control's test accuracy matches the decayed run's.",
          "control_acc_gap[ln]", "acc(control) − acc(decayed) equivalent to 0 within ±1 point",
          Equivalence(1.0), measured_by=M),
    Claim("B7.control_pre", NOTES,
          "In (ii) without a final LN the effect does not fully disappear under the control.",
          "control_residual[pre] − control_residual[ln]",
          "residual of (ii) above that of (i) by > 0.1 (paired)", Effect(">", 0.1),
          measured_by=M),
    # --- the blog's practical thesis, as an empirical claim on the trained runs: weight decay
    # helps a residual LN net (read: (ii), pre-norm) and not a non-residual one ((i)). Minimal
    # effect 1 point of MNIST-1D test accuracy (10 of 1,000 test samples), as for B7.
    Claim("blog.thesis_residual", BLOG,
          "Weight decay helps a residual LayerNorm net (pre-norm, (ii)).",
          "acc_change[pre]", "acc(λ_max) − acc(0) > 1 point (paired, MNIST-1D)",
          Effect(">", 1.0), measured_by=M),
    Claim("blog.thesis_plain", BLOG,
          "Weight decay is useless without residual connections (LN net (i)): it does not "
          "raise test accuracy.",
          "acc_change[ln]", "acc(λ_max) − acc(0) not above +1 point (paired, MNIST-1D)",
          NonInferiority("<", 1.0), measured_by=M),
    Claim("blog.thesis_contrast", BLOG,
          "Weight decay helps the residual LN net more than the non-residual one.",
          "acc_change[pre] − acc_change[ln]", "difference of paired changes > 1 point",
          Effect(">", 1.0), measured_by=M),
]


def analyze(results: Results) -> dict[str, Measurement]:
    """``measures.measure_all`` with these claims (a sweep without λ > 0 leaves them empty);
    the claims name this function as their measurement."""
    return measure_all(results, CLAIMS)
