"""LayerNorm and memorization in Pre-LN vs Post-LN transformers (Singhal & Kim, NeurIPS 2025).

Method (``docs/papers/singhal_kim.md`` §1–2; protocol code in ``removal``; the real pretrained
checkpoint in ``pretrained``). A share of the training labels is flipped to a uniformly drawn
other class. From one initialization we train an **LN-intact** model until its training
accuracy (on the noisy labels) reaches 100% (capped at ``max_epochs``; the report states
whether it got there), and **LN-removed** copies of the same initialization — the affine
parameters of ``all`` LNs, or only of the ``early`` / ``middle`` / ``later`` third of the
blocks, fixed at (1, 0) via ``lnlab.surgery.strip_affine`` — for exactly as many epochs with
the same batch order. Every epoch we record test accuracy, train accuracy, the overfit gap Δ =
train − test, and on the noisy samples the shares of predictions equal to the noisy label
(memorization), the true label (recovery) or neither (random); they are integer counts, so the
shares sum to exactly 1. At the end, at every LN, the mean per-sample L2 norm of ∂loss/∂(LN
input) on test samples with true labels (learning) and on the memorized noisy samples (those
predicted with their noisy label) with noisy labels (memorization; Theorem 1 is about memorized
samples), for the total gradient and for the part through the LN branch
(:mod:`lnlab.analysis.gradients`; Frobenius norm over tokens × features, eval mode).

Settings, by regime (``sweep`` has the tables):

* ``mnist1d`` — **from scratch**: lnlab transformers (3 blocks, dim 32, MNIST-1D as 5 patches
  of 8 + CLS), Pre-LN and Post-LN; quick removes ``all`` LNs (claims 1–5, 8–11), full also
  the ``early`` / ``middle`` / ``later`` groups (claims 6–7);
* ``tokens-hf`` (full) — **from scratch**: Hugging Face BERT (Post-LN) and GPT-2 (Pre-LN)
  from tiny configs on the synthetic motif task (claims 1–5, 8–10);
* ``mnist1d-pt`` (paper, full) — **own pretraining**: the lnlab transformers are pretrained
  on clean labels of a larger, disjoint MNIST-1D sample with AdamW and weight decay, then get
  a fresh head and are fine-tuned on the noisy task, LN parameters removed at the start of
  fine-tuning; Pre-LN also gets the ``folded`` control (claims 1–5 and the fold claims). The
  only Pre-LN pretrained regime available offline;
* ``pretrained`` (paper) — **a real pretrained checkpoint**: all-MiniLM-L6-v2 (Post-LN)
  fine-tuned on WordNet definitions with the paper's recipe (``pretrained`` module; the
  Post-LN claims 1, 3, 5, 8, 10).

Quick uses 10% noise on 1,000 training samples (100 noisy samples; the paper's App. H also
uses 2% and 5%); full uses 1%, 2% and 5% of 16,000; paper 5% of 2,004 (the checkpoint) and
10% of 1,000 (own pretraining). ``-o model=... -o data=...`` (or ``lnlab run memorization
--model hf:bert --data PATH [--init CKPT]``) runs the protocol on a user's models and data
instead (arm ``all``; ``-o arms=all,early`` for more).

The package reads in that order: this file (the claims), ``sweep`` (the settings per scale),
``protocol`` (one seed of one setting), ``measures`` (what the claims test), ``figures`` (and
the results table); ``pretrained`` is the ``paper`` scale (a real pretrained checkpoint).
"""

from __future__ import annotations

from dataclasses import replace

from lnlab.experiments.claims import (
    Check,
    CheckBound,
    Claim,
    Effect,
    Equivalence,
    Measurement,
)
from lnlab.experiments.framework import Results
from lnlab.experiments.memorization.figures import _short, extra_tables, figures, table
from lnlab.experiments.memorization.measures import (
    _block_sites,
    _depth_rho,
    _growth,
    _sites,
    _spearman,
    measure_all,
)
from lnlab.experiments.memorization.protocol import run
from lnlab.experiments.memorization.sweep import (
    EXTRA_SCALES,
    GROUP_ARMS,
    RECIPE,
    SETTINGS,
    sweep,
)

