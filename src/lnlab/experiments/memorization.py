"""LayerNorm and memorization in Pre-LN vs Post-LN transformers (Singhal & Kim, NeurIPS 2025).

Method (``docs/papers/singhal_kim.md`` §1–2; protocol code in
:mod:`lnlab.analysis.memorization`). A share of
the training labels is flipped to a uniformly drawn other class. From one initialization we
train an **LN-intact** model until its training accuracy (on the noisy labels) reaches 100%
(capped at ``max_epochs``; the report states whether it got there), and **LN-removed** copies
of the same initialization — the affine parameters of ``all`` LNs, or only of the ``early`` /
``middle`` / ``later`` third of the blocks, fixed at (1, 0) via ``lnlab.surgery.strip_affine``
— for exactly as many epochs with the same batch order. Every epoch we record test accuracy,
train accuracy, the overfit gap Δ = train − test, and on the noisy samples the shares of
predictions equal to the noisy label (memorization), the true label (recovery) or neither
(random); they are integer counts, so the shares sum to exactly 1. At the end, at every LN,
the mean per-sample L2 norm of ∂loss/∂(LN input) on test samples with true labels (learning)
and on the noisy samples with noisy labels (memorization), for the total gradient and for the
part through the LN branch (:mod:`lnlab.analysis.gradients`; Frobenius norm over tokens ×
features, eval mode).

Settings (``quick``; ``full`` is the paper-sized version, see ``sweep``):

* ``mnist1d`` — lnlab transformers (3 blocks, dim 32, MNIST-1D as 5 patches of 8 + CLS),
  Pre-LN and Post-LN, **from scratch**, arms all / early / middle / later (claims 1–10);
* ``tokens-hf`` — Hugging Face BERT (Post-LN) and GPT-2 (Pre-LN) built from tiny configs (3
  blocks, dim 32) on the synthetic motif task, **from scratch**, arm all (claims 1–5, 8–10).
  Quick uses length 8 without distractor motifs, which 1,000 samples suffice to learn (with
  distractors the tiny models only memorize: ~55% test accuracy); full uses the default task;
* ``mnist1d-ft`` — **pretrain-then-fine-tune**: the lnlab transformers are first trained on
  clean labels of a disjoint MNIST-1D sample (generator seed 7), then fine-tuned on the noisy
  task with the LN parameters removed at the start of fine-tuning, as the paper does with
  pretrained checkpoints (claims 1–5).

Quick uses 10% noise on 1,000 training samples (100 noisy samples; the paper's App. H also
uses 2% and 5%); full uses 1%, 2% and 5% of 16,000. ``-o model=... -o data=...`` (or
``lnlab run memorization --model hf:bert --data PATH [--init CKPT]``) runs the protocol on a
user's models and data instead (arm ``all``; ``-o arms=all,early`` for more).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from lnlab.errors import LnlabError
from lnlab.experiments.claims import (
    Check,
    CheckBound,
    Claim,
    Effect,
    Equivalence,
    Measurement,
)
from lnlab.experiments.framework import Results, Run, fmt_mean_std, spearman

NAME = "memorization"
DESCRIPTION = ("Singhal & Kim: removing LayerNorm's affine parameters hurts learning in "
               "Pre-LN transformers but suppresses memorization of noisy labels in Post-LN "
               "ones; early LNs matter most; learning gradients dominate memorization ones.")
SEEDS = {"quick": 5, "full": 5, "paper": 4}
EXTRA_SCALES = ("paper",)  # a real pretrained checkpoint: lnlab.experiments.memorization_pretrained
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
    "tiny": "1 = a seconds-long smoke test (tests only)",
}
HEADLINE_METRIC = "intact_epochs"
PAPER = "Singhal & Kim 2025 (NeurIPS), arXiv 2511.10566"

_LNLAB = "transformer:layers={layers},dim={dim},heads=4,ln={ln},patch=8,mlp_ratio=2"
_HF = {"pre": "hf:gpt2:layers={layers},dim={dim}", "post": "hf:bert:layers={layers},dim={dim}"}
RECIPE: dict[str, Any] = {"optimizer": "adam", "lr": 3e-3, "batch_size": 100,
                          "checkpoint_every": 0, "threads": 1}
GROUP_ARMS = ("early", "middle", "later")

# --------------------------------------------------------------------------- claims
# Written from docs/papers/singhal_kim.md (§6) before any run. "points" = percentage points.
# Every claim is tested on one setting; ids say which (regime in the statement).
_SET_DESC = {"mnist1d": "lnlab transformers on MNIST-1D, from scratch",
             "tokens-hf": "HF BERT (Post-LN) vs GPT-2 (Pre-LN) on the token task, from scratch",
             "mnist1d-ft": "lnlab transformers on MNIST-1D, pretrain-then-fine-tune"}


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
    *_claims_1_5("mnist1d-ft"),
]

# --------------------------------------------------------------------------- sweep


def _setting(name: str, regime: str, data: str, models: dict[str, str], arms: list[str],
             *, noise: float, epochs: int, pretrain: dict[str, Any] | None = None,
             init: str | None = None, lr: float = 3e-3, grad_every: int = 0) -> list[dict]:
    return [{"setting": name, "regime": regime, "family": fam, "model": spec,
             "noise": noise, "arms": list(arms), "max_epochs": epochs, "stop_at": 1.0,
             "pretrain": pretrain, "init": init, "grad_every": grad_every,
             "train": {**RECIPE, "lr": lr, "model": spec, "data": data, "noise": noise,
                       "epochs": epochs}}
            for fam, spec in models.items()]


def _family(spec: str, init: str | None) -> str:
    from lnlab.models.hf_classifier import hf_placement, parse_hf_model

    if spec.startswith("hf:"):
        return hf_placement(init) if init else hf_placement(parse_hf_model(spec)[0])
    return "post" if "ln=post" in spec.replace(" ", "") else "pre"


def _user_sweep(model: str | None, data: str | None, init: str | None, noise: float | None,
                arms: str | None, epochs: int | None, lr: float | None) -> list[dict]:
    from lnlab.analysis.memorization import ARMS
    from lnlab.data import load_dataset
    from lnlab.models.hf_classifier import parse_hf_model

    data = data or "tokens:n=2500,length=16"
    info = load_dataset(data).info  # bad data fails here, before anything runs
    specs = [s.strip() for s in (model or "").split(",") if s.strip()] or [
        _LNLAB.format(layers=3, dim=32, ln=ln) for ln in ("pre", "post")]
    if init is not None and not all(s.startswith("hf:") for s in specs):
        raise LnlabError("--init needs a Hugging Face model (--model hf:ARCH)")
    if init is not None and not (Path(init) / "config.json").is_file():
        raise LnlabError(f"--init {init}: not a Hugging Face checkpoint directory "
                         "(no config.json)")
    for s in specs:
        if s.startswith("hf:"):
            parse_hf_model(s)
            if info.kind != "tokens":
                raise LnlabError(f"{s} needs token data; {data} holds {info.kind} inputs")
    arm_list = [a.strip() for a in (arms or "all").split(",") if a.strip()]
    bad = [a for a in arm_list if a not in ARMS]
    if bad:
        raise LnlabError(f"unknown arm {bad[0]!r}; valid: {', '.join(ARMS)}")
    out: list[dict] = []
    for s in specs:
        fam = _family(s, init)
        out += [{**c, "family": fam} for c in _setting(
            "user", "finetune" if init else "scratch", data, {fam: s}, arm_list,
            noise=0.05 if noise is None else noise, epochs=epochs or 200, init=init,
            lr=lr or (2e-5 if init else 3e-3))]
    return out


def _num(v: str | None, kind: type, name: str) -> Any:
    if v is None:
        return None
    try:
        x = kind(v)
    except ValueError:
        raise LnlabError(f"option {name} must be a number, got {v!r}") from None
    if not x > 0:
        raise LnlabError(f"option {name} must be positive, got {v}")
    return x


def sweep(scale: str, seeds: list[int], *, model: str | None = None, data: str | None = None,
          init: str | None = None, noise: str | None = None, arms: str | None = None,
          epochs: str | None = None, lr: str | None = None, tiny: str | None = None
          ) -> list[dict[str, Any]]:
    """Quick: three settings × Pre/Post × seeds (18 runs, each training intact + its arms).
    Full: the same at paper-like size (6 blocks, dim 128, 16,000 training samples) at 1%, 2%
    and 5% noise, plus lnlab transformers and GPT-Neo on the token task (…× 3 seeds)."""
    nz = _num(noise, float, "noise")
    if nz is not None and nz >= 1:
        raise LnlabError(f"option noise must be below 1, got {noise}")
    ep, lrv = _num(epochs, int, "epochs"), _num(lr, float, "lr")
    if scale == "paper" or (init and not model):  # fine-tune a real pretrained checkpoint
        from lnlab.experiments.memorization_pretrained import pretrained_configs

        if model:
            raise LnlabError("--scale paper fine-tunes a checkpoint: use --init, not --model")
        small = bool(tiny) and tiny not in ("0", "false")
        return pretrained_configs(seeds, checkpoint=init, data=data, noise=nz, arms=arms,
                                  epochs=ep, lr=lrv, tiny=small)
    if model or data or init:
        configs = _user_sweep(model, data, init, nz, arms, ep, lrv)
    elif tiny and tiny not in ("0", "false"):
        lnl = {ln: "transformer:layers=3,dim=16,heads=2,ln=" + ln + ",patch=8,mlp_ratio=1"
               for ln in ("pre", "post")}
        configs = _setting("mnist1d", "scratch", "mnist1d:size=300", lnl,
                           ["all", *GROUP_ARMS], noise=nz or 0.2, epochs=ep or 3)
        configs += _setting("tokens-hf", "scratch", "tokens:n=200,length=8",
                            {k: v.format(layers=3, dim=16) for k, v in _HF.items()},
                            ["all"], noise=nz or 0.2, epochs=ep or 2)
        configs += _setting("mnist1d-ft", "finetune", "mnist1d:size=300", lnl, ["all"],
                            noise=nz or 0.2, epochs=ep or 2,
                            pretrain={"data": "mnist1d:size=300,seed=7", "epochs": 1})
    elif scale == "quick":
        lnl = {ln: _LNLAB.format(layers=3, dim=32, ln=ln) for ln in ("pre", "post")}
        hf = {k: v.format(layers=3, dim=32) for k, v in _HF.items()}
        cap = ep or 200
        # HF runs first: they are the longest, so two workers finish together.
        configs = _setting("tokens-hf", "scratch", "tokens:n=1250,length=8,distractors=0", hf,
                           ["all"],
                           noise=nz or 0.1, epochs=cap)
        configs += _setting("mnist1d", "scratch", "mnist1d:size=1250", lnl,
                            ["all", *GROUP_ARMS], noise=nz or 0.1, epochs=cap, grad_every=10)
        configs += _setting("mnist1d-ft", "finetune", "mnist1d:size=1250", lnl, ["all"],
                            noise=nz or 0.1, epochs=cap,
                            pretrain={"data": "mnist1d:size=1250,seed=7", "epochs": 20})
    else:
        cap = ep or 300
        lnl = {ln: _LNLAB.format(layers=6, dim=128, ln=ln) for ln in ("pre", "post")}
        hf = {k: v.format(layers=6, dim=128) for k, v in _HF.items()}
        neo = {"pre": "hf:gpt_neo:layers=6,dim=128"}
        configs = []
        for rate in ([nz] if nz else [0.01, 0.02, 0.05]):
            configs += _setting("mnist1d", "scratch", "mnist1d:size=20000", lnl,
                                ["all", *GROUP_ARMS], noise=rate, epochs=cap, grad_every=10)
            configs += _setting("tokens", "scratch", "tokens:n=20000,length=32", lnl,
                                ["all", *GROUP_ARMS], noise=rate, epochs=cap, grad_every=10)
            configs += _setting("tokens-hf", "scratch", "tokens:n=20000,length=32",
                                {**hf, "pre-neo": neo["pre"]}, ["all", *GROUP_ARMS],
                                noise=rate, epochs=cap, grad_every=10)
            configs += _setting("mnist1d-ft", "finetune", "mnist1d:size=20000", lnl,
                                ["all", *GROUP_ARMS], noise=rate, epochs=cap,
                                pretrain={"data": "mnist1d:size=20000,seed=7", "epochs": 50})
        for c in configs:
            if c["family"] == "pre-neo":
                c["family"], c["setting"] = "pre", "tokens-neo"
    out = []
    for seed in seeds:
        for c in configs:
            out.append({**c, "train": {**c["train"], "seed": seed}})
    return out


# --------------------------------------------------------------------------- run


def _factory(config: dict[str, Any], cfg: Any) -> Any:
    from lnlab.data import load_dataset
    from lnlab.models import build_model
    from lnlab.train import make_model

    info = load_dataset(cfg.data, seed=cfg.data_seed).info
    spec = config["model"]
    if spec.startswith("hf:"):
        if info.kind != "tokens" or info.vocab_size is None:
            raise LnlabError(f"{spec} needs token data; {cfg.data} holds {info.kind} inputs")
        # Fine-tuning loads the checkpoint: hf:PATH (the spec's size options do not apply).
        source = f"hf:{config['init']}" if config.get("init") else spec
        return lambda: build_model(source, input_shape=info.input_shape,
                                   num_classes=info.num_classes,
                                   vocab_size=int(info.vocab_size))
    return lambda: make_model(cfg, info)


def run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """One seed of one (setting, family): the intact model, then each removal arm."""
    from dataclasses import replace

    if config.get("regime") == "pretrained":
        from lnlab.experiments.memorization_pretrained import run_pretrained

        return run_pretrained(config, run_dir)

    from lnlab.analysis.memorization import run_protocol
    from lnlab.train import TrainConfig

    cfg = TrainConfig.from_dict(config["train"])
    pre = None
    if config.get("pretrain"):
        p = config["pretrain"]
        pre = replace(cfg, data=p["data"], noise=0.0, epochs=int(p["epochs"]),
                      stop_at_train_acc=None)
    res = run_protocol(_factory(config, cfg), cfg, run_dir, arms=config["arms"],
                       max_epochs=int(config["max_epochs"]), stop_at=float(config["stop_at"]),
                       pretrain=pre, grad_every=int(config.get("grad_every") or 0))
    intact = res.arms["intact"]
    summary = res.summary()
    summary["removed_sites"] = {a: r.removed for a, r in res.arms.items() if r.removed}
    return {"status": "finished" if intact.status == "finished" else "diverged",
            "summary": summary, "epochs": res.epochs(), "artifacts": {}}


# --------------------------------------------------------------------------- analysis


def _pct(arm: str, key: str) -> Any:
    def f(r: Run) -> float | None:
        v = r.summary.get(f"{arm}/{key}")
        return None if v is None else 100.0 * float(v)
    return f


def _share(arm: str, kind: str) -> Any:
    def f(r: Run) -> float | None:
        n = r.summary.get(f"{arm}/final_n_noisy")
        c = r.summary.get(f"{arm}/final_n_{kind}")
        return None if not n or c is None else 100.0 * c / n
    return f


def _gap(arm: str) -> Any:
    def f(r: Run) -> float | None:
        v = r.summary.get(f"{arm}/final_gap")
        return None if v is None else 100.0 * float(v)
    return f


def _natural(name: str) -> tuple:
    """Sort key reading digit runs as numbers (blocks.2 before blocks.10)."""
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _sites(r: Run, arm: str = "intact", kind: str = "learn_total") -> list[tuple[str, float]]:
    """(site, value) in forward order: the order ``find_norms`` recorded with the run
    (``gradfinal/order``), never the order of keys in the stored (key-sorted) summary. Runs
    stored before the order was recorded fall back to a natural sort of the names."""
    pre = f"{arm}/gradfinal/{kind}/"
    order = _site_info(r, arm, "order")
    vals = [(k[len(pre):], float(v)) for k, v in r.summary.items()
            if k.startswith(pre) and isinstance(v, int | float)]
    if order and all(n in order for n, _ in vals):
        return sorted(vals, key=lambda nv: order[nv[0]])
    listed = r.summary.get("ln_order")  # the pretrained setting records the order as a list
    if isinstance(listed, list) and all(n in listed for n, _ in vals):
        pos = {n: i for i, n in enumerate(listed)}
        return sorted(vals, key=lambda nv: pos[nv[0]])
    return sorted(vals, key=lambda nv: _natural(nv[0]))


def _site_info(r: Run, arm: str, what: str) -> dict[str, float]:
    pre = f"{arm}/gradfinal/{what}/"
    return {k[len(pre):]: float(v) for k, v in r.summary.items()
            if k.startswith(pre) and isinstance(v, int | float)}


def _block_sites(r: Run, kind: str) -> list[tuple[str, float]]:
    """Per-block LN sites in forward order (embedding/final norms left out: no depth)."""
    import re

    block = _site_info(r, "intact", "block")
    sites = _sites(r, "intact", kind)
    if block and all(n in block for n, _ in sites):
        return [(n, v) for n, v in sites if block[n] >= 0]
    return [(n, v) for n, v in sites if re.search(r"\.\d+\.", n)]


def _spearman(xs: list[float], ys: list[float]) -> float:
    """Rank correlation of a depth trend; NaN below 3 points (too few to call a trend)."""
    return spearman(xs, ys, min_n=3)


def _min_ratio(r: Run) -> float:
    learn = dict(_sites(r, "intact", "learn_total"))
    mem = dict(_sites(r, "intact", "mem_total"))
    ratios = [learn[k] / mem[k] for k in learn if k in mem and mem[k] > 0]
    return min(ratios) if ratios else math.nan


def _min_ratio_same_class(r: Run) -> float:
    """Theorem 1's premise: min over LNs of learn(clean same-class train samples) / mem."""
    learn = dict(_sites(r, "intact", "learn_sameclass_total"))
    mem = dict(_sites(r, "intact", "mem_total"))
    ratios = [learn[k] / mem[k] for k in learn if k in mem and mem[k] > 0]
    return min(ratios) if ratios else math.nan


