"""The ablation settings: tasks × depths × norm variants, one table row per scale."""

from __future__ import annotations

from typing import Any

from lnlab.errors import LnlabError
from lnlab.runner.config import expand_grid

__all__ = ["ADANORM", "CLS_TASKS", "EXTRA_SCALES", "LM_TASK", "SETTINGS", "TASKS",
           "TASK_LABELS", "VARIANTS", "sweep"]

# variant id → norm spec (nested form for model specs) and its label in tables and figures
VARIANTS: dict[str, tuple[str, str]] = {
    "none": ("none", "w/o Norm"),
    "layernorm": ("layernorm", "LayerNorm"),
    "layernorm_simple": ("layernorm_simple", "LayerNorm-simple"),
    "detach_both": ("detachnorm;detach=both", "DetachNorm"),
    "detach_mean": ("detachnorm;detach=mean", "detach mean"),
    "detach_std": ("detachnorm;detach=std", "detach std"),
    "adanorm_C0.5": ("adanorm;C=0.5", "AdaNorm C=0.5"),
    "adanorm_C1": ("adanorm;C=1", "AdaNorm C=1"),
    "adanorm_C1.5": ("adanorm;C=1.5", "AdaNorm C=1.5"),
    "adanorm_C2": ("adanorm;C=2", "AdaNorm C=2"),
}
ADANORM = "adanorm_C1"  # the AdaNorm the claims test (fixed before any run)
CLS_TASKS = ("mnist1d_mlp", "digits_mlp", "tokens_preln", "tokens_postln")
LM_TASK = "pystdlib_lm"
TASKS = (*CLS_TASKS, LM_TASK)
TASK_LABELS = {"mnist1d_mlp": "MNIST-1D MLP", "digits_mlp": "digits MLP",
               "tokens_preln": "tokens Pre-LN", "tokens_postln": "tokens Post-LN",
               "pystdlib_lm": "stdlib char-LM (bpc)"}
EXTRA_SCALES = ("tiny",)

# Per scale: the depths (blocks), the variants, and per task the data spec, the model spec
# template ({depth}, {norm}), epochs, batch size and learning rate. "tiny" is a seconds-long
# smoke sweep for tests.
_MLP = "mlp:depth={depth},width={width},norm={norm}"
_TOK = "transformer:layers={depth},dim={dim},heads=2,ln={ln},pool=mean,norm={norm}"
_LM = "transformer:layers={depth},dim={dim},heads=2,ln=pre,causal=true,norm={norm}"
SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "depths": (1, 2),
        "variants": ("layernorm_simple", "detach_both", "detach_mean", "detach_std",
                     "adanorm_C1", "layernorm"),
        "tasks": {
            "mnist1d_mlp": {"data": "mnist1d:size=200", "model": _MLP, "width": 16,
                            "epochs": 2, "batch_size": 50, "lr": 3e-3},
            "digits_mlp": {"data": "digits", "model": _MLP, "width": 16, "epochs": 1,
                           "batch_size": 200, "lr": 3e-3},
            "tokens_preln": {"data": "tokens:n=200,length=8,distractors=0", "model": _TOK,
                             "dim": 16, "ln": "pre", "epochs": 2, "batch_size": 80,
                             "lr": 3e-3},
            "tokens_postln": {"data": "tokens:n=200,length=8,distractors=0", "model": _TOK,
                              "dim": 16, "ln": "post", "epochs": 2, "batch_size": 80,
                              "lr": 3e-3},
            "pystdlib_lm": {"data": "pystdlib:chars=3000,context=16", "model": _LM,
                            "dim": 16, "epochs": 2, "batch_size": 64, "lr": 3e-3},
        },
    },
    # quick: the two MLP tasks at two depths with the variants the claims compare (w/o Norm
    # and AdaNorm C=2 are figure material): the transformer and char-LM tasks cost ~5× more
    # than the whole quick budget allows, so their claims (A5.lm, A6.lm) run at "full"
    "quick": {
        "depths": (2, 6),
        "variants": ("layernorm", "layernorm_simple", "detach_both", "detach_mean",
                     "detach_std", "adanorm_C1"),
        "tasks": {
            "mnist1d_mlp": {"data": "mnist1d", "model": _MLP, "width": 64, "epochs": 10,
                            "batch_size": 100, "lr": 3e-3},
            "digits_mlp": {"data": "digits", "model": _MLP, "width": 64, "epochs": 10,
                           "batch_size": 100, "lr": 3e-3},
        },
    },
    "full": {
        "depths": (2, 6, 12),
        "variants": ("none", "layernorm", "layernorm_simple", "detach_both", "detach_mean",
                     "detach_std", "adanorm_C0.5", "adanorm_C1", "adanorm_C1.5",
                     "adanorm_C2"),
        "tasks": {
            "mnist1d_mlp": {"data": "mnist1d", "model": _MLP, "width": 100, "epochs": 100,
                            "batch_size": 100, "lr": 1e-3},
            "digits_mlp": {"data": "digits", "model": _MLP, "width": 100, "epochs": 100,
                           "batch_size": 100, "lr": 1e-3},
            "tokens_preln": {"data": "tokens", "model": _TOK, "dim": 64, "ln": "pre",
                             "epochs": 40, "batch_size": 100, "lr": 3e-3},
            "tokens_postln": {"data": "tokens", "model": _TOK, "dim": 64, "ln": "post",
                              "epochs": 40, "batch_size": 100, "lr": 3e-3},
            "pystdlib_lm": {"data": "pystdlib:chars=1000000,context=128", "model": _LM,
                            "dim": 128, "epochs": 20, "batch_size": 32, "lr": 1e-3},
        },
    },
}
# the expensive transformer runs first, so a sweep's long tail is short runs
ORDER = ("pystdlib_lm", "tokens_postln", "tokens_preln", "mnist1d_mlp", "digits_mlp")


def sweep(scale: str, seeds: list[int], tiny: str = "0") -> list[dict[str, Any]]:
    """Tasks × depths × variants × seeds; ``tiny=1`` is the tiny scale (older spelling)."""
    if tiny not in ("0", "1"):
        raise LnlabError(f"option tiny must be 0 or 1, got {tiny!r}")
    setting = SETTINGS["tiny" if tiny == "1" else scale]
    configs = []
    for task in (t for t in ORDER if t in setting["tasks"]):
        s = setting["tasks"][task]
        for depth in sorted(setting["depths"], reverse=True):
            arms = []
            for v in setting["variants"]:
                model = s["model"].format(depth=depth, norm=VARIANTS[v][0],
                                          **{k: s[k] for k in ("width", "dim", "ln") if k in s})
                arms.append({"variant": v, "train.model": model})
            base = {"task": task, "depth": depth,
                    "train": {"data": s["data"], "epochs": s["epochs"], "optimizer": "adam",
                              "lr": s["lr"], "batch_size": s["batch_size"],
                              "weight_decay": 0.0, "schedule": "constant",
                              "checkpoint_every": 0}}
            configs += expand_grid(base, {"variant": arms}, seeds=seeds, seed_path="train.seed")
    return configs
