"""One ablation run: train with the A1 gradient statistics and the AdaNorm forward probe."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lnlab.experiments.ablation.sweep import LM_TASK

__all__ = ["GSTAT_FIELDS", "LN2", "STATS_SAMPLES", "adanorm_probe", "run"]

LN2 = math.log(2.0)
GSTAT_FIELDS = ("mean", "var", "xu_mean", "xu_var", "g_mean_over_sigma", "g_var_over_sigma2",
                "m2_over_sigma2", "rel_dev_grad")
STATS_SAMPLES = 256


def adanorm_probe(samples: int = STATS_SAMPLES) -> Callable[[Any], dict[str, float]]:
    """A trainer hook for the last epoch: at every AdaNorm site, on ``samples`` training
    samples, the worst |mean(z) + C·k·mean(y²)|/(C·k) over rows (A2; mean(y²) = 1 at eps = 0,
    the paper's −C·k; ``z_mean_dev_eps0`` keeps |mean(z)/(−Ck) − 1|) and the largest share of
    units of a row with φ(y) = C(1 − k·y) ≤ 0 (A4), from the module's real input and output."""
    import torch

    from lnlab.norms import modules as lm

    def hook(state: Any) -> dict[str, float]:
        if state.epoch != state.cfg.epochs:
            return {}
        sites = [(n, m) for n, m in state.model.named_modules() if isinstance(m, lm.AdaNorm)]
        if not sites:
            return {}
        seen: dict[str, tuple[Any, Any]] = {}
        handles = [m.register_forward_hook(
            lambda mod, args, out, name=n: seen.__setitem__(name, (args[0], out)))
            for n, m in sites]
        was = state.model.training
        try:
            state.model.eval()
            with torch.no_grad():
                state.model(state.data.x_train[:samples].to(state.device))
        finally:
            for h in handles:
                h.remove()
            state.model.train(was)
        dev, paper, neg = 0.0, 0.0, 0.0
        for n, m in sites:
            x, z = (t.double().reshape(-1, t.shape[-1]) for t in seen[n])
            ck = m.C * m.k
            mu = x.mean(1, keepdim=True)
            y = (x - mu) / ((x - mu).pow(2).mean(1, keepdim=True) + m.eps).sqrt()
            # exact with eps: mean(z) = C·(mean(y) − k·mean(y²)) = −C·k·mean(y²)
            dev = max(dev, float((z.mean(1) + ck * y.pow(2).mean(1)).abs().max() / ck))
            paper = max(paper, float((z.mean(1) / (-ck) - 1).abs().max()))
            neg = max(neg, float((m.k * y >= 1).double().mean(1).max()))
        return {"ada/z_mean_dev": dev, "ada/z_mean_dev_eps0": paper, "ada/neg_share": neg,
                "ada/width": float(sites[0][1].normalized_shape[-1])}

    return hook


def run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train one (task, depth, variant, seed) with the A1 statistics and the AdaNorm probe."""
    from lnlab.analysis.gradients import gradient_hook
    from lnlab.experiments.framework import train_output
    from lnlab.train import TrainConfig, train

    cfg = TrainConfig.from_dict(config["train"])
    hooks = [adanorm_probe()]
    if config["task"] != LM_TASK:  # per-sample cross-entropy: classification tasks
        hooks.insert(0, gradient_hook(every=max(1, cfg.epochs // 2), norms=False, stats=True,
                                      stats_samples=STATS_SAMPLES, stats_fields=GSTAT_FIELDS))
    res = train(cfg, run_dir, hooks=hooks)
    out = train_output(res, run_dir)
    if res.info is not None:
        out["summary"]["num_classes"] = res.info.num_classes
    if config["task"] == LM_TASK:
        for k in ("train", "test"):
            v = out["summary"].get(f"final_{k}_loss")
            if isinstance(v, int | float):
                out["summary"][f"final_{k}_bpc"] = v / LN2
    return out