def _depth_rho(r: Run) -> float:
    vals = [v for _, v in _block_sites(r, "learn_total")]
    return _spearman(list(range(len(vals))), vals)


def _first_share(r: Run) -> float:
    vals = [v for _, v in _block_sites(r, "learn_branch")]
    return vals[0] / sum(vals) if vals and sum(vals) > 0 else math.nan


def _ratio_of_ratios(pre: Run, post: Run) -> float:
    def ratios(r: Run) -> list[float]:
        mem = dict(_block_sites(r, "mem_total"))
        return [v / mem[n] for n, v in _block_sites(r, "learn_total") if mem.get(n)]
    a, b = ratios(pre), ratios(post)
    n = min(len(a), len(b))
    if not n:
        return math.nan
    # layer by layer at the same relative depth (both have 2 LNs per block)
    logs = [math.log(a[int(i * len(a) / n)] / b[int(i * len(b) / n)]) for i in range(n)]
    return math.exp(statistics.fmean(logs))


def _mem_part(r: Run) -> float | None:
    """The part of the change in training accuracy (on the noisy labels), hence of the overfit
    gap, that the change in memorized noisy samples makes: 100·(n_mem[all] − n_mem[intact])/N,
    N = n_noisy / noise the training-set size. Test accuracy does not enter it."""
    s, noise = r.summary, r.config.get("noise")
    n, ma, mi = (s.get(k) for k in ("intact/final_n_noisy", "all/final_n_mem",
                                     "intact/final_n_mem"))
    if not n or not noise or ma is None or mi is None:
        return None
    return 100.0 * (float(ma) - float(mi)) * float(noise) / float(n)


