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
disputes, and leaving it out isolates the part the blog's argument is about. Sweep: λ ∈ {0,
1e-2, 3e-2} ("quick") × 3 seeds on MNIST-1D with 15% of the training labels flipped (so that
regularization matters) and on scikit-learn's digits.

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
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lnlab.experiments.claims import (
    Check,
    CheckBound,
    Claim,
    Effect,
    Equivalence,
    Measurement,
    NonInferiority,
)
from lnlab.experiments.framework import Results, Run, fmt_mean_std

NAME = "weight-decay"
DESCRIPTION = ("Weight decay vs LayerNorm scale invariance (the weight-decay blog and notes "
               "part (b)): six MLP block forms × weight decay × seeds; audit table, effective "
               "learning rate, angular updates, a norm-matched control and the Li–Arora check.")
SEEDS = {"quick": 5, "full": 5}
OPTIONS = {"tiny": "1 = a seconds-long sweep (tests only): 2 archs, 2 epochs, no digits"}
HEADLINE_METRIC = "final_test_acc"

NOTES = "research notes xu_adanorm_and_weight_decay.md §7"
BLOG = "Dar 2023, 'Weight decay is useless without residual connections' (blog)"
AUDIT = "lnlab audit (README, audit section): corrections to the notes' table"
NORM = "layernorm_simple"
ARCHS: dict[str, str] = {  # name → MLP options after depth/width
    "none": "norm=none",
    "ln": f"norm={NORM},residual=none",
    "pre": f"norm={NORM},residual=pre",
    "pre+final": f"norm={NORM},residual=pre,final_norm=true",
    "post": f"norm={NORM},residual=post",
    "branch": f"norm={NORM},residual=branch",
}
LR = 0.1
NOISE = 0.15
STATIC_INPUTS = 128  # test examples the static (audit) checks run on
DECAY_STEP = math.exp(-1.0)  # what 1/(ηλ) pure decay steps do to the hidden parameters
SCALE = {  # per scale: model size, λ grid, epochs per dataset, control λs
    "quick": {"depth": 3, "width": 64, "wds": [0.0, 1e-2, 3e-2],
              "epochs": {"mnist1d": 40, "digits": 30}, "control_wds": [3e-2],
              "control_datasets": ["mnist1d"], "control_modes": [True]},
    "full": {"depth": 4, "width": 128, "wds": [0.0, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
             "epochs": {"mnist1d": 150, "digits": 100}, "control_wds": [1e-2, 3e-2, 1e-1],
             "control_datasets": ["mnist1d", "digits"], "control_modes": [True, False]},
    "tiny": {"depth": 2, "width": 16, "wds": [0.0, 3e-2], "epochs": {"mnist1d": 2},
             "control_wds": [3e-2], "control_datasets": ["mnist1d"], "control_modes": [True]},
}
TINY_ARCHS = ("ln", "pre")
LI_ARORA = {"eta": 0.1, "wd": 0.05, "steps": 100, "batch": 100, "depth": 3, "width": 32}


def _lam_max(results: Results) -> float | None:
    wds = [w for w in results.values("wd") if isinstance(w, int | float) and w > 0]
    ctrl = [w for w in results.select(kind="control").values("wd") if isinstance(w, int | float)]
    pool = ctrl or wds
    return max(pool) if pool else None


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


# ----------------------------------------------------------------------------- sweep


def model_spec(arch: str, depth: int, width: int) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}")
    return f"mlp:depth={depth},width={width},{ARCHS[arch]}"


def sweep(scale: str, seeds: list[int], tiny: str = "0") -> list[dict[str, Any]]:
    """Training runs (arch × dataset × λ × seed), controls, and one Li–Arora run per seed."""
    from lnlab.errors import LnlabError

    if tiny not in ("0", "1"):
        raise LnlabError(f"option tiny must be 0 or 1, got {tiny!r}")
    sc = SCALE["tiny" if tiny == "1" else scale]
    archs = TINY_ARCHS if tiny == "1" else tuple(ARCHS)
    configs: list[dict[str, Any]] = []
    for dataset, epochs in sc["epochs"].items():
        for arch in archs:
            for wd in sc["wds"]:
                for seed in seeds:
                    train = {"model": model_spec(arch, sc["depth"], sc["width"]),
                             "data": dataset, "noise": NOISE if dataset == "mnist1d" else 0.0,
                             "optimizer": "sgd", "momentum": 0.0, "lr": LR,
                             "weight_decay": wd, "wd_exclude": ["readout"] if wd else [],
                             "batch_size": 100, "epochs": epochs, "checkpoint_every": 0,
                             "seed": seed}
                    static = wd == 0 and dataset == "mnist1d"
                    base = {"kind": "train", "arch": arch, "dataset": dataset, "wd": wd,
                            "static": static, "train": train}
                    if static:
                        base["static_inputs"] = STATIC_INPUTS
                    configs.append(base)
                    if wd in sc["control_wds"] and dataset in sc["control_datasets"]:
                        for exact in sc["control_modes"]:
                            ctrl = {**copy.deepcopy(base), "kind": "control", "static": False,
                                    "exact": exact}
                            ctrl.pop("static_inputs", None)
                            configs.append(ctrl)
    for seed in seeds:
        configs.append({"kind": "li-arora", "arch": "ln", "dataset": "mnist1d", "seed": seed,
                        **({"steps": 20} if tiny == "1" else {})})
    return configs