__all__ = [
    "CLAIMS",
    "DESCRIPTION",
    "EXTRA_SCALES",
    "GROUP_ARMS",
    "NAME",
    "RECIPE",
    "REGIMES",
    "REGIME_NOTE",
    "SETTINGS",
    "_block_sites",
    "_depth_rho",
    "_growth",
    "_short",
    "_sites",
    "_spearman",
    "analyze",
    "extra_tables",
    "figures",
    "run",
    "sweep",
    "table",
]

NAME = "memorization"
DESCRIPTION = ("Singhal & Kim: removing LayerNorm's affine parameters hurts learning in "
               "Pre-LN transformers but suppresses memorization of noisy labels in Post-LN "
               "ones; early LNs matter most; learning gradients dominate memorization ones.")
SEEDS = {"quick": 5, "full": 5, "paper": 3}
OPTIONS = {
    "model": "models to test instead of the built-in settings, comma-separated: hf:ARCH"
             "[:layers=3,dim=32,heads=4,dropout=0] (bert, gpt2, gpt_neo, ...) or an lnlab "
             "transformer spec (transformer:ln=pre,...)",
    "data": "dataset spec or path for the user setting (HF save_to_disk dir, .npz, ...)",
    "init": "local Hugging Face checkpoint directory to fine-tune from (with model=hf:...)",
    "noise": "label-noise share (default: 0.1 quick, 0.01/0.02/0.05 full, 0.05 user)",
    "arms": "removal arms for the user setting: all,early,middle,later (default: all)",
    "epochs": "epoch cap for the intact model (default 200 quick / 300 full)",
    "lr": "learning rate for the user setting (default 3e-3; 2e-5 with init)",
    "tiny": "1 = the tiny scale (older form of --scale tiny)",
}
HEADLINE_METRIC = "intact_epochs"
REGIME_NOTE = ("Closest to the paper: the real pretrained checkpoint (all-MiniLM-L6-v2, BERT "
               "architecture, Post-LN, 6 blocks like DistilBERT, the paper's one Post-LN model "
               "whose memorization removal only delayed; fine-tuned with the paper's recipe on "
               "real text, for 8 epochs where the paper trains 40). Own pretraining is the only "
               "Pre-LN pretrained regime here (no Pre-LN checkpoint installs offline); from "
               "scratch answers a nearby but different question (notes §6 caveat). The paper "
               "scale's seed count was cut from 4 to 3 after two seeds' results had been read, "
               "for time (its third seed shares a core with own pretraining); the checkpoint's "
               "gate already failed on those two seeds, so no verdict depends on it. A review "
               "after that run found that the memorization gradient (claims 8–11) averaged all "
               "noisy samples, memorized or not; Theorem 1 is about memorized ones, and with "
               "half of them unmemorized the mixture overstates it. The measurement (not the "
               "rules) was corrected to the memorized samples and the paper scale rerun; the "
               "all-noisy mean is kept beside it.")
PAPER = "Singhal & Kim 2025 (NeurIPS), arXiv 2511.10566"

# --------------------------------------------------------------------------- claims
# Written from docs/papers/singhal_kim.md (§6) before any run. "points" = percentage points.
# Every claim is tested on one setting; ids say which (regime in the statement).
_SET_DESC = {"mnist1d": "lnlab transformers on MNIST-1D, from scratch",
             "tokens-hf": "HF BERT (Post-LN) vs GPT-2 (Pre-LN) on the token task, from scratch",
             "mnist1d-pt": "lnlab transformers on MNIST-1D, own pretraining then fine-tuning "
                           "with a fresh head",
             "pretrained": "the real pretrained Post-LN checkpoint all-MiniLM-L6-v2 fine-tuned "
                           "on WordNet definitions"}
REGIMES = {"mnist1d": "from scratch", "tokens-hf": "from scratch",
           "mnist1d-pt": "own pretraining", "pretrained": "real pretrained checkpoint"}
"""The regime each setting measures (the report's regime × claim table groups by it)."""