def _by_seed(results: Results, f: Any, **where: Any) -> dict[int, float]:
    m = results.per_seed(f, **where)
    return dict(m.values)


def _combine(a: dict[int, float], b: dict[int, float], op: Any, unit: str = "") -> Measurement:
    seeds = sorted(set(a) & set(b))
    return Measurement({s: op(a[s], b[s]) for s in seeds}, unit=unit,
                       excluded=len(set(a) ^ set(b)))


def _identity(results: Results) -> Measurement:
    """Per seed, the worst |mem + rec + rand − 1| (exact, from counts) over all models."""
    from fractions import Fraction

    worst: dict[int, float] = {}
    for r in results.select(status="finished").runs:
        for arm in ("intact", *r.config.get("arms", [])):
            n = r.summary.get(f"{arm}/final_n_noisy")
            if not n:
                continue
            s = sum(Fraction(int(r.summary[f"{arm}/final_n_{k}"]), int(n))
                    for k in ("mem", "rec", "rand"))
            worst[r.seed] = max(worst.get(r.seed, 0.0), float(abs(s - 1)))
    return Measurement(worst)


def _empty(out: dict[str, Measurement], setting: str, why: str) -> None:
    """Empty measurements (n = 0, with the reason) for a setting's claims that this sweep
    could not measure, so they read "inconclusive: 0 values" rather than a missing metric
    (which is reserved for analysis defects)."""
    for c in CLAIMS:
        if c.id.endswith(f".{setting}") and c.metric not in out:
            out[c.metric] = Measurement({}, note=why)


