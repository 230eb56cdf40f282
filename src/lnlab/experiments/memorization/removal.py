"""Singhal & Kim's LN-removal protocol on any classifier: noisy labels, intact vs removed.

A training protocol, so it lives with the experiment (the pure label-noise counts it records
are :mod:`lnlab.analysis.label_noise`); importable for a user's own model and data.

The protocol (``docs/papers/singhal_kim.md`` §1–2), reusable on a user's model and data:

1. A share ``noise`` of the training labels is flipped to a uniformly drawn *other* class
   (``lnlab.data.apply_label_noise``: exactly ``round(noise · n)`` samples).
2. One initialization is drawn (or a pretrained checkpoint / a pretraining stage gives it).
3. The **LN-intact** model is trained from it until its training accuracy on the noisy labels
   reaches ``stop_at`` (default 100%), capped at ``max_epochs``; it ran ``E`` epochs.
4. For each removal ``arm`` (``all`` | ``early`` | ``middle`` | ``later``), a copy of the *same*
   initialization has the affine parameters of those LNs removed (w ≡ 1, b ≡ 0, frozen:
   :func:`lnlab.surgery.strip_affine`) and is trained for exactly ``E`` epochs with the same
   batch order. In the fine-tuning regime the removal happens at the start of fine-tuning, so
   the pretrained LN values are discarded, as in the paper.
5. Every evaluated epoch records test accuracy, train accuracy (noisy labels), the overfit
   gap Δ = train − test, and on the noisy samples the *counts* of predictions equal to the
   noisy label (memorization), to the true label (recovery) and to neither (random). The three
   counts are disjoint and sum to the number of noisy samples, so the shares sum to exactly 1.
6. At the end, per-sample gradient norms at every LN input (learning: test samples with true
   labels; memorization: noisy samples with noisy labels; total and LN-branch gradient;
   :mod:`lnlab.analysis.gradients`) for every trained model, and optionally every
   ``grad_every`` epochs during training.

Metric keys are prefixed with the arm: ``intact/test_acc``, ``all/mem``, ``early/n_rec``,
``intact/grad/learn_total/<site>`` (epochs) and ``intact/final_test_acc``,
``intact/gradfinal/learn_branch/<site>`` (summary).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lnlab.analysis.label_noise import noisy_counts
from lnlab.errors import LnlabError

__all__ = [
    "ARMS",
    "FOLDED",
    "ProtocolResult",
    "fresh_head",
    "noisy_counts_hook",
    "reset_effect",
    "run_protocol",
]

ARMS = ("all", "early", "middle", "later")
"""Removal arms: which LNs lose their affine parameters (surgery groups; ``all`` includes an
embedding LN and a final LN, the three block groups only the norms inside blocks)."""
FOLDED = "folded"
"""The control arm (a pretrained Pre-LN model only): every LN whose output feeds only linear
maps has its gain and bias folded into them (:func:`lnlab.surgery_fold.fold_affine`) and is then
frozen at (1, 0), so the parameters are removed but the function at step 0 is unchanged; an LN
that also feeds anything else stays intact (``<arm>/not_folded``)."""


def noisy_counts_hook(state: Any) -> dict[str, int]:
    """Trainer hook: the integer counts behind the trainer's ``mem``/``rec``/``rand``.

    Counted from the predictions the trainer's own evaluation made (``state.train_preds``),
    so counts and shares come from one forward pass; without them (a caller's own state),
    the noisy samples are evaluated here.
    """
    from lnlab.train import evaluate

    labels = state.labels
    mask = labels.mask
    if not bool(mask.any()):
        return {}
    preds = getattr(state, "train_preds", None)
    if preds is not None:
        return noisy_counts(preds.cpu(), labels.labels, labels.original, mask)
    idx = mask.nonzero()[:, 0].to(state.device)
    x = state.data.x_train.to(state.device).index_select(0, idx)
    preds = evaluate(state.model, x, labels.labels.to(state.device).index_select(0, idx)).preds
    ones = torch.ones(len(idx), dtype=torch.bool)
    return noisy_counts(preds.cpu(), labels.labels[mask], labels.original[mask], ones)


@dataclass
class ArmResult:
    """One trained model of the protocol (``intact`` or a removal arm)."""

    arm: str
    status: str
    summary: dict[str, Any]
    epochs: list[dict[str, Any]]
    removed: list[str] = field(default_factory=list)   # the LN sites stripped
    params_removed: int = 0
    model: nn.Module | None = field(default=None, repr=False)


@dataclass
class ProtocolResult:
    """Intact and removed runs from one initialization, merged per epoch by arm prefix."""

    arms: dict[str, ArmResult]
    intact_epochs: int

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"intact_epochs": self.intact_epochs}
        for name, a in self.arms.items():
            out[f"{name}/status"] = a.status
            out[f"{name}/params_removed"] = a.params_removed
            for k, v in a.summary.items():
                out[f"{name}/{k}"] = v
        return out

    def epochs(self) -> list[dict[str, Any]]:
        rows: dict[int, dict[str, Any]] = {}
        for name, a in self.arms.items():
            for e in a.epochs:
                row = rows.setdefault(int(e["epoch"]), {"epoch": int(e["epoch"])})
                row.update({f"{name}/{k}": v for k, v in e.items() if k != "epoch"})
        return [rows[k] for k in sorted(rows)]


def _final_grads(model: nn.Module, cfg: Any, max_samples: int) -> dict[str, float]:
    """Learning vs memorization gradient norms at every LN of the final model.

    Theorem 1 is about *memorized* samples, so the memorization gradient is averaged over the
    noisy samples the model predicts with their noisy label (``gradfinal/n_memorized`` of
    ``gradfinal/n_noisy``), and Theorem 1's same-class comparison over clean samples of their
    classes. Where memorization is incomplete, the mean over all noisy samples is kept apart
    (``gradfinal/noisy_total/<site>``): unmemorized samples have large losses, and mixing them
    in would make the memorization gradient look larger than the theorem's."""
    from lnlab.analysis.gradients import _mean, gradient_norms, per_sample_grad_norms
    from lnlab.data import load_dataset
    from lnlab.train import evaluate, make_labels

    data = load_dataset(cfg.data, seed=cfg.data_seed)
    labels = make_labels(cfg, data)
    g = torch.Generator().manual_seed(12345)
    li = torch.randperm(len(data.y_test), generator=g)[:max_samples].sort().values
    model = model.cpu()
    sites = gradient_norms(model, (data.x_test[li], data.y_test[li])).sites
    ni = labels.mask.nonzero()[:, 0]
    xn, yn = data.x_train[ni], labels.labels[ni]
    memorized = evaluate(model, xn, yn).preds == yn
    out: dict[str, Any] = {"gradfinal/n_memorized": int(memorized.sum()),
                           "gradfinal/n_noisy": len(ni)}
    if len(ni):  # every noisy sample once; the memorized ones are a subset of them
        noisy = per_sample_grad_norms(model, xn, yn)
        sites = [replace(s, memorization_total=_mean(noisy.total[s.name][memorized]),
                         memorization_branch=_mean(noisy.branch[s.name][memorized]),
                         n_memorization=int(memorized.sum())) for s in sites]
        out.update({f"gradfinal/noisy_total/{s.name}": _mean(noisy.total[s.name])
                    for s in sites})
    out.update(grad_summary(sites))
    same = same_class_clean(data.y_train, labels.mask, ni[memorized], seed=12345)
    if len(same):  # Theorem 1's premise: clean training samples of the memorized samples' class
        res = gradient_norms(model, (data.x_train[same], data.y_train[same]))
        out.update({f"gradfinal/learn_sameclass_total/{s.name}": s.learning_total
                    for s in res.sites})
    return out


def same_class_clean(y_true: torch.Tensor, noisy: torch.Tensor, idx: torch.Tensor, *,
                     seed: int) -> torch.Tensor:
    """For each noisy training sample in ``idx``, one *clean* training sample of its true
    class (drawn with a fixed generator; classes without clean samples are skipped): the
    comparison Singhal & Kim's Theorem 1 makes (same class), beside the test-set average."""
    g = torch.Generator().manual_seed(seed)
    clean = ~noisy.bool()
    out = []
    for i in idx.tolist():
        pool = (clean & (y_true == y_true[i])).nonzero()[:, 0]
        if len(pool):
            out.append(int(pool[torch.randint(len(pool), (1,), generator=g)]))
    return torch.tensor(out, dtype=torch.long)


def fresh_head(model: nn.Module, seed: int) -> None:
    """Re-draw the classification head (``model.head``), as fine-tuning a pretrained model on
    a new task does: the pretrained features are kept, the task-specific map is not."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise LnlabError(f"{type(model).__name__} has no linear ``head`` to re-draw")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head.reset_parameters()


def grad_summary(sites: Any) -> dict[str, float]:
    """Summary entries for per-site gradient norms, with each site's forward position
    (``gradfinal/order/<site>``, from ``find_norms``) and block index (``gradfinal/block/<site>``,
    −1 outside the blocks): stored summaries are key-sorted, so depth must not be read from
    key order (with ≥ 10 blocks that order is 0, 1, 10, 11, 2, …)."""
    out: dict[str, float] = {}
    for s in sites:
        for kind, v in (("learn_total", s.learning_total), ("mem_total", s.memorization_total),
                        ("learn_branch", s.learning_branch),
                        ("mem_branch", s.memorization_branch)):
            out[f"gradfinal/{kind}/{s.name}"] = v
        out[f"gradfinal/order/{s.name}"] = s.order
        out[f"gradfinal/block/{s.name}"] = -1 if s.block is None else s.block
    return out


def _remove(model: nn.Module, where: str | None, probe: torch.Tensor | None
            ) -> tuple[list[str], int, dict[str, Any]]:
    """Apply one arm's removal in place: (sites removed, parameters removed, extra summary)."""
    from lnlab.surgery import find_norms, select_sites, strip_affine
    from lnlab.surgery_fold import fold_affine

    if where is None:
        return [], 0, {}
    if where == FOLDED:
        assert probe is not None
        rep = fold_affine(model, "all", example_input=probe[:8], skip_unfoldable=True)
        removed = [c.site for c in rep]
        if not removed:
            raise LnlabError(f"arm {FOLDED!r}: no LN of this model feeds only linear maps, "
                             "so none can be folded exactly")
        return removed, rep.params_removed, {"not_folded": [site for site, _ in rep.skipped]}
    removed = [s.name for s in select_sites(find_norms(model), where)]
    if not removed:
        raise LnlabError(f"arm {where!r}: the model has no LayerNorm there")
    return removed, strip_affine(model, where).params_removed, {}


def _pooled_hidden(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The final hidden state of the token the classification head reads: the first one for
    encoders (BERT's [CLS]), the last non-padding one for decoders, whose Hugging Face heads
    are named ``score`` (GPT-2, GPT-Neo, Llama: in a causal model the first token sees only
    itself). Padding is on the right in lnlab's token data."""
    hf = model.hf  # type: ignore[attr-defined]
    mask = (x != model.pad_id).long()  # type: ignore[attr-defined]
    mask[:, 0] = 1
    h = hf.base_model(input_ids=x, attention_mask=mask)[0]
    if not hasattr(hf, "score"):
        return h[:, 0]
    last = (torch.arange(x.shape[1]) * mask).argmax(1)
    return h[torch.arange(len(x)), last]


@torch.no_grad()
def reset_effect(intact: nn.Module, reset: nn.Module, x: torch.Tensor, *,
                 hidden: bool = True) -> dict[str, float]:
    """How far a removal moves the model at step 0, on probe inputs ``x`` (eval mode):
    KL(p_intact ‖ p_reset) of the class probabilities, mean |Δlogit|, argmax agreement and
    (``hidden``, Hugging Face models) the relative change of the final hidden state of the
    token the head reads. ``hidden=False`` leaves that out (NaN): after a fold the final
    hidden state is the pre-affine one by design, and only the outputs are comparable."""
    intact.eval()
    reset.eval()
    a, b = intact(x).double(), reset(x).double()
    pa, lpa, lpb = a.softmax(-1), a.log_softmax(-1), b.log_softmax(-1)
    kl = (pa * (lpa - lpb)).sum(-1).mean()
    rel = math.nan
    if hidden:
        ha = _pooled_hidden(intact, x).double()
        hb = _pooled_hidden(reset, x).double()
        rel = float(((hb - ha).norm(dim=-1) / ha.norm(dim=-1).clamp_min(1e-30)).mean())
    return {"step0_kl": float(kl), "step0_logit_change": float((b - a).abs().mean()),
            "step0_agree": float((a.argmax(-1) == b.argmax(-1)).double().mean()),
            "step0_hidden_change": rel}


def _probe(cfg: Any, n: int = 256) -> torch.Tensor:
    """A fixed batch of training inputs (seeded) on which a removal's step-0 effect is read."""
    from lnlab.data import load_dataset
    from lnlab.train import derive_seed

    data = load_dataset(cfg.data, seed=cfg.data_seed)
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "probe"))
    return data.x_train[torch.randperm(len(data.x_train), generator=g)[:n]]


def run_protocol(make_model: Callable[[], nn.Module], cfg: Any, run_dir: str | Path | None = None,
                 *, arms: Sequence[str] = ("all",), max_epochs: int | None = None,
                 stop_at: float = 1.0, pretrain: Any = None, new_head: bool = False,
                 grad_every: int = 0, final_grads: bool = True, grad_samples: int = 512,
                 progress: Callable[[str, dict[str, Any]], None] | None = None
                 ) -> ProtocolResult:
    """Run the protocol (module doc) for a model factory and a noisy ``TrainConfig``.

    ``make_model`` is called once under ``torch.manual_seed(derive_seed(cfg.seed, "init"))``;
    every arm starts from a copy of that model (after ``pretrain``, a clean-label
    ``TrainConfig`` trained first when given, and with ``new_head`` a freshly drawn head).
    ``cfg.noise`` must be > 0. ``run_dir`` holds one sub-directory per stage, so an interrupted
    protocol resumes stage by stage. The ``folded`` arm (pretrained Pre-LN models) also
    records how far each removal moves the model at step 0 (``<arm>/step0_kl``, …).
    """
    from lnlab.analysis.gradients import gradient_hook
    from lnlab.train import derive_seed, train

    if not cfg.noise > 0:
        raise LnlabError("the memorization protocol needs label noise (noise > 0)")
    bad = [a for a in arms if a not in (*ARMS, FOLDED)]
    if bad:
        raise LnlabError(f"unknown removal arm {bad[0]!r}; valid: {', '.join((*ARMS, FOLDED))}")
    if FOLDED in arms and pretrain is None:
        raise LnlabError(f"arm {FOLDED!r} controls for discarding *pretrained* LN values: it "
                         "needs a pretraining stage")
    if not 0 < stop_at <= 1:
        raise LnlabError(f"stop_at must be in (0, 1], got {stop_at}")
    rdir = Path(run_dir) if run_dir is not None else None
    sub = (lambda name: rdir / name) if rdir is not None else (lambda name: None)
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        base = make_model()
    if pretrain is not None:
        if pretrain.noise:
            raise LnlabError("pretraining is on clean labels (pretrain noise must be 0)")
        pre = train(pretrain, sub("pretrain"), model=base)
        if pre.status != "finished":
            raise LnlabError(f"pretraining {pre.status} at epoch "
                             f"{pre.summary.get('diverged_epoch')}")
        if new_head:
            fresh_head(base, derive_seed(cfg.seed, "head"))
    init_state = copy.deepcopy(base.state_dict())
    probe = _probe(cfg) if FOLDED in arms or (pretrain is not None and arms) else None

    def hooks() -> list[Any]:
        hs: list[Any] = [noisy_counts_hook]
        if grad_every:
            hs.append(gradient_hook(every=grad_every, stats=False, max_learn=256, max_mem=256))
        return hs

    def one(name: str, c: Any, where: str | None) -> ArmResult:
        model = copy.deepcopy(base)
        model.load_state_dict(init_state)
        removed, n_removed, extra = _remove(model, where, probe)
        if where is not None and probe is not None:  # what the removal alone does at step 0
            extra.update(reset_effect(base, model, probe, hidden=False))
        cb = (lambda r: progress(name, r)) if progress is not None else None
        r = train(c, sub(name), hooks=hooks(), model=model, progress=cb)
        summ = {**r.summary, **extra}
        if r.epochs:
            last = r.epochs[-1]
            for k in ("n_noisy", "n_mem", "n_rec", "n_rand"):
                if k in last:
                    summ[f"final_{k}"] = last[k]
            summ["final_gap"] = last["train_acc"] - last["test_acc"]
        if final_grads and r.status == "finished" and r.model is not None:
            summ.update(_final_grads(r.model, c, grad_samples))
        return ArmResult(name, r.status, summ, [dict(e) for e in r.epochs], removed,
                         n_removed, r.model)

    cap = max_epochs if max_epochs is not None else cfg.epochs
    intact = one("intact", replace(cfg, epochs=cap, stop_at_train_acc=stop_at), None)
    e = int(intact.summary.get("epochs_run") or cap)
    out = {"intact": intact}
    for arm in arms:
        out[arm] = one(arm, replace(cfg, epochs=max(1, e), stop_at_train_acc=None), arm)
    return ProtocolResult(out, e)
