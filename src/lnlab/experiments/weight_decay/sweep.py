"""The weight-decay settings: block forms × datasets × λ, controls and Li–Arora, per scale."""

from __future__ import annotations

import copy
import math
from typing import Any

from lnlab.errors import LnlabError

__all__ = ["ARCHS", "DECAY_STEP", "EXTRA_SCALES", "LI_ARORA", "LR", "NOISE", "NORM", "SETTINGS",
           "STATIC_INPUTS", "model_spec", "sweep"]

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
LI_ARORA = {"eta": 0.1, "wd": 0.05, "steps": 100, "batch": 100, "depth": 3, "width": 32}
EXTRA_SCALES = ("tiny",)

# Per scale: the block forms trained over the λ grid (``archs``; they also get the controls) and
# those trained only at λ = 0 for the static checks (``static_archs``), model size, λ grid,
# epochs per dataset, the control's λs, datasets and modes (exact eps = 0, or the real eps
# too), the Li–Arora run's options beyond LI_ARORA, and how many seeds the runs that only feed
# exact checks get (``check_seeds``; default all). Quick runs what its claims read: the
# trained claims (B6, B7, the blog's thesis) compare (i) ``ln`` and (ii) ``pre`` at λ = 0 and
# λ_max on MNIST-1D, the static checks need every block form once; the intermediate λ, the
# digits runs and the other forms' controls are figure material, left to "full". "tiny" is a
# seconds-long smoke sweep for tests.
SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": {"archs": ("ln", "pre"), "static_archs": (), "depth": 2, "width": 16,
             "wds": [0.0, 3e-2], "epochs": {"mnist1d": 2}, "control_wds": [3e-2],
             "control_datasets": ["mnist1d"], "control_modes": [True],
             "li_arora": {"steps": 20}},
    "quick": {"archs": ("ln", "pre"), "static_archs": ("none", "pre+final", "post", "branch"),
              "depth": 3, "width": 64, "wds": [0.0, 3e-2], "epochs": {"mnist1d": 30},
              "control_wds": [3e-2], "control_datasets": ["mnist1d"], "control_modes": [True],
              "li_arora": {}, "check_seeds": 1},
    "full": {"archs": tuple(ARCHS), "static_archs": (), "depth": 4, "width": 128,
             "wds": [0.0, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
             "epochs": {"mnist1d": 150, "digits": 100}, "control_wds": [1e-2, 3e-2, 1e-1],
             "control_datasets": ["mnist1d", "digits"], "control_modes": [True, False],
             "li_arora": {}},
}


def model_spec(arch: str, depth: int, width: int) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}")
    return f"mlp:depth={depth},width={width},{ARCHS[arch]}"


def sweep(scale: str, seeds: list[int], tiny: str = "0") -> list[dict[str, Any]]:
    """Training runs (arch × dataset × λ × seed, plus the static-only forms at λ = 0), the
    controls of the grid's forms, and one Li–Arora run per seed; ``tiny=1`` is the tiny scale
    (older spelling)."""
    if tiny not in ("0", "1"):
        raise LnlabError(f"option tiny must be 0 or 1, got {tiny!r}")
    sc = SETTINGS["tiny" if tiny == "1" else scale]
    configs: list[dict[str, Any]] = []
    # the static forms and Li–Arora feed only exact checks (pass/fail on every value): one
    # seed each where the scale says so; the empirical claims get every seed
    check_seeds = seeds[:sc.get("check_seeds") or len(seeds)]
    for dataset, epochs in sc["epochs"].items():
        grid = [(a, wd, seeds) for a in sc["archs"] for wd in sc["wds"]]
        grid += [(a, 0.0, check_seeds) for a in sc["static_archs"] if dataset == "mnist1d"]
        for arch, wd, arch_seeds in grid:
            for seed in arch_seeds:
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
    for seed in check_seeds:
        configs.append({"kind": "li-arora", "arch": "ln", "dataset": "mnist1d", "seed": seed,
                        **sc["li_arora"]})
    return configs