def _train_gate(sel: Results) -> Measurement:
    """Per seed, the lowest intact final training accuracy (%) over the setting's models
    (the gate must hold for every model of every seed); a model that did not finish counts
    as 0, so a seed cannot pass by losing a run."""
    low: dict[int, float] = {}
    for r in sel.runs:
        v = r.summary.get("intact/final_train_acc") if r.status == "finished" else None
        acc = 0.0 if v is None else 100.0 * float(v)
        low[r.seed] = min(low.get(r.seed, 100.0), acc)
    return Measurement(low, unit="%")


def analyze(results: Results) -> dict[str, Measurement]:
    """Per-seed numbers for the claims (accuracy and shares in %, differences in points)."""
    out: dict[str, Measurement] = {"max |mem + rec + rand − 1| over models": _identity(results)}
    sub = lambda x, y: x - y  # noqa: E731
    for s in ("mnist1d", "tokens-hf", "mnist1d-ft"):
        sel = results.select(setting=s)
        if not len(sel):
            _empty(out, s, "setting not in this sweep")
            continue
        out[f"{s}: min over models of intact final train acc (%)"] = _train_gate(sel)
        pre, post = {"family": "pre"}, {"family": "post"}
        acc = {(f, a): _by_seed(sel, _pct(a, "final_test_acc"), family=f)
               for f in ("pre", "post") for a in ("intact", "all", *GROUP_ARMS)}
        dpre = _combine(acc["pre", "all"], acc["pre", "intact"], sub, "points")
        dpost = _combine(acc["post", "all"], acc["post", "intact"], sub, "points")
        out[f"{s}: Δtest_acc[post, all − intact]"] = dpost
        out[f"{s}: Δtest_acc[pre, all − intact]"] = dpre
        out[f"{s}: Δtest_acc[pre] − Δtest_acc[post]"] = _combine(
            dict(dpre.values), dict(dpost.values), sub, "points")
        mem_post = sel.per_seed(_share("all", "mem"), **post)
        rec_post = sel.per_seed(_share("all", "rec"), **post)
        out[f"{s}: mem [post, all] (%)"] = Measurement(dict(mem_post.values), unit="%")
        out[f"{s}: rec − mem [post, all] (points)"] = _combine(
            dict(rec_post.values), dict(mem_post.values), sub, "points")
        out[f"{s}: rec[pre, all] − rec[post, all] (points)"] = _combine(
            _by_seed(sel, _share("all", "rec"), **pre), dict(rec_post.values), sub, "points")
        for f in ("pre", "post"):
            out[f"{s}: Δgap[{f}, all − intact] (points)"] = _combine(
                _by_seed(sel, _gap("all"), family=f), _by_seed(sel, _gap("intact"), family=f),
                sub, "points")
        out[f"{s}: memorization part of Δgap[post, all − intact] (points)"] = sel.per_seed(
            _mem_part, unit="points", **post)
        if s == "mnist1d":
            _group_measures(sel, out)
        if any(_sites(r) for r in sel.runs):
            _grad_measures(sel, s, out)
        _empty(out, s, "no gradient statistics recorded")
        if s == "mnist1d":
            out[f"{s}: last / first tracked learn norm at the first LN (geo. mean pre, post)"] \
                = _growth(sel)
    return out