# Minimal effects (pre-registered). Where the paper gives numbers (notes §4.1, Tables 4–6) the
# minimal effect is well below them; where it does not, the value is stated with its reason:
# - test accuracy: "unchanged" = within ±2 points (notes §6.1: falsified by a drop > 2 points;
#   the paper's Post-LN changes are ≤ 1 point); a "clear" Pre-LN drop is > 2 points (paper:
#   6–8 points); Pre drop bigger than Post drop by > 1 point;
# - shares of noisy samples (100 noisy samples at quick, so 1 sample = 1 point): recovery above
#   memorization by > 10 points (paper: 35–55), memorization below the intact model's 100% by
#   > 50 points (paper: 72–80), Pre-LN recovery below Post-LN recovery by > 10 points (paper:
#   ~45); layer groups: > 2 points (2 noisy samples);
# - the overfit gap: > 1 point for the Pre-LN increase (as before); the Post-LN decrease can be
#   at most the noise rate (10 points at quick) and the notes expect it small, so 1 point;
#   layer groups: > 0.5 point;
# - gradient ratios: "learn > mem at every LN" by > 10% (ratio > 1.1; below that the per-sample
#   norm averages do not separate them reliably); Pre/Post ratio "much larger": ≥ 2×;
#   depth trend: Spearman ρ < −0.5; first-LN share larger by > 0.1; growth over training > 10%.
# Group comparisons contrast *early* with the mean of middle and later (a paired contrast; a
# min/max over noisy arms would bias it). Every claim of a setting requires that setting's
# precondition: the LN-intact models reached ≥ 99% training accuracy on *every* seed.
M = "lnlab.experiments.memorization.analyze"


def _pre(s: str) -> tuple[str, ...]:
    return (f"sk.precondition.{s}",)


def _claims_1_5(s: str) -> list[Claim]:
    d = _SET_DESC[s]
    req = _pre(s)
    return [
        Claim(f"sk.precondition.{s}", "notes §6 caveat: memorization needs enough training",
              f"The LN-intact models reach ≥ 99% training accuracy on every seed (the paper "
              f"trains to 100%) ({d}).",
              f"{s}: min over models of intact final train acc (%)", "≥ 99% on every seed",
              CheckBound(">=", 99.0), measured_by=M),
        Claim(f"sk.1.{s}", PAPER + ", Fig. 1c, Tables 4–5",
              f"Post-LN: removing the LN parameters leaves test accuracy unchanged ({d}).",
              f"{s}: Δtest_acc[post, all − intact]",
              "unchanged: equivalent to 0 within ±2 points",
              Equivalence(2.0), measured_by=M, requires=req),
        Claim(f"sk.2.{s}", PAPER + ", Fig. 1a, Table 4",
              f"Pre-LN: removing the LN parameters lowers test accuracy clearly ({d}).",
              f"{s}: Δtest_acc[pre, all − intact]", "paired drop > 2 points (paper: 6–8)",
              Effect("<", 2.0), measured_by=M, requires=req),
        Claim(f"sk.2b.{s}", "research notes §6 claim 2 (falsifier)",
              f"The Pre-LN test-accuracy drop is bigger than the Post-LN one ({d}).",
              f"{s}: Δtest_acc[pre] − Δtest_acc[post]", "paired difference < −1 point",
              Effect("<", 1.0), measured_by=M, requires=req),
        Claim(f"sk.3.{s}", PAPER + ", Fig. 1d, Tables 4–6",
              f"Post-LN with LN parameters removed recovers more true labels than it memorizes "
              f"noisy ones ({d}).",
              f"{s}: rec − mem [post, all] (points)",
              "recovery − memorization > 10 points (paper: 35–55)",
              Effect(">", 10.0), measured_by=M, requires=req),
        Claim(f"sk.3b.{s}", PAPER + ", Tables 4–6 (memorization 20–28%)",
              f"Post-LN with LN parameters removed memorizes at most half of the noisy labels "
              f"({d}).",
              f"{s}: mem [post, all] (%)",
              "memorization below the intact 100% by > 50 points (paper: 20–28%)",
              Effect("<", 50.0, null=100.0), measured_by=M, requires=req),
        Claim(f"sk.4.{s}", PAPER + ", Fig. 1b, Table 4",
              f"Pre-LN with LN parameters removed recovers far fewer true labels than Post-LN "
              f"under the same protocol ({d}).",
              f"{s}: rec[pre, all] − rec[post, all] (points)",
              "paired difference < −10 points (paper: about −45)",
              Effect("<", 10.0), measured_by=M, requires=req),
        Claim(f"sk.5pre.{s}", PAPER + ", Fig. 2c",
              f"Pre-LN: removing the LN parameters increases the overfit gap Δ = train − test "
              f"accuracy ({d}).",
              f"{s}: Δgap[pre, all − intact] (points)", "paired increase > 1 point",
              Effect(">", 1.0), measured_by=M, requires=req),
        Claim(f"sk.5post.{s}", PAPER + ", Fig. 2f",
              f"Post-LN: removing the LN parameters decreases the overfit gap ({d}).",
              f"{s}: Δgap[post, all − intact] (points)", "paired decrease > 1 point",
              Effect("<", 1.0), measured_by=M, requires=req),
        Claim(f"sk.5post.mem.{s}", PAPER + ", Fig. 2e–f (gap shrinks as memorization falls)",
              f"Post-LN: the gap shrinks because memorization falls — the fall in memorized "
              f"noisy samples alone lowers training accuracy, hence the gap, by > 1 point "
              f"({d}).",
              f"{s}: memorization part of Δgap[post, all − intact] (points)",
              "100·Δn_mem/N decrease > 1 point (same minimal effect as sk.5post)",
              Effect("<", 1.0), measured_by=M, requires=req),
    ]


