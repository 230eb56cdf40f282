"""The capacity settings: theory, proxy, fit and practical runs, one table row per scale."""

from __future__ import annotations

from typing import Any

__all__ = ["CONSTRUCT", "CURVE_DIM", "CURVE_GROUPS", "EXTRA_SCALES", "FIT_DEPTH", "FIT_GROUPS",
           "FIT_WIDTH", "LINEAR_LRS", "PRACTICAL", "PROXY_GROUPS", "SETTINGS", "sweep"]

FIT_GROUPS = (1, 2, 4, 8, 16)
FIT_WIDTH, FIT_DEPTH = 64, 4
LINEAR_LRS = (1e-3, 1e-2, 1e-1)
PROXY_GROUPS = (1, 2, 4, 8, 16, 32, 64, 128)
CURVE_GROUPS = (1, 2, 4, 8, 16)
CURVE_DIM = 64
# (m, d, K) problems for the construction (claim 4); d = 1 needs one extra embedding layer.
CONSTRUCT = ((10, 2, 2), (20, 2, 2), (40, 2, 2), (40, 10, 2), (40, 2, 4), (40, 10, 4),
             (20, 1, 3))
PRACTICAL = {  # family → (spec with {norm}, LN-G groups giving 8 features per group)
    "cnn": ("cnn:channels=16,layers=3,norm={norm}", 2),
    "transformer": ("transformer:layers=2,dim=32,heads=4,patch=8,mlp_ratio=2,norm={norm}", 4),
}
EXTRA_SCALES = ("tiny",)

# Per scale: fit epochs and subset sizes, LN-G groups, the linear baseline's (lr, batch) grid,
# practical epochs, VC depths, Monte-Carlo trials, proxy samples, construction problems. Quick
# fits MNIST-1D only (the digits fits, a second dataset for claims 6 and 9, are in "full"),
# shorter, and runs the practical comparison in the CNN only (the Transformer's is in "full"):
# sized by timing the whole quick reproduction against its 10-minute budget.
# "tiny" is a seconds-long smoke sweep for tests.
SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": {"epochs": 2, "n": {"mnist1d": 200, "digits": 200}, "groups": (1, 4),
             "lrs": (1e-2,), "batches": (100,), "pepochs": 1, "vc": (2, 3), "trials": 1,
             "proxy_n": 300, "construct": ((10, 2, 2), (12, 1, 3))},
    "quick": {"epochs": 40, "step": 8, "n": {"mnist1d": 2000}, "groups": FIT_GROUPS,
              "lrs": LINEAR_LRS, "batches": (100,), "pepochs": 8, "families": ("cnn",),
              "vc": (2, 3, 4, 5),
              "trials": 2, "proxy_n": 3000, "construct": CONSTRUCT},
    "full": {"epochs": 150, "n": {"mnist1d": 4000, "digits": 1438}, "groups": FIT_GROUPS,
             "lrs": LINEAR_LRS, "batches": (128, 256), "pepochs": 60, "vc": (2, 3, 4, 5, 6),
             "trials": 10, "proxy_n": 3000, "construct": CONSTRUCT},
}


def _norm_spec(groups: int) -> str:
    return "layernorm" if groups == 1 else f"groupln;groups={groups}"


def sweep(scale: str, seeds: list[int], *, tiny: str | None = None) -> list[dict[str, Any]]:
    """theory + proxy (per seed), fit (datasets × arms × seeds), practical (family × norm)."""
    small = bool(tiny) and tiny not in ("0", "false")  # tiny=1: the tiny scale, older form
    p = SETTINGS["tiny" if small else scale]
    configs: list[dict[str, Any]] = []
    for s in seeds:
        configs.append({"kind": "theory", "seed": s, "vc_layers": list(p["vc"]),
                        "trials": p["trials"], "construct": [list(c) for c in p["construct"]],
                        "curve_dim": CURVE_DIM, "curve_groups": list(CURVE_GROUPS)})
        configs.append({"kind": "proxy", "seed": s, "n": p["proxy_n"], "dim": 32,
                        "width": 256, "classes": 10, "groups": list(PROXY_GROUPS)})
    recipe = {"optimizer": "adam", "schedule": "step", "step_size": p.get("step", 20),
              "gamma": 0.5,
              "epochs": p["epochs"], "random_labels": True, "checkpoint_every": 0,
              "eval_every": p["epochs"], "threads": 1}
    for ds, n in p["n"].items():
        arms: list[tuple[str, int, float, int]] = [
            ("linear", 0, lr, b) for lr in p["lrs"] for b in p["batches"]]
        arms += [("lnnet", g, 1e-2, 100) for g in p["groups"]]
        arms.append(("lnnet-w2", 1, 1e-2, 100))  # claim 6: width 2 = a sign, no capacity
        # the LN-Nets compared with the linear baseline (claims 6, 9a) get its whole grid
        arms += [(a, 1, lr, b) for a in ("lnnet", "lnnet-w2") for lr in p["lrs"]
                 for b in p["batches"] if (lr, b) != (1e-2, 100)]
        for arm, g, lr, b in arms:
            width = 2 if arm == "lnnet-w2" else FIT_WIDTH
            model = ("linear" if arm == "linear" else
                     f"lnnet:depth={FIT_DEPTH},width={width},norm={_norm_spec(g)}")
            for s in seeds:
                configs.append({"kind": "fit", "dataset": ds, "n": n, "arm": arm, "groups": g,
                                "train": {**recipe, "data": ds, "model": model, "lr": lr,
                                          "batch_size": b, "seed": s}})
    for fam, (spec, g) in PRACTICAL.items():
        if fam not in p.get("families", PRACTICAL):
            continue
        for groups in (1, g):
            for s in seeds:
                configs.append({"kind": "practical", "family": fam, "groups": groups,
                                "train": {"optimizer": "adam", "lr": 3e-3, "batch_size": 100,
                                          "epochs": p["pepochs"], "data": "mnist1d",
                                          "checkpoint_every": 0, "threads": 1, "seed": s,
                                          "model": spec.format(norm=_norm_spec(groups))}})
    return configs
