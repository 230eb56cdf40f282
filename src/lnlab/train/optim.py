"""Optimizers with parameter groups, learning-rate schedules and per-group weight norms.

Weight decay on norm gains/biases is exactly what the weight-decay documents vary, so every
parameter gets tags (``norm``, ``bias``, ``embedding``, ``readout``) that ``wd_exclude`` can
name, and the same tags give the per-group weight norms the trainer records. ``norm`` marks the
parameters of every module that ``lnlab.norms.is_norm`` recognises.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable

import torch
from torch import nn

from lnlab.errors import LnlabError
from lnlab.norms import is_norm
from lnlab.train.config import PARAM_GROUPS, TrainConfig

_READOUT_NAMES = ("head", "readout", "classifier", "fc_out", "lm_head")
_PRIMARY_ORDER = ("norm", "embedding", "readout", "bias")
_EMBED_HINTS = ("embed", "pos_emb", "cls_token", "position", "wte", "wpe")


def param_tags(model: nn.Module) -> dict[str, tuple[str, set[str]]]:
    """``{param name: (primary group, tags)}`` for every trainable parameter.

    Primary group (for weight norms): norm > embedding > readout > bias > weight.  The readout
    is the module named head/readout/classifier/... or else the last ``nn.Linear``.
    """
    modules = dict(model.named_modules())
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    named_readout = [n for n in linears if n.rsplit(".", 1)[-1] in _READOUT_NAMES]
    readout = named_readout[-1] if named_readout else (linears[-1] if linears else None)
    out: dict[str, tuple[str, set[str]]] = {}
    for mname, m in modules.items():
        for pname, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            full = f"{mname}.{pname}" if mname else pname
            tags: set[str] = set()
            if is_norm(m):
                tags.add("norm")
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) or any(
                    h in full.lower() for h in _EMBED_HINTS):
                tags.add("embedding")
            if readout is not None and mname == readout:
                tags.add("readout")
            if pname.endswith("bias"):
                tags.add("bias")
            primary = next((g for g in _PRIMARY_ORDER if g in tags), "weight")
            out.setdefault(full, (primary, tags))  # shared (tied) params: first name wins
    return out


def _excluded(name: str, tags: set[str], patterns: Iterable[str]) -> bool:
    return any(p in tags if p in PARAM_GROUPS else fnmatch.fnmatchcase(name, p)
               for p in patterns)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD(momentum) / Adam / AdamW with a decayed group and an undecayed group.

    ``cfg.wd_exclude`` lists tags or parameter-name globs (``fnmatch``) that get no weight
    decay.  With no decay, or nothing excluded, a single group is used (the same optimizer a
    hand-written loop would build).
    """
    tags = param_tags(model)
    params = dict(model.named_parameters())
    for pat in cfg.wd_exclude:
        if pat in PARAM_GROUPS:
            continue
        if not any(fnmatch.fnmatchcase(n, pat) for n in tags):
            raise LnlabError(f"wd_exclude pattern {pat!r} matches no parameter; groups are "
                             f"{', '.join(g for g in PARAM_GROUPS if g != 'weight')}")
    decay = [params[n] for n, (_, t) in tags.items() if not _excluded(n, t, cfg.wd_exclude)]
    free = [params[n] for n, (_, t) in tags.items() if _excluded(n, t, cfg.wd_exclude)]
    if not decay and not free:
        raise LnlabError("the model has no trainable parameters")
    wd = float(cfg.weight_decay)
    if wd == 0 or not free:
        groups = [{"params": decay + free, "weight_decay": wd, "name": "all"}]
    else:
        groups = [{"params": g, "weight_decay": w, "name": n}
                  for g, w, n in ((decay, wd, "decay"), (free, 0.0, "no_decay")) if g]
    # foreach=True: one call per step instead of a Python loop over parameters (~10% of a
    # small model's step on CPU). Bitwise the same: on CPU the foreach kernels apply the
    # per-tensor ops one tensor at a time, and on CUDA foreach is already torch's default.
    # Not fused=True: its single-pass kernel rounds differently.
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, foreach=True)
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, foreach=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, foreach=True)
    raise LnlabError(f"unknown optimizer {cfg.optimizer!r}")


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base LR before optimizer step ``step`` (0-based), per step.

    A pure function of the step, so a resumed run needs no scheduler state.
    """
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** ((step // steps_per_epoch) // cfg.step_size)
    total = cfg.epochs * steps_per_epoch
    t = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


class WeightNorms:
    """L2 norm of each parameter group's concatenated weights (``wnorm/<group>``)."""

    def __init__(self, model: nn.Module):
        params = dict(model.named_parameters())
        self.groups: dict[str, list[torch.Tensor]] = {}
        for name, (primary, _) in param_tags(model).items():
            self.groups.setdefault(primary, []).append(params[name])

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        out: dict[str, float] = {}
        sq_all = 0.0
        for g, ps in self.groups.items():
            sq = float(sum(float(p.detach().double().pow(2).sum()) for p in ps))
            out[f"wnorm/{g}"] = math.sqrt(sq)
            sq_all += sq
        out["wnorm/all"] = math.sqrt(sq_all)
        return out