def _claims_8_10(s: str) -> list[Claim]:
    d = _SET_DESC[s]
    req = _pre(s)
    return [
        Claim(f"sk.8.{s}", PAPER + ", Theorem 1, Fig. 4",
              f"At every LN of the trained LN-intact models (Pre and Post), the learning "
              f"gradient norm exceeds the memorization gradient norm ({d}; total gradient).",
              f"{s}: min over LNs and models of learn/mem (total)",
              "per-seed minimum ratio over LNs > 1.1",
              Effect(">", 0.1, null=1.0), measured_by=M, requires=req),
        Claim(f"sk.8same.{s}", PAPER + ", Theorem 1 (its premise: same class); notes §3",
              f"Theorem 1 as stated: at every LN the learning gradient of clean *training* "
              f"samples of the memorized samples' own class exceeds the memorization gradient "
              f"({d}; total gradient).",
              f"{s}: min over LNs and models of learn(same class)/mem (total)",
              "per-seed minimum ratio over LNs > 1.1 (as sk.8)",
              Effect(">", 0.1, null=1.0), measured_by=M, requires=req),
        Claim(f"sk.9.{s}", PAPER + ", §6.1, Fig. 4",
              f"The learning/memorization ratio is much larger in Pre-LN than in Post-LN, "
              f"layer by layer ({d}; total gradient).",
              f"{s}: geometric mean over block LNs of ratio[pre]/ratio[post]",
              "ratio of ratios > 2", Effect(">", 1.0, null=1.0), measured_by=M, requires=req),
        Claim(f"sk.10pre.{s}", PAPER + ", Theorem 3, Fig. 4",
              f"Pre-LN: the learning gradient norm falls with depth ({d}; total gradient).",
              f"{s}: Spearman ρ(depth, learn norm) [pre]", "ρ < −0.5",
              Effect("<", 0.5), measured_by=M, requires=req),
        Claim(f"sk.10post.{s}", PAPER + ", Theorem 3, Fig. 4",
              f"Post-LN: the learning gradient norm falls with depth ({d}; total gradient).",
              f"{s}: Spearman ρ(depth, learn norm) [post]", "ρ < −0.5",
              Effect("<", 0.5), measured_by=M, requires=req),
        Claim(f"sk.10c.{s}", PAPER + ", §6.2 / notes §4.2",
              f"The LN-branch learning gradient is more concentrated at the first LN in Pre-LN "
              f"than in Post-LN ({d}).",
              f"{s}: first-LN share of the branch learn norm, pre − post",
              "paired difference of shares > 0.1", Effect(">", 0.1), measured_by=M,
              requires=req),
    ]