# ----------------------------------------------------------------------------- measurement


def hidden_groups(model: Any) -> dict[str, list[str]]:
    """Every Linear except the readout, weight and bias as one group (execution order)."""
    from torch import nn

    out: dict[str, list[str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and name != "readout":
            out[name] = [f"{name}.{p}" for p, _ in m.named_parameters(recurse=False)]
    return out


def tracked_groups(model: Any) -> dict[str, list[str]]:
    """Hidden groups, the readout, and the residual stream writers (input_proj + every fc2)."""
    groups = hidden_groups(model)
    if "input_proj" in groups:
        groups["stream"] = [n for g, ns in groups.items()
                            if g == "input_proj" or g.endswith(".fc2") for n in ns]
    groups["readout"] = [n for n, _ in model.named_parameters() if n.startswith("readout.")]
    return groups


class GroupTracker:
    """Per-step angular update, norm and effective learning rate of parameter groups.

    A trainer step hook (``step``) plus an epoch hook (``epoch``). Everything is kept as
    float64 tensors and reduced with one ``index_add_`` per step (no host sync until the
    epoch's end). ``lr_scale`` (a tensor per group) is the control's learning-rate multiplier,
    so η_eff = lr·scale/‖w‖². ``record_norms`` keeps ‖w‖² after every step (the control's
    target trajectory). Not checkpointed: runs that use it train without checkpoints.
    """

    def __init__(self, model: Any, groups: Mapping[str, Sequence[str]], lr: float, *,
                 lr_scale: Any = None, record_norms: bool = False) -> None:
        import torch

        params = dict(model.named_parameters())
        self.names = list(groups)
        self.tensors = [params[n] for g in groups.values() for n in g]
        self.gid = torch.cat([torch.full((params[n].numel(),), i, dtype=torch.long)
                              for i, g in enumerate(groups.values()) for n in g])
        self.lr = float(lr)
        self.lr_scale = lr_scale
        self.prev = self._flat()
        n = len(self.names)
        self.sum_angle = torch.zeros(n, dtype=torch.float64)
        self.count = 0
        self.norms2: list[Any] | None = [self._sq(self.prev)] if record_norms else None

    def _flat(self) -> Any:
        import torch

        return torch.cat([p.detach().reshape(-1) for p in self.tensors]).double()

    def _sq(self, v: Any) -> Any:
        import torch

        return torch.zeros(len(self.names), dtype=torch.float64).index_add_(0, self.gid, v * v)

    def step(self, state: Any = None) -> None:
        import torch

        cur = self._flat()
        d = cur - self.prev
        n = len(self.names)
        s = torch.zeros(n, 2, dtype=torch.float64).index_add_(
            0, self.gid, torch.stack([d * self.prev, self.prev * self.prev], 1))
        dp, pp = s[:, 0], s[:, 1].clamp_min(1e-300)
        # the component of d orthogonal to prev, computed directly (no cancellation)
        e = d - (dp / pp)[self.gid] * self.prev
        perp = torch.zeros(n, dtype=torch.float64).index_add_(0, self.gid, e * e).sqrt()
        # angle between prev and cur = prev + d: atan2(|d⊥|, |prev| + d·prev/|prev|)
        self.sum_angle += torch.atan2(perp, pp.sqrt() + dp / pp.sqrt())
        self.count += 1
        self.prev = cur
        if self.norms2 is not None:
            self.norms2.append(self._sq(cur))

    def epoch(self, state: Any = None) -> dict[str, float]:
        sq = self._sq(self.prev)
        scale = self.lr_scale if self.lr_scale is not None else 1.0
        eta = (self.lr * scale / sq).tolist()
        ang = (self.sum_angle / max(1, self.count)).tolist()
        norms = sq.sqrt().tolist()
        out: dict[str, float] = {}
        hidden = [i for i, g in enumerate(self.names) if g not in ("readout", "stream")]
        for i, g in enumerate(self.names):
            out[f"angle/{g}"] = ang[i] if self.count else math.nan
            out[f"norm/{g}"] = norms[i]
            out[f"eta_eff/{g}"] = eta[i]
        if hidden:
            out["hidden_norm"] = math.sqrt(sum(norms[i] ** 2 for i in hidden))
            out["eta_eff_hidden"] = sum(eta[i] for i in hidden) / len(hidden)
            out["angle_hidden"] = sum(out[f"angle/{self.names[i]}"] for i in hidden) / len(
                hidden)
        self.sum_angle.zero_()
        self.count = 0
        return out


def encode_preds(preds: Any) -> str:
    """Argmax predictions as one character per example (classes < 36): compact in the store."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(alphabet[int(p)] for p in preds.tolist())


def disagreement(a: str, b: str) -> float:
    """Share of examples on which two encoded prediction strings differ."""
    if len(a) != len(b) or not a:
        raise ValueError("prediction strings of different lengths")
    return sum(x != y for x, y in zip(a, b, strict=True)) / len(a)


def _build(cfg: Any, exact: bool = False) -> Any:
    """The model the trainer would build for ``cfg`` (same init seed), built here so hooks
    can be attached before training. ``exact``: float64 with every norm's eps = 0 (lnlab
    MLPs cast their input to the readout's dtype, so the trainer needs no change)."""
    import torch

    from lnlab.data import load_dataset
    from lnlab.train import derive_seed, make_model

    info = load_dataset(cfg.data, seed=cfg.data_seed).info
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = make_model(cfg, info)
    if exact:
        from lnlab.analysis.scale_invariance import set_norm_eps

        model = model.double()
        set_norm_eps(model, 0.0)
    return model


def _test_preds(model: Any, cfg: Any) -> str:
    from lnlab.data import load_dataset
    from lnlab.train import evaluate

    data = load_dataset(cfg.data, seed=cfg.data_seed)
    return encode_preds(evaluate(model, data.x_test, data.y_test).preds)


def static_checks(model: Any, x: Any) -> dict[str, Any]:
    """Audit numbers of one model (float64): per-group max change at eps = 0, the joint
    stream, the unconstrained share, a pure hidden decay step and the eps breakdown."""
    from lnlab.analysis.scale_invariance import audit, function_change

    rep = audit(model, x)
    out: dict[str, Any] = {
        "static/unconstrained_share": rep.unconstrained_share,
        "static/invariant_share": rep.invariant_share,
        "static/infimum_ratio": rep.infimum_ratio,
        "static/verdicts": "; ".join(f"{g.name}={g.verdict}" for g in rep.groups),
    }
    for g in rep.groups:
        out[f"static/change/{g.name}"] = max(g.change_eps0.values())
    for j in rep.joint:
        out["static/change/stream"] = max(j.change_eps0.values())
        out["static/stream_verdict"] = j.verdict
    hidden = [n for n, _ in model.named_parameters() if not n.startswith("readout.")]
    out["static/decay_step"] = function_change(model, x, dict.fromkeys(hidden, DECAY_STEP))
    # the blocks only (no input projection), with and without their fc2 biases: the audit's
    # correction for h + LN(F(h)) is about a decay step on the blocks
    blocks = [n for n in hidden if n.startswith("blocks.")]
    out["static/decay_step_blocks"] = function_change(model, x, dict.fromkeys(blocks, DECAY_STEP))
    keep = [n for n in blocks if not n.endswith("fc2.bias")]
    out["static/decay_step_keep_b2"] = function_change(model, x, dict.fromkeys(keep, DECAY_STEP))
    first = next(iter(hidden_groups(model).values()))
    for c in (1e-1, 1e-2, 1e-3):
        out[f"static/eps_change/{c:g}"] = function_change(model, x, dict.fromkeys(first, c),
                                                          eps=None)
    return out


def run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """One run: a tracked training run, a norm-matched control, or the Li–Arora check."""
    kind = config["kind"]
    if kind == "li-arora":
        return run_li_arora(config)
    from lnlab.experiments.framework import train_output
    from lnlab.train import TrainConfig, train

    cfg = TrainConfig.from_dict(config["train"])
    if kind == "control":
        return run_control(cfg, run_dir, exact=bool(config.get("exact", True)))
    if kind != "train":
        raise ValueError(f"unknown run kind {kind!r}")
    model = _build(cfg)
    tracker = GroupTracker(model, tracked_groups(model), cfg.lr)
    result = train(cfg, run_dir, model=model, hooks=[tracker.epoch],
                   step_hooks=[tracker.step])
    out = train_output(result, run_dir)
    if result.model is not None:
        out["summary"]["test_pred"] = _test_preds(result.model, cfg)
        if config.get("static") and result.status == "finished":
            n = int(config.get("static_inputs", STATIC_INPUTS))
            out["summary"].update(_static_for(result.model, cfg, n))
    return out


def _static_for(model: Any, cfg: Any, n: int) -> dict[str, Any]:
    from lnlab.data import load_dataset

    data = load_dataset(cfg.data, seed=cfg.data_seed)
    return static_checks(model, data.x_test[:n])


def run_control(cfg: Any, run_dir: Path, *, exact: bool = True) -> dict[str, Any]:
    """Norm-matched control: retrain the decayed twin recording its per-step hidden norms, then
    train without decay with each hidden group's gradient scaled by
    k_t = ‖w_c,t‖² / ((1 − ηλ)‖w_twin,t‖²), i.e. the twin's η_eff at every step.

    ``exact`` (the default): twin, control and a λ = 0 reference all in float64 with eps = 0,
    where the invariance is exact, so the control reproduces a scale-invariant twin's
    function exactly (tested) and any remaining distance measures non-invariance. With the
    real eps in float32, eps breaks the invariance slightly and training at these learning
    rates amplifies it: the functions then drift apart even in (i) (see the docs)."""
    import torch

    from lnlab.experiments.framework import train_output
    from lnlab.train import train

    lam, eta = float(cfg.weight_decay), float(cfg.lr)
    x_test = _test_inputs(cfg)
    twin = _build(cfg, exact)
    groups = hidden_groups(twin)
    rec = GroupTracker(twin, groups, eta, record_norms=True)
    twin_preds = PredRecorder(x_test)
    twin_res = train(cfg, None, hooks=[twin_preds], step_hooks=[rec.step], model=twin)
    assert rec.norms2 is not None
    target = torch.stack(rec.norms2)  # (steps + 1, groups): ‖w_twin,t‖²

    ctrl_cfg = copy.deepcopy(cfg)
    ctrl_cfg.weight_decay, ctrl_cfg.wd_exclude = 0.0, []
    model = _build(ctrl_cfg, exact)
    scale = torch.full((len(groups),), 1.0 / (1.0 - eta * lam), dtype=torch.float64)
    params = dict(model.named_parameters())
    for i, names in enumerate(groups.values()):
        for n in names:
            params[n].register_hook(lambda g, i=i: g * scale[i].to(g.dtype))
    tracker = GroupTracker(model, {**tracked_groups(model)}, eta)
    own = GroupTracker(model, groups, eta, lr_scale=scale)  # η_eff of the control's groups
    ctrl_preds = PredRecorder(x_test)

    def match(state: Any) -> None:
        own.step()
        t = min(state.step, target.shape[0] - 1)
        scale.copy_(own._sq(own.prev) / ((1.0 - eta * lam) * target[t]))

    def epoch(state: Any) -> dict[str, float]:
        out = tracker.epoch()
        mine = own.epoch()
        out.update({k: v for k, v in mine.items() if k.startswith("eta_eff")})
        out["lr_scale_max"] = float(scale.max())
        ctrl_preds(state)
        return out

    result = train(ctrl_cfg, run_dir, model=model, hooks=[epoch],
                   step_hooks=[tracker.step, match])
    out = train_output(result, run_dir)
    s = out["summary"]
    s["twin_status"] = twin_res.status
    s["twin_final_test_acc"] = twin_res.summary.get("final_test_acc")
    s["exact"] = exact
    recs = [ctrl_preds, twin_preds]
    if exact:  # the λ = 0 reference in the same arithmetic
        zero_preds = PredRecorder(x_test)
        train(ctrl_cfg, None, hooks=[zero_preds], model=_build(ctrl_cfg, exact))
        recs.append(zero_preds)
    # compare at the control's last finite epoch (its final one unless it diverged)
    common = set.intersection(*(set(r.preds) for r in recs))
    if common:
        e = max(common)
        s["compare_epoch"] = e
        s["test_pred"], s["cmp_test_acc"] = ctrl_preds.preds[e], ctrl_preds.acc[e]
        s["twin_test_pred"], s["twin_test_acc"] = twin_preds.preds[e], twin_preds.acc[e]
        if exact:
            s["zero_test_pred"], s["zero_test_acc"] = zero_preds.preds[e], zero_preds.acc[e]
    return out


class PredRecorder:
    """Epoch hook: test-set argmax predictions and accuracy per epoch, kept only while every
    logit is finite (so a diverging run can still be compared at its last sound epoch)."""

    def __init__(self, x_test: Any) -> None:
        self.x = x_test
        self.preds: dict[int, str] = {}
        self.acc: dict[int, float] = {}

    def __call__(self, state: Any) -> None:
        import torch

        with torch.no_grad():
            state.model.eval()
            logits = state.model(self.x.to(state.device))
        if bool(torch.isfinite(logits).all()):
            self.preds[state.epoch] = encode_preds(logits.argmax(-1))
            self.acc[state.epoch] = float(state.metrics.get("test_acc", math.nan))


def _test_inputs(cfg: Any) -> Any:
    from lnlab.data import load_dataset

    return load_dataset(cfg.data, seed=cfg.data_seed).x_test


def run_li_arora(config: Mapping[str, Any]) -> dict[str, Any]:
    """B4/B5: deterministic float64 SGD runs on fixed minibatches (no trainer, no data order
    randomness): decay vs the Li–Arora learning rate vs constant lr."""
    import torch
    import torch.nn.functional as F

    from lnlab.analysis.scale_invariance import li_arora_lr, set_norm_eps
    from lnlab.data import load_dataset
    from lnlab.models import build_model
    from lnlab.train import derive_seed

    p = {**LI_ARORA, **{k: config[k] for k in ("steps",) if k in config}}
    eta, lam, steps, bs = float(p["eta"]), float(p["wd"]), int(p["steps"]), int(p["batch"])
    seed = int(config["seed"])
    data = load_dataset("mnist1d")
    n = len(data.y_train)
    g = torch.Generator().manual_seed(derive_seed(seed, "li-arora-order"))
    order = torch.randperm(n, generator=g)
    x_all, y_all = data.x_train.double(), data.y_train

    def batch(t: int) -> tuple[Any, Any]:
        idx = order[(t * bs) % n:(t * bs) % n + bs]
        return x_all[idx], y_all[idx]

    def make(arch: str) -> Any:
        with torch.random.fork_rng():
            torch.manual_seed(derive_seed(seed, "li-arora-init", arch))
            m = build_model(model_spec(arch, int(p["depth"]), int(p["width"])),
                            input_shape=data.info.input_shape,
                            num_classes=data.info.num_classes).double()
        set_norm_eps(m, 0.0)
        return m

    def trial(arch: str, train_readout: bool) -> dict[str, float]:
        base = make(arch)
        models = {k: copy.deepcopy(base) for k in "ABC"}
        groups = hidden_groups(base)
        worst = {"AB": 0.0, "AC": 0.0, "norm_id": 0.0, "cos": 0.0, "ratio": 0.0}

        def note(key: str, v: float) -> None:  # a NaN must not vanish inside max()
            worst[key] = max(worst[key], v) if math.isfinite(v) else math.inf
        for t in range(steps):
            x, y = batch(t)
            lrs = {"A": eta, "B": li_arora_lr(eta, lam, t), "C": eta}
            for k, m in models.items():
                m.zero_grad(set_to_none=True)
                F.cross_entropy(m(x), y).backward()
                ps = dict(m.named_parameters())
                with torch.no_grad():
                    if k == "C":  # B4: norm growth and orthogonality before the update
                        for names in groups.values():
                            w = torch.cat([ps[q].reshape(-1) for q in names])
                            gr = torch.cat([ps[q].grad.reshape(-1) for q in names])
                            nxt = w - eta * gr
                            dev = (nxt.pow(2).sum() - w.pow(2).sum() - eta**2 * gr.pow(2).sum())
                            note("norm_id", abs(float(dev / w.pow(2).sum())))
                            cos = float(gr @ w / (gr.norm() * w.norm()).clamp_min(1e-300))
                            note("cos", abs(cos))
                    for q, prm in ps.items():
                        if q.startswith("readout.") and not train_readout:
                            continue
                        if k == "A":
                            prm.mul_(1.0 - eta * lam)
                        prm.sub_(lrs[k] * prm.grad)
            pa, pb, pc = (dict(models[k].named_parameters()) for k in "ABC")
            for names in groups.values():
                ua, ub, uc = (torch.cat([d[q].detach().reshape(-1) for q in names])
                              for d in (pa, pb, pc))
                na, nb = ua.norm(), ub.norm()
                note("AB", float((ua / na - ub / nb).norm()))
                note("AC", float((ua / na - uc / uc.norm()).norm()))
                pred = (1.0 - eta * lam) ** (-(t + 1))
                note("ratio", abs(float(nb / na) / pred - 1.0))
        return worst

    ln = trial("ln", False)
    ro = trial("ln", True)
    pre = trial("pre", False)
    summary = {"li_arora_direction_gap": ln["AB"], "li_arora_norm_ratio_error": ln["ratio"],
               "li_arora_gap_constant_lr": ln["AC"], "li_arora_gap_readout_trained": ro["AB"],
               "li_arora_gap_pre": pre["AB"], "b4_norm_identity": ln["norm_id"],
               "b4_cos": ln["cos"], "steps": steps, "eta": eta, "wd": lam}
    finite = all(math.isfinite(v) for v in summary.values())
    return {"status": "finished" if finite else "diverged", "summary": summary, "epochs": []}


# ----------------------------------------------------------------------------- analysis


def _acc(run: Run) -> float:
    return 100.0 * float(run.summary["final_test_acc"])


def _pick(results: Results, **where: Any) -> dict[int, Run]:
    """Finished runs matching ``where``, by seed."""
    return {r.seed: r for r in results.select(where, status="finished").runs}


def _static(results: Results, arch: str, key: str | Any) -> Measurement:
    def value(r: Run) -> float | None:
        if callable(key):
            return key(r.summary)
        v = r.summary.get(key)
        return float(v) if isinstance(v, int | float) else None

    return results.per_seed(lambda r: value(r),  # type: ignore[arg-type, return-value]
                            {"kind": "train", "arch": arch, "static": True})


def _max_of(prefix: str, suffix: str = "") -> Any:
    def f(s: Mapping[str, Any]) -> float | None:
        vs = [float(v) for k, v in s.items() if k.startswith(prefix) and k.endswith(suffix)
              and isinstance(v, int | float)]
        return max(vs) if vs else None
    return f


def _min_of(prefix: str, suffixes: Sequence[str]) -> Any:
    def f(s: Mapping[str, Any]) -> float | None:
        vs = [float(v) for k, v in s.items() if k.startswith(prefix)
              and any(k.endswith(x) for x in suffixes) and isinstance(v, int | float)]
        return min(vs) if vs else None
    return f


def _eps_growth(s: Mapping[str, Any]) -> float | None:
    a, b = s.get("static/eps_change/0.1"), s.get("static/eps_change/0.001")
    if not isinstance(a, int | float) or not isinstance(b, int | float) or a <= 0:
        return None
    return float(b) / float(a)


def function_distance(results: Results, dataset: str, arch: str, wd: float,
                      kind: str = "train", **where: Any) -> Measurement:
    """Per seed: share of test predictions (%) that differ from the same-seed λ = 0 run (for
    an exact control: its own float64, eps = 0 λ = 0 run)."""
    ref = _pick(results, kind="train", dataset=dataset, arch=arch, wd=0.0)
    runs = _pick(results, kind=kind, dataset=dataset, arch=arch, wd=wd, **where)
    vals = {}
    for s, r in runs.items():
        zero = r.summary.get("zero_test_pred") or (
            ref[s].summary.get("test_pred") if s in ref else None)
        if zero and "test_pred" in r.summary:
            vals[s] = 100.0 * disagreement(r.summary["test_pred"], zero)
    return Measurement(vals, unit="% of test set")


def control_measures(results: Results, dataset: str, arch: str, wd: float, *,
                     exact: bool = True) -> tuple[Measurement, Measurement, int]:
    """(residual, acc gap, twins that differ from the sweep's decayed run) per seed.

    residual = disagreement(control, decayed twin) / disagreement(λ = 0 run, decayed twin):
    0 when the control reproduces the decayed function, ≈ 1 when it is as far away as
    training without decay. All three are taken at the control's last finite epoch (a
    diverged control counts, compared where it still was sound); the λ = 0 run is the control
    run's own exact-arithmetic one when it has it, else the sweep's."""
    ctrl = {r.seed: r for r in results.select(kind="control", dataset=dataset, arch=arch,
                                               wd=wd, exact=exact,
                                               status=("finished", "diverged")).runs}
    ref = _pick(results, kind="train", dataset=dataset, arch=arch, wd=0.0)
    dec = _pick(results, kind="train", dataset=dataset, arch=arch, wd=wd)
    resid, gap, mismatch, diverged = {}, {}, 0, 0
    for s, c in ctrl.items():
        twin = c.summary.get("twin_test_pred")
        if twin is None or "test_pred" not in c.summary or (
                s not in ref and "zero_test_pred" not in c.summary):
            continue
        if s in dec and not c.summary.get("exact") and dec[s].summary.get("test_pred") != twin:
            mismatch += 1
        zero = c.summary.get("zero_test_pred") or ref[s].summary["test_pred"]
        far = disagreement(zero, twin)
        resid[s] = disagreement(c.summary["test_pred"], twin) / far if far > 0 else math.nan
        ta, ca = c.summary.get("twin_test_acc"), c.summary.get("cmp_test_acc")
        if isinstance(ta, int | float) and isinstance(ca, int | float):
            gap[s] = 100.0 * (float(ca) - float(ta))
        diverged += c.status == "diverged"
    notes = []
    if mismatch:
        notes.append(f"{mismatch} twin(s) differ from the sweep's decayed run")
    note = "; ".join(notes)
    # a diverged control is not evidence for anything: the claims built on it are inconclusive
    blocked = (f"{diverged} of {len(ctrl)} control run(s) diverged; a diverged control "
               "cannot show that the effect of λ disappears" if diverged else "")
    return (Measurement(resid, unit="ratio", note=note, blocked=blocked),
            Measurement(gap, unit="points", note=note, blocked=blocked), mismatch)


def analyze(results: Results) -> dict[str, Measurement]:
    """Static audit numbers, exact identities, B6 angles, B7 accuracy and control metrics."""
    out: dict[str, Measurement] = {}
    for arch in ARCHS:
        out[f"unconstrained_share[{arch}]"] = _static(results, arch,
                                                      "static/unconstrained_share")
        out[f"decay_step[{arch}]"] = _static(results, arch, "static/decay_step")
        out[f"decay_step_keep_b2[{arch}]"] = _static(results, arch, "static/decay_step_keep_b2")
        out[f"decay_step_blocks[{arch}]"] = _static(results, arch, "static/decay_step_blocks")
    out["change[ln/hidden]"] = _static(results, "ln", _max_of("static/change/blocks."))
    out["change[ln/readout]"] = _static(results, "ln", "static/change/readout")
    out["eps_growth[ln]"] = _static(results, "ln", _eps_growth)
    out["change[pre/min_fc2]"] = _static(results, "pre", _min_of("static/change/", [".fc2"]))
    out["change[pre/stream]"] = _static(results, "pre", "static/change/stream")
    out["change[pre+final/stream]"] = _static(results, "pre+final", "static/change/stream")
    out["change[post/min_block]"] = _static(results, "post",
                                            _min_of("static/change/blocks.", [".fc1", ".fc2"]))
    out["change[branch/fc2]"] = _static(results, "branch", _max_of("static/change/", ".fc2"))
    for key in ("li_arora_direction_gap", "li_arora_norm_ratio_error",
                "li_arora_gap_constant_lr", "li_arora_gap_readout_trained", "li_arora_gap_pre",
                "b4_norm_identity", "b4_cos"):
        out[key] = results.per_seed(key, kind="li-arora")

    lam = _lam_max(results)
    if lam is not None:
        for arch in ARCHS:
            out[f"angle_ratio[{arch}]"] = _angle_ratio(results, arch, lam)
            d0 = results.per_seed(_acc, kind="train", dataset="mnist1d", arch=arch, wd=0.0)
            d1 = results.per_seed(_acc, kind="train", dataset="mnist1d", arch=arch, wd=lam)
            common = sorted(set(d0.values) & set(d1.values))
            out[f"acc_change[{arch}]"] = Measurement(
                {s: d1.values[s] - d0.values[s] for s in common}, unit="points",
                excluded=d0.excluded + d1.excluded)
            resid, gap, _ = control_measures(results, "mnist1d", arch, lam)
            out[f"control_residual[{arch}]"] = resid
            out[f"control_acc_gap[{arch}]"] = gap
            if results.select(kind="control", exact=False, arch=arch).runs:
                resid, gap, _ = control_measures(results, "mnist1d", arch, lam, exact=False)
                out[f"control_residual_real_eps[{arch}]"] = resid
                out[f"control_acc_gap_real_eps[{arch}]"] = gap
        ca, cb = out["acc_change[pre]"], out["acc_change[ln]"]
        both = sorted(set(ca.values) & set(cb.values))
        out["acc_change[pre] − acc_change[ln]"] = Measurement(
            {s: ca.values[s] - cb.values[s] for s in both}, unit="points",
            excluded=ca.excluded + cb.excluded)
        a, b = out["control_residual[pre]"], out["control_residual[ln]"]
        common = sorted(set(a.values) & set(b.values))
        out["control_residual[pre] − control_residual[ln]"] = Measurement(
            {s: a.values[s] - b.values[s] for s in common}, unit="ratio",
            blocked="; ".join(x for x in (a.blocked, b.blocked) if x))
    else:  # no λ > 0 in this sweep: the λ claims have nothing to read (n = 0, not a defect)
        for c in CLAIMS:
            out.setdefault(c.metric, Measurement({}, note="no λ > 0 runs in this sweep"))
    return out


def _angle_ratio(results: Results, arch: str, lam: float) -> Measurement:
    """Last-epoch mean per-step angle of the hidden layers / sqrt(2ηλ), per seed; runs that
    have not had 3/(ηλ) steps are excluded (not at equilibrium yet)."""
    vals: dict[int, float] = {}
    excluded = 0
    for s, r in _pick(results, kind="train", dataset="mnist1d", arch=arch, wd=lam).items():
        eta = float(r.get("train.lr"))
        if not r.epochs or r.summary.get("steps", 0) < 3.0 / (eta * lam):
            excluded += 1
            continue
        last = r.epochs[-1]
        angles = [float(v) for k, v in last.items() if k.startswith("angle/blocks.")
                  and isinstance(v, int | float)]
        if angles:
            vals[s] = (sum(angles) / len(angles)) / math.sqrt(2 * eta * lam)
    return Measurement(vals, unit="ratio", excluded=excluded)


# ----------------------------------------------------------------------------- report


def _col(runs: Sequence[Run], f: Any) -> str:
    xs = [v for v in (f(r) for r in runs) if isinstance(v, int | float) and math.isfinite(v)]
    return fmt_mean_std(xs)


def _last(metric: str) -> Any:
    return lambda r: r.epochs[-1].get(metric) if r.epochs else None


def table(results: Results) -> tuple[list[str], list[list[str]]]:
    """One row per (dataset, arch, λ or control): accuracy, distance from λ = 0, norms."""
    header = ["dataset", "arch", "run", "runs", "test acc (%)", "train acc (%)",
              "disagree vs λ=0 (%)", "hidden ‖w‖", "readout ‖w‖", "η_eff hidden",
              "angle/step", "unconstrained share"]
    rows = []
    for dataset in results.select(kind="train").values("dataset"):
        for arch in ARCHS:
            share = _static(results, arch, "static/unconstrained_share")
            for kind, exact in (("train", None), ("control", True), ("control", False)):
                where = {"kind": kind} if exact is None else {"kind": kind, "exact": exact}
                for wd in results.select(where, dataset=dataset, arch=arch).values("wd"):
                    sel = results.select(where, dataset=dataset, arch=arch, wd=wd)
                    done = [r for r in sel.runs if r.status == "finished"]
                    dist = function_distance(results, dataset, arch, wd, kind,
                                             **({} if exact is None else {"exact": exact}))
                    label = (f"λ={wd:g}" if kind == "train" else
                             f"control (λ={wd:g}, {'exact' if exact else 'real eps'})")
                    div = sum(r.status == "diverged" for r in sel.runs)
                    rows.append([
                        dataset, arch, label,
                        f"{len(done)}/{len(sel.runs)}" + (f", {div} diverged" if div else ""),
                        _col(done, _acc),
                        _col(done, lambda r: 100 * r.summary.get("final_train_acc", math.nan)),
                        fmt_mean_std(dist.finite) if wd or kind == "control" else "0",
                        _col(done, _last("hidden_norm")),
                        _col(done, _last("norm/readout")),
                        _col(done, _last("eta_eff_hidden")),
                        _col(done, _last("angle_hidden")),
                        fmt_mean_std(share.finite) if wd == 0 and kind == "train"
                        and dataset == "mnist1d" else "",
                    ])
    return header, rows


def _wd_label(wd: float) -> str:
    return "0" if wd == 0 else f"{wd:g}"


def figures(results: Results, out_dir: Path) -> list[Path]:
    """Accuracy vs λ, norms / η_eff / angles over training, and the audit table."""
    out_dir = Path(out_dir)
    paths = [_fig_accuracy(results, out_dir)]
    p = _fig_training(results, out_dir)
    if p is not None:
        paths.append(p)
    p = _fig_audit(results, out_dir)
    if p is not None:
        paths.append(p)
    return paths


def _fig_accuracy(results: Results, out_dir: Path) -> Path:
    from lnlab.plotting import COLORS, figure, save

    datasets = results.select(kind="train").values("dataset")
    with figure(ncols=max(1, len(datasets)), nrows=2, width=3.6, height=2.6) as (fig, axes):
        axes = axes.reshape(2, -1) if hasattr(axes, "reshape") else [[axes], [axes]]
        for j, dataset in enumerate(datasets):
            wds = sorted(results.select(kind="train", dataset=dataset).values("wd"))
            xs = list(range(len(wds)))
            for i, arch in enumerate(ARCHS):
                for row, metric in enumerate(("acc", "dist")):
                    ax = axes[row][j]
                    means, stds = [], []
                    for wd in wds:
                        if metric == "acc":
                            m = results.per_seed(_acc, kind="train", dataset=dataset,
                                                 arch=arch, wd=wd)
                        else:
                            m = function_distance(results, dataset, arch, wd)
                        means.append(m.mean)
                        stds.append(m.std)
                    ax.errorbar([x + 0.04 * (i - 2.5) for x in xs], means, yerr=stds,
                                marker="o", ms=3, color=COLORS[i], label=arch)
                    ctrl = results.select(kind="control", dataset=dataset, arch=arch,
                                          exact=True)
                    for wd in ctrl.values("wd"):
                        if wd not in wds:
                            continue
                        if metric == "acc":
                            m = ctrl.per_seed(_acc, wd=wd)
                        else:
                            m = function_distance(results, dataset, arch, wd, "control",
                                                  exact=True)
                        ax.errorbar([wds.index(wd) + 0.2 + 0.04 * (i - 2.5)], [m.mean],
                                    yerr=[m.std], marker="s", mfc="white", ms=4,
                                    color=COLORS[i], ls="none")
            for row, ylabel in enumerate(("final test accuracy (%)",
                                          "test disagreement vs λ=0 (%)")):
                ax = axes[row][j]
                ax.set_xticks(xs, [_wd_label(w) for w in wds])
                ax.set_xlabel("hidden weight decay λ")
                ax.set_ylabel(ylabel)
                ax.set_title(f"{dataset}  (□ = norm-matched control, no decay)", fontsize=8)
            axes[0][j].legend(loc="best", ncol=2)
        return save(fig, out_dir / "accuracy_vs_weight_decay.png")


def _fig_training(results: Results, out_dir: Path) -> Path | None:
    from lnlab.plotting import COLORS, curves_with_band, figure, save

    sel = results.select(kind="train", dataset="mnist1d", status="finished")
    if not sel.runs:
        return None
    archs = [a for a in ARCHS if sel.select(arch=a).runs]
    wds = sorted(sel.values("wd"))
    cols = (("hidden_norm", "hidden ‖w‖ (all hidden layers)", True),
            ("norm/readout", "readout ‖w‖", False),
            ("eta_eff_hidden", "η_eff = η/‖w‖² (mean over hidden layers)", True),
            ("angle_hidden", "mean angle per step (rad)", True))
    with figure(ncols=len(cols), nrows=len(archs), width=2.9, height=2.0) as (fig, axes):
        axes = axes.reshape(len(archs), len(cols)) if hasattr(axes, "reshape") else [[axes]]
        for i, arch in enumerate(archs):
            for j, (metric, label, log) in enumerate(cols):
                ax = axes[i][j]
                for k, wd in enumerate(wds):
                    runs = sel.select(arch=arch, wd=wd).runs
                    curves = [r.curve(metric) for r in runs]
                    curves_with_band(ax, [c for c in curves if c[0]], label=f"λ={_wd_label(wd)}",
                                     color=COLORS[k])
                    if metric == "angle_hidden" and wd > 0:
                        eta = float(runs[0].get("train.lr")) if runs else LR
                        ax.axhline(math.sqrt(2 * eta * wd), color=COLORS[k], ls=":", lw=1)
                ctrl = results.select(kind="control", dataset="mnist1d", arch=arch,
                                      exact=True, status="finished").runs
                curves = [r.curve(metric) for r in ctrl]
                if any(c[0] for c in curves):
                    curves_with_band(ax, [c for c in curves if c[0]], label="control",
                                     color="black")
                if log:
                    ax.set_yscale("log")
                ax.set_title(f"{arch}: {label}", fontsize=8)
                if i == len(archs) - 1:
                    ax.set_xlabel("epoch")
                if i == 0 and j == 0:
                    ax.legend(loc="best", fontsize=6)
        return save(fig, out_dir / "norms_eta_eff_angles.png")


def audit_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """The invariance table per architecture (trained λ = 0 MNIST-1D models, first seed)."""
    header = ["arch", "hidden layers invariant", "readout", "joint stream",
              "unconstrained share", "infimum / current", "hidden decay step Δ",
              "block decay Δ (b2 kept)", "blog's expectation"]
    blog = {"none": "no LN: nothing invariant", "ln": "hidden invariant",
            "pre": "broken by residual", "pre+final": "broken by residual",
            "post": "same problem (invariant)", "branch": "same problem (invariant)"}
    rows = []
    for arch in ARCHS:
        runs = sorted(results.select(kind="train", arch=arch, static=True,
                                     status="finished").runs, key=lambda r: r.seed)
        runs = [r for r in runs if "static/verdicts" in r.summary]
        if not runs:
            continue
        s = runs[0].summary
        verdicts = dict(v.split("=", 1) for v in str(s["static/verdicts"]).split("; "))
        hidden = {g: v for g, v in verdicts.items() if g != "readout"}
        inv = sum(v.startswith("invariant") for v in hidden.values())
        rows.append([arch, f"{inv}/{len(hidden)}", verdicts.get("readout", "?"),
                     str(s.get("static/stream_verdict", "–")),
                     f"{s['static/unconstrained_share']:.1%}",
                     f"{s['static/infimum_ratio']:.1%}",
                     f"{s['static/decay_step']:.1e}",
                     f"{s.get('static/decay_step_keep_b2', math.nan):.1e}", blog[arch]])
    return header, rows


def _fig_audit(results: Results, out_dir: Path) -> Path | None:
    from lnlab.plotting import figure, save

    header, rows = audit_rows(results)
    if not rows:
        return None
    with figure(width=12.0, height=0.35 * (len(rows) + 2)) as (fig, ax):
        ax.axis("off")
        tab = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
        tab.auto_set_font_size(False)
        tab.set_fontsize(7)
        tab.scale(1.0, 1.3)
        ax.set_title("scale-invariance audit of the trained λ=0 MNIST-1D models, first seed "
                     "(float64, eps=0; decay step: parameters × e^-1, the effect of 1/(ηλ) "
                     "decay steps)", fontsize=8)
        return save(fig, out_dir / "audit_table.png")