def _group_measures(sel: Results, out: dict[str, Measurement]) -> None:
    def per(f: str, metric: Any) -> dict[str, dict[int, float]]:
        return {a: _by_seed(sel, metric(a), family=f) for a in ("intact", *GROUP_ARMS)}

    def early_vs(d: dict[str, dict[int, float]], name: str) -> None:
        """Paired contrast per seed: early − mean(middle, later) (no min/max over arms)."""
        seeds = sorted(set(d["early"]) & set(d["middle"]) & set(d["later"]))
        lost = len(set(d["early"]) | set(d["middle"]) | set(d["later"])) - len(seeds)
        out[name] = Measurement({s: d["early"][s] - (d["middle"][s] + d["later"][s]) / 2
                                 for s in seeds}, unit="points", excluded=lost)

    acc_pre, gap_pre = per("pre", lambda a: _pct(a, "final_test_acc")), per("pre", _gap)
    early_vs(acc_pre, "mnist1d: test_acc[pre, early] − mean(middle, later)")
    early_vs(gap_pre, "mnist1d: gap[pre, early] − mean(middle, later)")
    early_vs(per("post", lambda a: _share(a, "mem")),
             "mnist1d: mem[post, early] − mean(middle, later)")
    early_vs(per("post", lambda a: _share(a, "rec")),
             "mnist1d: rec[post, early] − mean(middle, later)")
    early_vs(per("post", _gap), "mnist1d: gap[post, early] − mean(middle, later)")
    acc_post = per("post", lambda a: _pct(a, "final_test_acc"))
    for a in GROUP_ARMS:
        out[f"mnist1d: Δtest_acc[post, {a} − intact] (points)"] = _combine(
            acc_post[a], acc_post["intact"], lambda x, y: x - y, "points")