def _claims_fold(s: str) -> list[Claim]:
    """The control that separates the two explanations of a removal's effect (issue notes:
    resetting pretrained LN values both removes parameters and changes the function)."""
    d, req = _SET_DESC[s], _pre(s)
    return [
        Claim(f"sk.2fold.{s}", PAPER + " (its explanation: the learnable parameters)",
              f"Pre-LN: removing the LN parameters *without* changing the function at step 0 "
              f"(gain and bias folded into the next linear maps) still lowers test accuracy "
              f"clearly ({d}).",
              f"{s}: Δtest_acc[pre, folded − intact]", "paired drop > 2 points (as sk.2)",
              Effect("<", 2.0), measured_by=M, requires=req),
        Claim(f"sk.2fold.vs.{s}", "issue notes: separating the two explanations",
              f"Pre-LN: folding hurts test accuracy as much as resetting the pretrained LN "
              f"values does, so the lost parameters, not the changed function, explain the "
              f"drop ({d}).",
              f"{s}: Δtest_acc[pre, folded] − Δtest_acc[pre, all]",
              "equivalent to 0 within ±2 points", Equivalence(2.0), measured_by=M,
              requires=req),
    ]


def _claims_pretrained() -> list[Claim]:
    """The real pretrained Post-LN checkpoint. Its epoch budget (8, for 90 minutes on 2 cores;
    the paper trains 40) may end before the intact model memorizes everything, so the gate is
    the intact model's memorization (≥ 50% on every seed) and claim 3b is read relative to
    it; the Post-LN claims keep their minimal effects. Written before the first paper run."""
    s = "pretrained"
    d, req = _SET_DESC[s], _pre(s)
    post = [c for c in _claims_1_5(s) + _claims_8_10(s)
            if c.id.split(".")[1] in ("1", "3", "5post") or c.id.startswith("sk.5post.mem")]
    return [
        Claim(f"sk.precondition.{s}", "notes §6 caveat: memorization needs enough training",
              f"The LN-intact model memorizes at least half of the noisy labels within the "
              f"fixed epoch budget on every seed (the paper trains to 100%) ({d}).",
              f"{s}: intact memorization (%)", "≥ 50% on every seed",
              CheckBound(">=", 50.0), measured_by=M),
        *post,
        Claim(f"sk.3b.{s}", PAPER + ", Tables 4–6 (memorization 20–28% of 100%)",
              f"Post-LN with LN parameters removed memorizes at most half as many noisy labels "
              f"as the intact model ({d}).",
              f"{s}: mem[post, all] / mem[post, intact]",
              "ratio below 1 by > 0.5 (paper: 0.20–0.28)", Effect("<", 0.5, null=1.0),
              measured_by=M, requires=req),
        Claim(f"sk.8.{s}", PAPER + ", Theorem 1, Fig. 4",
              f"At every LN of the trained LN-intact model the learning gradient norm exceeds "
              f"the memorization gradient norm ({d}; total gradient).",
              f"{s}: min over LNs of learn/mem (total) [post]",
              "per-seed minimum ratio over LNs > 1.1", Effect(">", 0.1, null=1.0),
              measured_by=M, requires=req),
        Claim(f"sk.8same.{s}", PAPER + ", Theorem 1 (its premise: same class); notes §3",
              f"Theorem 1 as stated: at every LN the learning gradient of clean training "
              f"samples of the memorized samples' own class exceeds the memorization gradient "
              f"({d}; total gradient).",
              f"{s}: min over LNs of learn(same class)/mem (total) [post]",
              "per-seed minimum ratio over LNs > 1.1 (as sk.8)", Effect(">", 0.1, null=1.0),
              measured_by=M, requires=req),
        Claim(f"sk.10post.{s}", PAPER + ", Theorem 3, Fig. 4",
              f"Post-LN: the learning gradient norm falls with depth ({d}; total gradient).",
              f"{s}: Spearman ρ(depth, learn norm) [post]", "ρ < −0.5",
              Effect("<", 0.5), measured_by=M, requires=req),
    ]


_G = "(lnlab transformers on MNIST-1D, from scratch)"
_REQ = _pre("mnist1d")
CLAIMS = [
    Claim("sk.identity", "definition (notes §2)",
          "Memorization + recovery + random = 1 exactly on the noisy samples (every model).",
          "max |mem + rec + rand − 1| over models", "0 (integer counts)",
          Check(0.0, 0.0), measured_by=M),
    *_claims_1_5("mnist1d"),
    Claim("sk.6.mnist1d", PAPER + ", Fig. 3a, §5",
          f"Pre-LN: removing the early LNs lowers test accuracy most {_G}.",
          "mnist1d: test_acc[pre, early] − mean(middle, later)",
          "paired contrast < −0.5 points", Effect("<", 0.5), measured_by=M, requires=_REQ),
    Claim("sk.6b.mnist1d", PAPER + ", Fig. 3a, §5",
          f"Pre-LN: removing the early LNs gives the largest overfit gap {_G}.",
          "mnist1d: gap[pre, early] − mean(middle, later)",
          "paired contrast > 0.5 points", Effect(">", 0.5), measured_by=M, requires=_REQ),
    Claim("sk.7.mnist1d", PAPER + ", Fig. 3b, §5",
          f"Post-LN: removing the early LNs suppresses memorization most {_G}.",
          "mnist1d: mem[post, early] − mean(middle, later)",
          "paired contrast < −2 points", Effect("<", 2.0), measured_by=M, requires=_REQ),
    Claim("sk.7b.mnist1d", PAPER + ", Fig. 3b, §5",
          f"Post-LN: removing the early LNs gives the highest recovery {_G}.",
          "mnist1d: rec[post, early] − mean(middle, later)",
          "paired contrast > 2 points", Effect(">", 2.0), measured_by=M, requires=_REQ),
    Claim("sk.7c.mnist1d", PAPER + ", Fig. 3b, §5",
          f"Post-LN: removing the early LNs gives the smallest overfit gap {_G}.",
          "mnist1d: gap[post, early] − mean(middle, later)",
          "paired contrast < −0.5 points", Effect("<", 0.5), measured_by=M, requires=_REQ),
    *(Claim(f"sk.7d.{g}.mnist1d", PAPER + ", §5",
            f"Post-LN: removing the {g} third of the LNs leaves test accuracy unchanged {_G}.",
            f"mnist1d: Δtest_acc[post, {g} − intact] (points)",
            "unchanged: equivalent to 0 within ±2 points", Equivalence(2.0), measured_by=M,
            requires=_REQ) for g in GROUP_ARMS),
    *_claims_8_10("mnist1d"),
    Claim("sk.11.mnist1d", PAPER + ", App. I (Fig. 35)",
          "The learning gradient norm at the first LN grows during training (LN-intact lnlab "
          "transformers on MNIST-1D, from scratch; tracked every 10 epochs).",
          "mnist1d: last / first tracked learn norm at the first LN (geo. mean pre, post)",
          "growth > 10% (ratio > 1.1)", Effect(">", 0.1, null=1.0), measured_by=M),
    *_claims_1_5("tokens-hf"),
    *_claims_8_10("tokens-hf"),
    *_claims_1_5("mnist1d-pt"),
    *_claims_fold("mnist1d-pt"),
    *_claims_pretrained(),
]
CLAIMS = [replace(c, regime=REGIMES[c.id.rsplit(".", 1)[-1]])
          if c.id.rsplit(".", 1)[-1] in REGIMES else c for c in CLAIMS]


def analyze(results: Results) -> dict[str, Measurement]:
    """``measures.measure_all`` with these claims (it marks the ones a sweep could not
    measure); the claims name this function as their measurement."""
    return measure_all(results, CLAIMS)