def _growth(sel: Results) -> Measurement:
    """Per seed: geometric mean over Pre/Post of (last / first) tracked learning gradient norm
    (total) at the first block LN of the intact model."""
    per: dict[int, list[float]] = {}
    for r in sel.select(status="finished").runs:
        keys = sorted({k for e in r.epochs for k in e
                       if k.startswith("intact/grad/learn_total/") and ".0." in k})
        if not keys:
            continue
        xs = [v for _, v in zip(*r.curve(keys[0]), strict=True) if math.isfinite(v)]
        if len(xs) >= 2 and xs[0] > 0:
            per.setdefault(r.seed, []).append(math.log(xs[-1] / xs[0]))
    return Measurement({sd: math.exp(statistics.fmean(v)) for sd, v in per.items()})


def _grad_measures(sel: Results, s: str, out: dict[str, Measurement]) -> None:
    runs = {(r.get("family"), r.seed): r for r in sel.select(status="finished").runs}
    seeds = sorted({sd for (_, sd) in runs})
    both = [sd for sd in seeds if ("pre", sd) in runs and ("post", sd) in runs]
    out[f"{s}: min over LNs and models of learn/mem (total)"] = Measurement(
        {sd: min(_min_ratio(runs["pre", sd]), _min_ratio(runs["post", sd])) for sd in both})
    out[f"{s}: min over LNs and models of learn(same class)/mem (total)"] = Measurement(
        {sd: v for sd in both if math.isfinite(v := min(_min_ratio_same_class(runs["pre", sd]),
                                                        _min_ratio_same_class(runs["post", sd])))})
    out[f"{s}: geometric mean over block LNs of ratio[pre]/ratio[post]"] = Measurement(
        {sd: _ratio_of_ratios(runs["pre", sd], runs["post", sd]) for sd in both})
    for f in ("pre", "post"):
        out[f"{s}: Spearman ρ(depth, learn norm) [{f}]"] = Measurement(
            {sd: _depth_rho(runs[f, sd]) for sd in seeds if (f, sd) in runs})
    out[f"{s}: first-LN share of the branch learn norm, pre − post"] = Measurement(
        {sd: _first_share(runs["pre", sd]) - _first_share(runs["post", sd]) for sd in both})


# --------------------------------------------------------------------------- table


def table(results: Results) -> tuple[list[str], list[list[str]]]:
    """One row per (setting, regime, family, arm): accuracy, gap and noisy-sample shares."""
    header = ["setting", "regime", "LN", "model", "arm", "runs", "epochs", "train acc (%)",
              "test acc (%)", "gap (points)", "mem (%)", "rec (%)", "rand (%)"]
    rows = []
    keys = dict.fromkeys((r.get("setting"), r.get("regime"), r.get("family"), r.get("model"),
                          tuple(r.get("arms") or [])) for r in results.runs)
    for setting, regime, fam, model, arms in keys:
        sel = results.select(setting=setting, regime=regime, family=fam, model=model)
        done = sel.select(status="finished").runs
        for arm in ("intact", *arms):
            def col(f: Any, done: list[Run] = done) -> str:
                return fmt_mean_std([v for r in done if (v := f(r)) is not None])
            rows.append([setting, regime, fam, model.split(",")[0], arm,
                         f"{len(done)}/{len(sel)}",
                         col(lambda r, a=arm: r.summary.get(f"{a}/epochs_run")),
                         col(_pct(arm, "final_train_acc")), col(_pct(arm, "final_test_acc")),
                         col(_gap(arm)), col(_share(arm, "mem")), col(_share(arm, "rec")),
                         col(_share(arm, "rand"))])
    return header, rows


# --------------------------------------------------------------------------- figures


def figures(results: Results, out_dir: Path) -> list[Path]:
    """Figures in the style of the paper's Figs. 1–4 (one panel per setting / family)."""
    from lnlab.plotting import COLORS, bars_with_seeds, curves_with_band, figure, save

    out_dir = Path(out_dir)
    done = results.select(status="finished")
    settings = [s for s in done.values("setting") if s]
    paths: list[Path] = []
    if not settings:
        return paths
    # one panel per (setting, LN placement, model): a user may pass two Pre-LN models
    panels = [(s, f, m) for s in settings for f in ("pre", "post")
              for m in done.select(setting=s, family=f).values("model")]
    ln_names = {"pre": "Pre-LN", "post": "Post-LN"}

    def title_of(s: str, f: str, m: str) -> str:
        return ln_names[f] + (f" {m.split(':')[1]}" if m.startswith("hf:") else "")

    def regime(s: str) -> str:
        return str(done.select(setting=s).runs[0].get("regime"))

    # Fig. 1 style: test accuracy intact vs LN removed (all).
    with figure(ncols=len(panels), width=2.4, height=2.6) as (fig, axes):
        axes = axes if len(panels) > 1 else [axes]
        for ax, (s, f, m) in zip(axes, panels, strict=True):
            sel = done.select(setting=s, family=f, model=m)
            vals = [list(sel.per_seed(_pct(a, "final_test_acc")).values.values())
                    for a in ("intact", "all")]
            bars_with_seeds(ax, ["intact", "LN removed"], vals, ylabel="test accuracy (%)",
                            colors=[COLORS[0], COLORS[3]], fmt="{:.1f}")
            ax.set_title(f"{s} ({regime(s)})\n{title_of(s, f, m)}", fontsize=8)
            ax.set_ylim(0, 105)
        paths.append(save(fig, out_dir / "memorization_test_accuracy.png"))

    # Fig. 1b/d style: stacked memorization / recovery / random bars.
    with figure(ncols=len(panels), width=2.4, height=2.6) as (fig, axes):
        axes = axes if len(panels) > 1 else [axes]
        for ax, (s, f, m) in zip(axes, panels, strict=True):
            sel = done.select(setting=s, family=f, model=m)
            arms = ["intact", *(sel.runs[0].get("arms") or [])]
            bottom = [0.0] * len(arms)
            for i, kind in enumerate(("mem", "rec", "rand")):
                h = [statistics.fmean(v) if (v := list(sel.per_seed(
                    _share(a, kind)).values.values())) else 0.0 for a in arms]
                ax.bar(arms, h, bottom=bottom, color=(COLORS[3], COLORS[2], "#999999")[i],
                       label={"mem": "memorization", "rec": "recovery",
                              "rand": "random"}[kind])
                bottom = [b + x for b, x in zip(bottom, h, strict=True)]
            ax.set_ylim(0, 100)
            ax.set_ylabel("share of noisy samples (%)")
            ax.set_title(f"{s} ({regime(s)})\n{title_of(s, f, m)}", fontsize=8)
            ax.tick_params(axis="x", labelrotation=30)
        axes[0].legend(loc="lower left", fontsize=6)
        paths.append(save(fig, out_dir / "memorization_shares.png"))

    # Fig. 2 style: test accuracy and memorization over epochs, intact vs removed.
    with figure(ncols=len(panels), nrows=2, width=2.4, height=2.2) as (fig, axes):
        axes = axes.reshape(2, -1) if hasattr(axes, "reshape") else axes
        for j, (s, f, m) in enumerate(panels):
            sel = done.select(setting=s, family=f, model=m).runs
            for i, (metric, lab) in enumerate((("test_acc", "test accuracy (%)"),
                                                ("mem", "memorization (%)"))):
                ax = axes[i][j]
                for k, arm in enumerate(("intact", "all")):
                    curves = [r.curve(f"{arm}/{metric}") for r in sel]
                    curves = [(x, [100 * v for v in y]) for x, y in curves if x]
                    curves_with_band(ax, curves, label=arm, color=COLORS[(0, 3)[k]])
                ax.set_xlabel("epoch")
                ax.set_ylabel(lab)
                if i == 0:
                    ax.set_title(f"{s}: {title_of(s, f, m)}", fontsize=8)
                    if ax.get_legend_handles_labels()[0]:
                        ax.legend(loc="best", fontsize=6)
        paths.append(save(fig, out_dir / "memorization_curves.png"))

    # Fig. 3 style: early / middle / later removal.
    grp = [(s, f, m) for s, f, m in panels
           if set(GROUP_ARMS) <= set(done.select(setting=s, family=f, model=m).runs[0]
                                     .get("arms"))]
    if grp:
        with figure(ncols=len(grp), nrows=2, width=2.6, height=2.3) as (fig, axes):
            axes = axes.reshape(2, -1) if hasattr(axes, "reshape") else axes
            for j, (s, f, m) in enumerate(grp):
                sel = done.select(setting=s, family=f, model=m)
                arms = ["intact", *GROUP_ARMS, "all"]
                ax = axes[0][j]
                vals = [list(sel.per_seed(_pct(a, "final_test_acc")).values.values())
                        for a in arms]
                bars_with_seeds(ax, arms, vals, ylabel="test accuracy (%)", fmt="{:.1f}")
                ax.set_title(f"{s} ({regime(s)}): {title_of(s, f, m)}", fontsize=8)
                ax.set_ylim(0, 105)
                ax = axes[1][j]
                width = 0.27
                for i, kind in enumerate(("mem", "rec", "gap")):
                    f_ = _gap if kind == "gap" else (lambda a, k=kind: _share(a, k))
                    h = [statistics.fmean(v) if (v := list(sel.per_seed(
                        f_(a)).values.values())) else 0.0 for a in arms]
                    ax.bar([x + (i - 1) * width for x in range(len(arms))], h, width,
                           label={"mem": "memorization (%)", "rec": "recovery (%)",
                                  "gap": "Δ overfit (points)"}[kind], color=COLORS[(3, 2, 4)[i]])
                ax.set_xticks(range(len(arms)), arms)
                ax.legend(loc="best", fontsize=6)
            paths.append(save(fig, out_dir / "memorization_groups.png"))

    # Fig. 4 style: learning vs memorization gradient norm per LN (intact), ratio on a twin axis.
    gpanels = [(s, f, m) for s, f, m in panels
               if any(_sites(r) for r in done.select(setting=s, family=f, model=m).runs)]
    if gpanels:
        with figure(ncols=len(gpanels), nrows=2, width=2.8, height=2.3) as (fig, axes):
            axes = axes.reshape(2, -1) if hasattr(axes, "reshape") else axes
            for j, (s, f, m) in enumerate(gpanels):
                runs = done.select(setting=s, family=f, model=m).runs
                for i, part in enumerate(("total", "branch")):
                    ax = axes[i][j]
                    names = [n for n, _ in _sites(runs[0], "intact", f"learn_{part}")]
                    mean = {}
                    for kind in ("learn", "mem"):
                        per = [dict(_sites(r, "intact", f"{kind}_{part}")) for r in runs]
                        mean[kind] = [statistics.fmean(p[n] for p in per if n in p)
                                      for n in names]
                    xs = range(len(names))
                    ax.plot(xs, mean["learn"], "o-", color=COLORS[0], label="learning")
                    ax.plot(xs, mean["mem"], "s-", color=COLORS[1], label="memorization")
                    ax.set_yscale("log")
                    ax.set_xticks(list(xs), [_short(n) for n in names], rotation=60,
                                  fontsize=5)
                    ax.set_ylabel(f"‖∂L/∂x_LN‖ ({part})")
                    tw = ax.twinx()
                    tw.plot(xs, [a / b if b > 0 else math.nan
                                 for a, b in zip(mean["learn"], mean["mem"], strict=True)],
                            "--", color=COLORS[3], label="ratio")
                    tw.set_ylabel("learn / mem", color=COLORS[3], fontsize=6)
                    if i == 0:
                        ax.set_title(f"{s} ({regime(s)}): {title_of(s, f, m)}, intact", fontsize=8)
                        ax.legend(loc="upper right", fontsize=6)
            paths.append(save(fig, out_dir / "memorization_gradients.png"))
    return paths


def _short(site: str) -> str:
    """``hf.bert.encoder.layer.3.attention.output.LayerNorm`` → ``3.attn.out.LN``."""
    parts = site.split(".")
    idx = [i for i, p in enumerate(parts) if p.isdigit()]
    tail = parts[idx[-1]:] if idx else parts[-2:]
    abbrev = {"LayerNorm": "LN", "attention": "attn", "output": "out"}
    return ".".join(abbrev.get(p, p) for p in tail)[-16:]
