"""LayerNorm's nonlinearity and the capacity of LN-Nets and LN-G (Ni et al., ICML 2024).

Method (``docs/papers/ni_nonlinearity.md``; claim numbers follow its §5). Four run kinds:

* ``theory`` (no training, one run per seed): the measurements behind claims 1–5 and 7 —
  LN's shift/scale invariance and non-additivity on Gaussian vectors (claim 1); random affine
  maps of every output size never lower LSSR (claim 2, :mod:`lnlab.analysis.ssr`); the XOR
  set, whose LSSR is infinite for every affine image, gets a finite LSSR after one
  Linear(2→3)+LN layer, random Linear(3→3)+LN layers lower LSSR in a share of draws, and the
  constructed LN-Net drives it to 0 (claim 3); the width-3 construction
  (:mod:`lnlab.analysis.lnnet`) on random problems of m points in d dimensions with K classes:
  layers, width and training accuracy (claim 4); the VC demo, every labelling of L+2 points
  with L LN layers (claim 5); and the Hessian measure H of LN-G over Gaussian inputs in
  d = 64 for g = 1..16 groups, medians, against ‖J‖² (claim 7, :mod:`lnlab.analysis.nonlinearity`).
* ``proxy`` (no training): the random-feature capacity proxy of claim 8 — N Gaussian points
  in d = 32 with 10 random labels, a fixed random Linear(32→256) without bias, LN-G with g
  groups, and a least-squares readout; training accuracy per g, and the same readout on the
  raw inputs (the linear classifier).
* ``fit`` (claims 6 and 9): random-label fitting. A subset of MNIST-1D (first 2,000 training
  signals, 40 features) and of the 8×8 digits (first 1,000, flattened to 64) gets uniformly
  random labels (drawn from the run seed, so every arm of a seed fits the same labels). We
  train a linear classifier (one affine map; best over learning rates 1e-3, 1e-2, 1e-1 per
  seed: the "linear upper bound" of the paper, which bounds every linear network), an LN-Net
  (4 × [Linear(64) → LN], no activation, then a readout), the same LN-Net with LN-G,
  g ∈ {2, 4, 8, 16} (group size ≥ 4), and a width-2 LN-Net (claim 6). Adam, batch 100,
  lr 1e-2 for the LN-G comparisons, learning rate halved every 20 epochs, 100 epochs (full:
  150, and batch sizes 128/256 for the linear grid as in the paper's Appendix F.1). The LN-Net
  and the width-2 LN-Net compared with the linear classifier get the linear classifier's whole
  (lr, batch) grid and are scored, like it, by their best point. Metric: final training
  accuracy on the random labels.
* ``practical`` (claim 10): LN vs LN-G (8 features per group, the authors' later advice) inside
  a small CNN (3 conv layers, 16 channels, norm over channels at each position) and a small
  Pre-LN Transformer (2 blocks, dim 32, patches of 8) on MNIST-1D with its true labels; final
  test accuracy over seeds.

Subset sizes were chosen by a timing/pilot probe so that the linear classifier fits about a
quarter of the random labels and the plain LN-Net is far from 100% (neither trivial nor
hopeless); the claims below were written before the quick run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
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
    NonInferiority,
)
from lnlab.experiments.framework import Results, Run, fmt_mean_std, spearman

NAME = "capacity"
DESCRIPTION = ("Ni et al.: LN-Nets (Linear + LayerNorm, no activation) fit random labels "
               "beyond a linear classifier, LN-G amplifies it; the width-3 construction, "
               "VC demo, SSR/LSSR and Hessian nonlinearity; LN-G in a CNN and a Transformer.")
SEEDS = {"quick": 5, "full": 5}
OPTIONS = {"tiny": "1 = a seconds-long smoke test (tests only)"}
HEADLINE_METRIC = "final_train_acc"
PAPER = "Ni, Guo, Jia, Huang 2024 (ICML), arXiv 2406.01255"
NOTES = "research notes ni_nonlinearity.md"

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

# --------------------------------------------------------------------------------- claims
# Written from docs/papers/ni_nonlinearity.md (§5) before any run. "points" = percentage points.
# Closed forms, constructions and properties of LN itself (ni.1–ni.5, ni.3a/b) are checks; Monte-
# Carlo and trained quantities are empirical (CI over seeds). Minimal effects: from the notes'
# numbers where they exist (proxy: g = 8 beats g = 1 by 17.6 points → 5; curvature ratio "far more"
# → 2×; random layers below the input LSSR in ~34% of draws → > 5%), stated otherwise: 2 points of
# training accuracy for "fits more random labels" and for width-2 "no more capacity", 0.5 test
# points for a "practical improvement" (5 of 1,000 MNIST-1D test samples), 2 points of non-
# inferiority, ρ > 0.5 for a trend. Comparisons use a pre-registered arm (the proxy's g = width/dim,
# where the group size equals the input dimension) or the mean over arms, never the best arm (a max
# over noisy arms is biased upwards).
M = "lnlab.experiments.capacity.analyze"
CLAIMS = [
    Claim("ni.1a", NOTES + " §1.1, claim 1",
          "LN (eps = 0) is invariant to x → x + c·1 and x → αx (α > 0).",
          "max |LN(x + c1) − LN(x)|, |LN(αx) − LN(x)| over Gaussian draws",
          "0 up to float64 rounding", Check(0.0, 1e-10)),
    Claim("ni.1b", NOTES + " §1.1, claim 1",
          "LN is not additive: LN(x + y) ≠ LN(x) + LN(y).",
          "median ‖LN(x+y) − LN(x) − LN(y)‖ / ‖LN(x) + LN(y)‖",
          "clearly nonzero (> 0.1)", CheckBound(">", 0.1)),
    Claim("ni.2", PAPER + " (LSSR is linear-invariant); " + NOTES + " claim 2",
          "No affine map of any rank or output size lowers LSSR.",
          "violations among 200 random affine maps", "0 on every seed",
          Check(0.0, 0.0)),
    Claim("ni.3a", NOTES + " §1.3, claim 3",
          "XOR: LSSR is infinite for the input and every affine image, finite after one "
          "Linear(2→3)+LN layer (26 in the notes).",
          "LSSR of XOR after Linear(2→3)+LN", "finite (≈ 26)", Check(26.0, 1.0)),
    Claim("ni.3b", PAPER + " (LN-Nets can go below LSSR); " + NOTES + " claim 3",
          "The constructed LN-Net collapses each class to one point: LSSR of its last layer is 0.",
          "LSSR of the last LN layer of the construction (m = 20, d = 2, K = 2)",
          "0 (numerically ≤ 1e-8)", Check(0.0, 1e-8)),
    Claim("ni.3c", NOTES + " claim 3",
          "A random Linear(3→3)+LN layer goes below the input LSSR in a sizeable share of draws "
          "(about 34% in the notes).",
          "share of 200 random layers with LSSR(out) < LSSR(in)", "> 5% (notes: ~34%)",
          Effect(">", 0.05), measured_by=M),
    Claim("ni.4", PAPER + " (Theorem: width 3, O(m) LN layers); " + NOTES + " claim 4",
          "The width-3 construction with m − K LN layers (+1 for 1-D input) fits every random "
          "labelling of m ≤ 40 points (d ∈ {1, 2, 10}, K ∈ {2, 3, 4}) with 100% accuracy.",
          "share of constructions with width 3, m − K (+1) layers and 100% accuracy",
          "1 on every seed", Check(1.0, 0.0)),
    Claim("ni.5", PAPER + " (VC-dimension lower bound); " + NOTES + " claim 5",
          "Width 3 and L LN layers shatter L + 2 generic points (VC ≥ L + 2).",
          "share of L (2..5; full 2..6) whose every labelling of L+2 points is fitted",
          "1 on every seed", Check(1.0, 0.0)),
    Claim("ni.7a", PAPER + " (group partition amplifies nonlinearity); " + NOTES + " claim 7",
          "The Hessian measure H of LN-G grows with the group number g (d = 64, groups of ≥ 8).",
          "min over g ∈ {1,2,4} of median H(2g) / median H(g)",
          "> 1.1 at every doubling (the per-seed minimum over doublings)",
          Effect(">", 0.1, null=1.0), measured_by=M),
    Claim("ni.7b", NOTES + " claim 7",
          "Grouping amplifies curvature, not slope: H grows far more than ‖J‖² from g = 1 to 8.",
          "(median H ratio g=8/g=1) / (median ‖J‖² ratio g=8/g=1)", "> 2",
          Effect(">", 1.0, null=1.0), measured_by=M),
    Claim("ni.8a", NOTES + " claim 8 (random-feature proxy)",
          "Wide LN (g = 1) on random features is about as good as the linear readout.",
          "proxy acc[g=1] − acc[linear] (points)", "equivalent to 0 within ±3 points",
          Equivalence(3.0), measured_by=M),
    Claim("ni.8b", PAPER + " (LN-G amplifies capacity); " + NOTES + " claim 8",
          "LN-G random features fit more random labels than plain LN (group size = input "
          "dimension vs g = 1).",
          "proxy acc[g=width/dim] − acc[g=1] (points)", "> 5 points (notes: +17.6)",
          Effect(">", 5.0), measured_by=M),
    Claim("ni.8c", NOTES + " claim 8",
          "The proxy accuracy peaks when the group size is about the input dimension (32).",
          "log2(best group size / 32)", "within one doubling (group size 16..64): the "
          "values are integers, so equivalence margin 1.5",
          Equivalence(1.5), measured_by=M),
    *[c for ds in ("mnist1d", "digits") for c in (
        Claim(f"ni.6.{ds}", NOTES + " §1.1, claim 6",
              f"A width-2 LN-Net has no more capacity than a linear classifier: LN on 2 "
              f"neurons is ±(1, −1) ({ds} subset).",
              f"{ds}: train_acc[width-2 LN-Net] − best train_acc[linear] (points)",
              "not above linear by more than 2 points",
              NonInferiority("<", 2.0), measured_by=M),
        Claim(f"ni.9a.{ds}", PAPER + " §6 (random-label fitting); " + NOTES + " claim 9",
              f"A trained LN-Net fits more random labels than the best linear classifier "
              f"({ds} subset).",
              f"{ds}: train_acc[LN-Net] − best train_acc[linear] (points)",
              "paired difference > 2 points", Effect(">", 2.0), measured_by=M),
        Claim(f"ni.9b.{ds}", PAPER + " §6; " + NOTES + " claim 9",
              f"LN-G fits more random labels than LN (mean over g ≥ 2 vs g = 1, {ds} subset).",
              f"{ds}: mean over g≥2 of train_acc[LN-G] − train_acc[LN] (points)",
              "paired difference > 2 points", Effect(">", 2.0), measured_by=M),
        Claim(f"ni.9c.{ds}", NOTES + " claim 9",
              f"Training accuracy rises with the group number ({ds} subset, g = 1..16).",
              f"{ds}: Spearman ρ(g, train_acc)", "ρ > 0.5", Effect(">", 0.5), measured_by=M),
    )],
    *[c for fam in PRACTICAL for c in (
        Claim(f"ni.10a.{fam}", PAPER + " (LN-G in CNNs/Transformers); " + NOTES + " claim 10",
              f"LN-G in place of LN does not hurt the {fam} on MNIST-1D.",
              f"{fam}: test_acc[LN-G] − test_acc[LN] (points)",
              "not worse by more than 2 points", NonInferiority(">", 2.0), measured_by=M),
        Claim(f"ni.10b.{fam}", PAPER + " (\"practical improvements\")",
              f"LN-G improves the {fam}'s test accuracy on MNIST-1D.",
              f"{fam}: test_acc[LN-G] − test_acc[LN] (points)",
              "paired difference > 0.5 points", Effect(">", 0.5), measured_by=M),
    )],
]


# --------------------------------------------------------------------------------- sweep
def _scale_params(scale: str, tiny: bool) -> dict[str, Any]:
    if tiny:
        return {"epochs": 2, "n": {"mnist1d": 200, "digits": 200}, "groups": (1, 4),
                "lrs": (1e-2,), "batches": (100,), "pepochs": 1, "vc": (2, 3), "trials": 1,
                "proxy_n": 300, "construct": ((10, 2, 2), (12, 1, 3))}
    if scale == "full":
        return {"epochs": 150, "n": {"mnist1d": 4000, "digits": 1438}, "groups": FIT_GROUPS,
                "lrs": LINEAR_LRS, "batches": (128, 256), "pepochs": 60, "vc": (2, 3, 4, 5, 6),
                "trials": 10, "proxy_n": 3000, "construct": CONSTRUCT}
    return {"epochs": 100, "n": {"mnist1d": 2000, "digits": 1000}, "groups": FIT_GROUPS,
            "lrs": LINEAR_LRS, "batches": (100,), "pepochs": 15, "vc": (2, 3, 4, 5),
            "trials": 2, "proxy_n": 3000, "construct": CONSTRUCT}


def _norm_spec(groups: int) -> str:
    return "layernorm" if groups == 1 else f"groupln;groups={groups}"


def sweep(scale: str, seeds: list[int], *, tiny: str | None = None) -> list[dict[str, Any]]:
    """theory + proxy (per seed), fit (datasets × arms × seeds), practical (family × norm)."""
    small = bool(tiny) and tiny not in ("0", "false")
    p = _scale_params(scale, small)
    configs: list[dict[str, Any]] = []
    for s in seeds:
        configs.append({"kind": "theory", "seed": s, "vc_layers": list(p["vc"]),
                        "trials": p["trials"], "construct": [list(c) for c in p["construct"]],
                        "curve_dim": CURVE_DIM, "curve_groups": list(CURVE_GROUPS)})
        configs.append({"kind": "proxy", "seed": s, "n": p["proxy_n"], "dim": 32,
                        "width": 256, "classes": 10, "groups": list(PROXY_GROUPS)})
    recipe = {"optimizer": "adam", "schedule": "step", "step_size": 20, "gamma": 0.5,
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
        for groups in (1, g):
            for s in seeds:
                configs.append({"kind": "practical", "family": fam, "groups": groups,
                                "train": {"optimizer": "adam", "lr": 3e-3, "batch_size": 100,
                                          "epochs": p["pepochs"], "data": "mnist1d",
                                          "checkpoint_every": 0, "threads": 1, "seed": s,
                                          "model": spec.format(norm=_norm_spec(groups))}})
    return configs


# --------------------------------------------------------------------------------- runs
@contextmanager
def _one_thread() -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Dispatch on ``config["kind"]``; theory and proxy runs measure, the others train."""
    kind = config.get("kind")
    if kind == "theory":
        with _one_thread():
            return _done(theory_measurements(config))
    if kind == "proxy":
        with _one_thread():
            return _done(proxy_measurements(config))
    if kind == "fit":
        return _fit_run(config, Path(run_dir))
    if kind == "practical":
        from lnlab.experiments.framework import train_run

        return train_run(config, run_dir)
    raise LnlabError(f"capacity: unknown run kind {kind!r}")


def _done(summary: dict[str, float]) -> dict[str, Any]:
    return {"status": "finished", "summary": summary, "epochs": [], "artifacts": {}}


def subset_arrays(dataset: str, n: int) -> tuple[Any, Any]:
    """The first ``n`` training examples of a built-in dataset, flattened to vectors (float32)."""
    from lnlab.data import load_dataset

    ds = load_dataset(dataset)
    if n > len(ds.x_train):
        raise LnlabError(f"{dataset} has {len(ds.x_train)} training examples, asked for {n}")
    x = ds.x_train[:n].reshape(n, -1).float().numpy()
    y = ds.y_train[:n].numpy()
    return x, y


def subset_file(dataset: str, n: int) -> Path:
    """The subset as an .npz in the lnlab cache (written once, atomically, shared by every
    run), so the trainer loads it like any user file and run directories stay small."""
    from lnlab.data.builtin import cache_dir
    from lnlab.io import save_npz, write_with

    path = cache_dir() / "capacity" / f"{dataset}-first{n}.npz"
    if not path.is_file():
        x, y = subset_arrays(dataset, n)
        # the test split is unused (random labels have no test set): a slice keeps eval cheap
        write_with(path, lambda tmp: save_npz(tmp, x_train=x, y_train=y, x_test=x[:100],
                                              y_test=y[:100]))
    return path


def _fit_run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train on the random-labelled subset (the trainer's ``random_labels`` redraws every
    label from the run seed, so all arms of one seed fit the same labels)."""
    import numpy as np
    import torch
    from torch import nn

    from lnlab.experiments.framework import train_output
    from lnlab.train import TrainConfig, derive_seed, train

    path = subset_file(config["dataset"], int(config["n"]))
    cfg = TrainConfig.from_dict({**config["train"], "data": str(path)})
    model = None
    if config["train"]["model"] == "linear":
        with torch.random.fork_rng():
            torch.manual_seed(derive_seed(cfg.seed, "linear-init"))
            with np.load(path) as arrays:
                n_in = int(arrays["x_train"].shape[1])
            model = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 10))
    return train_output(train(cfg, run_dir, model=model), run_dir)


def theory_measurements(config: dict[str, Any]) -> dict[str, float]:
    """Claims 1–5 and 7: invariance, LSSR checks, construction, VC demo, Hessian curve."""
    import torch

    from lnlab.analysis import lnnet, nonlinearity, ssr
    from lnlab.norms import make_norm

    seed = int(config["seed"])
    out: dict[str, float] = {}
    # claim 1
    g = torch.Generator().manual_seed(seed)
    ln = make_norm("layernorm_simple:eps=0", 8, dtype=torch.float64)
    x = torch.randn(500, 8, generator=g, dtype=torch.float64)
    y = torch.randn(500, 8, generator=g, dtype=torch.float64)
    c = 10 * torch.randn(500, 1, generator=g, dtype=torch.float64)
    a = torch.exp(3 * torch.randn(500, 1, generator=g, dtype=torch.float64))
    with torch.no_grad():
        base = ln(x)
        out["invariance_err"] = float(torch.maximum((ln(x + c) - base).abs().max(),
                                                    (ln(a * x) - base).abs().max()))
        s = ln(x) + ln(y)
        rel = (ln(x + y) - s).norm(dim=1) / s.norm(dim=1)
    out["nonadditivity"] = float(rel.median())
    # claim 2
    X, yy = lnnet.random_problem(40, 6, 3, seed)
    out["linear_violations"] = float(ssr.random_linear_check(X, yy, trials=200,
                                                             seed=seed).violations)
    # claim 3
    xor = ssr.xor_example()
    out["xor_input_finite"] = float(math.isfinite(xor["input"]))
    out["xor_after_ln"] = float(xor["after_ln"])
    X, yy = lnnet.random_problem(40, 3, 2, seed)
    out["random_ln_below_share"] = ssr.random_ln_layer_check(X, yy, trials=200,
                                                             seed=seed).fraction_below
    X, yy = lnnet.random_problem(20, 2, 2, seed)
    per_layer = ssr.lssr_per_layer(lnnet.construct(X, yy).model, X, yy)
    out["constructed_lssr_in"] = float(per_layer[0])
    out["constructed_lssr_last"] = float(per_layer[-1])
    # claim 4
    ok = total = 0
    for m, d, K in config["construct"]:
        accs, layers, widths = [], [], []
        for t in range(int(config["trials"])):
            X, yy = lnnet.random_problem(m, d, K, 1000 * seed + t)
            con = lnnet.construct(X, yy)
            acc, _ = lnnet.evaluate_accuracy(con.model, X, yy)
            want = m - K + (1 if d == 1 else 0)
            ok += acc == 1.0 and con.num_ln_layers == want and con.width == 3
            total += 1
            accs.append(acc)
            layers.append(con.num_ln_layers)
            widths.append(con.width)
        key = f"construct_m{m}_d{d}_K{K}"
        out[f"{key}_acc"] = min(accs)
        out[f"{key}_layers"] = float(max(layers))
        out[f"{key}_width"] = float(max(widths))
        out[f"{key}_expected_layers"] = float(m - K + (1 if d == 1 else 0))
    out["construct_ok_share"] = ok / total
    # claim 5
    shattered = 0
    for L in config["vc_layers"]:
        r = lnnet.vc_demo(int(L), seed=seed)
        out[f"vc_L{L}_fitted_share"] = r.fitted / r.labellings
        shattered += r.shattered
    out["vc_shattered_share"] = shattered / len(config["vc_layers"])
    # claim 7
    pts = nonlinearity.group_curve(dim=int(config["curve_dim"]),
                                   groups=tuple(config["curve_groups"]), seed=seed)
    j0 = pts[0].median_jac
    for p in pts:
        out[f"h_median_g{p.groups}"] = p.median_h
        out[f"h_equal_var_g{p.groups}"] = p.equal_variance_h
        out[f"h_ratio_g{p.groups}"] = p.ratio_to_ln
        out[f"jac_ratio_g{p.groups}"] = p.median_jac / j0
    return out


def proxy_measurements(config: dict[str, Any]) -> dict[str, float]:
    """Claim 8: least-squares readout accuracy on random LN-G features of Gaussian data."""
    import torch

    from lnlab.analysis import lnnet, nonlinearity

    X, y = lnnet.random_problem(int(config["n"]), int(config["dim"]), int(config["classes"]),
                                int(config["seed"]))
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    out = {"acc_linear": nonlinearity.random_feature_accuracy(Xt, yt, None)}
    for g in config["groups"]:
        out[f"acc_g{g}"] = nonlinearity.random_feature_accuracy(
            Xt, yt, int(g), width=int(config["width"]), seed=int(config["seed"]))
    return out


# --------------------------------------------------------------------------------- analysis
def _acc_pct(key: str) -> Any:
    def f(run: Run) -> float | None:
        v = run.summary.get(key)
        return None if v is None else 100.0 * float(v)

    return f


def _by_seed(results: Results, metric: Any, **where: Any) -> dict[int, float]:
    return dict(results.per_seed(metric, **where).values)


def _best_over_grid(sel: Results) -> dict[int, float]:
    """Per seed, the best final training accuracy (%) over an arm's (lr, batch) grid: the
    fitted capacity of that model class (the same grid for every arm compared)."""
    best: dict[int, float] = {}
    for r in sel.select(status="finished").runs:
        v = r.summary.get("final_train_acc")
        if isinstance(v, int | float) and math.isfinite(v):
            best[r.seed] = max(best.get(r.seed, -math.inf), 100.0 * float(v))
    return best


def fit_table(results: Results, dataset: str) -> dict[str, dict[int, float]]:
    """Per-seed training accuracy (%) of the fit runs: "linear", "lnnet" (LN, g = 1) and
    "w2" (width 2) — each the best over the same (lr, batch) grid — and "g{g}" for each LN-Net
    group number at the common lr 1e-2, batch 100 (LN vs LN-G comparisons)."""
    fit = results.select(kind="fit", dataset=dataset)
    out: dict[str, dict[int, float]] = {"linear": _best_over_grid(fit.select(arm="linear"))}
    for g in sorted(x for x in fit.values("groups") if isinstance(x, int) and x > 0):
        out[f"g{g}"] = _by_seed(fit, _acc_pct("final_train_acc"), arm="lnnet", groups=g,
                                train__lr=1e-2, train__batch_size=100)
    grid = {(r.get("train.lr"), r.get("train.batch_size"))
            for r in fit.select(arm="linear").runs}

    def on_grid(sel: Results) -> Results:
        return Results([r for r in sel.runs
                        if (r.get("train.lr"), r.get("train.batch_size")) in grid])

    lnnet = _best_over_grid(on_grid(fit.select(arm="lnnet", groups=1)))
    if lnnet:
        out["lnnet"] = lnnet
    w2 = _best_over_grid(on_grid(fit.select(arm="lnnet-w2")))
    if w2:
        out["w2"] = w2
    return out


def _diff(a: dict[int, float], b: dict[int, float], unit: str = "points") -> Measurement:
    common = sorted(set(a) & set(b))
    return Measurement({s: a[s] - b[s] for s in common}, unit=unit,
                       excluded=len(set(a) ^ set(b)))


def analyze(results: Results) -> dict[str, Measurement]:
    """The per-seed numbers every claim tests (see CLAIMS for the names)."""
    out: dict[str, Measurement] = {}
    th = results.select(kind="theory")

    def t(key: str, unit: str = "") -> Measurement:
        return th.per_seed(key, unit=unit)

    out["max |LN(x + c1) − LN(x)|, |LN(αx) − LN(x)| over Gaussian draws"] = t("invariance_err")
    out["median ‖LN(x+y) − LN(x) − LN(y)‖ / ‖LN(x) + LN(y)‖"] = t("nonadditivity")
    out["violations among 200 random affine maps"] = t("linear_violations")
    out["LSSR of XOR after Linear(2→3)+LN"] = t("xor_after_ln")
    out["LSSR of the last LN layer of the construction (m = 20, d = 2, K = 2)"] = t(
        "constructed_lssr_last")
    out["share of 200 random layers with LSSR(out) < LSSR(in)"] = t("random_ln_below_share")
    out["share of constructions with width 3, m − K (+1) layers and 100% accuracy"] = t(
        "construct_ok_share")
    out["share of L (2..5; full 2..6) whose every labelling of L+2 points is fitted"] = t(
        "vc_shattered_share")

    def min_step(r: Run) -> float | None:
        hs = [r.summary.get(f"h_median_g{g}") for g in (1, 2, 4, 8)]
        if any(h is None for h in hs):
            return None
        return min(hs[i + 1] / hs[i] for i in range(3))

    out["min over g ∈ {1,2,4} of median H(2g) / median H(g)"] = th.per_seed(min_step)
    out["(median H ratio g=8/g=1) / (median ‖J‖² ratio g=8/g=1)"] = th.per_seed(
        lambda r: r.summary["h_ratio_g8"] / r.summary["jac_ratio_g8"]
        if "h_ratio_g8" in r.summary else None)

    px = results.select(kind="proxy")
    groups = [int(g) for g in (px.runs[0].config["groups"] if px.runs else [])]

    def proxy_best(r: Run) -> tuple[int, float]:
        accs = {g: float(r.summary[f"acc_g{g}"]) for g in groups if f"acc_g{g}" in r.summary}
        g = max(accs, key=lambda k: accs[k])
        return g, accs[g]

    out["proxy acc[g=1] − acc[linear] (points)"] = px.per_seed(
        lambda r: 100 * (r.summary["acc_g1"] - r.summary["acc_linear"]), unit="points")
    def proxy_matched(r: Run) -> float | None:
        g = int(r.config["width"]) // int(r.config["dim"])  # group size = input dimension
        v = r.summary.get(f"acc_g{g}")
        return None if v is None else 100 * (float(v) - r.summary["acc_g1"])

    out["proxy acc[g=width/dim] − acc[g=1] (points)"] = px.per_seed(proxy_matched,
                                                                    unit="points")
    out["log2(best group size / 32)"] = px.per_seed(
        lambda r: math.log2(r.config["width"] / proxy_best(r)[0] / r.config["dim"])
        if groups else None)

    for ds in ("mnist1d", "digits"):
        tab = fit_table(results, ds)
        gs = sorted(int(k[1:]) for k in tab if k.startswith("g"))
        lin = tab.get("linear", {})
        ln = tab.get("g1", {})
        # LN-Net vs linear: both the best over the same (lr, batch) grid
        out[f"{ds}: train_acc[LN-Net] − best train_acc[linear] (points)"] = _diff(
            tab.get("lnnet", {}), lin)
        out[f"{ds}: train_acc[width-2 LN-Net] − best train_acc[linear] (points)"] = _diff(
            tab.get("w2", {}), lin)
        # the mean over g ≥ 2 (seeds that have every g), not the best g: no selection bias
        many = [g for g in gs if g > 1]
        mean_g = {s: statistics.fmean(tab[f"g{g}"][s] for g in many)
                  for s in (set.intersection(*[set(tab[f"g{g}"]) for g in many]) if many
                            else set())}
        out[f"{ds}: mean over g≥2 of train_acc[LN-G] − train_acc[LN] (points)"] = _diff(
            mean_g, ln)
        rhos: dict[int, float] = {}
        for s in sorted(set.intersection(*[set(tab[f"g{g}"]) for g in gs])) if gs else []:
            rho = spearman([float(g) for g in gs], [tab[f"g{g}"][s] for g in gs])
            if math.isfinite(rho):
                rhos[s] = rho
        out[f"{ds}: Spearman ρ(g, train_acc)"] = Measurement(rhos)

    for fam, (_, g) in PRACTICAL.items():
        pr = results.select(kind="practical", family=fam)
        a = _by_seed(pr, _acc_pct("final_test_acc"), groups=g)
        b = _by_seed(pr, _acc_pct("final_test_acc"), groups=1)
        out[f"{fam}: test_acc[LN-G] − test_acc[LN] (points)"] = _diff(a, b)
    return out


def table(results: Results) -> tuple[list[str], list[list[str]]]:
    """One row per setting: what was measured and its mean ± std over seeds."""
    header = ["part", "setting", "runs", "value"]
    rows: list[list[str]] = []
    for ds in ("mnist1d", "digits"):
        tab = fit_table(results, ds)
        n = results.select(kind="fit", dataset=ds).runs
        size = n[0].config["n"] if n else "?"
        names = {"linear": "linear (best lr)", "lnnet": "LN-Net (LN, best lr)",
                 "w2": "LN-Net width 2 (LN, best lr)", "g1": "LN-Net (LN, lr 1e-2)"}
        for k, vals in tab.items():
            name = names.get(k, f"LN-Net (LN-G, g={k[1:]}, lr 1e-2)")
            rows.append(["fit: train acc (%)", f"{ds}[{size}] {name}", str(len(vals)),
                         fmt_mean_std(list(vals.values()))])
    px = results.select(kind="proxy", status="finished")
    if px.runs:
        keys = ["acc_linear", *[f"acc_g{g}" for g in px.runs[0].config["groups"]]]
        for k in keys:
            vals = [100 * float(r.summary[k]) for r in px.runs if k in r.summary]
            rows.append(["proxy: train acc (%)", "linear" if k == "acc_linear" else
                         f"LN-G g={k[5:]}", str(len(vals)), fmt_mean_std(vals)])
    for fam, (_, g) in PRACTICAL.items():
        for groups in (1, g):
            sel = results.select(kind="practical", family=fam, groups=groups)
            vals = list(sel.per_seed(_acc_pct("final_test_acc")).values.values())
            norm = "LN" if groups == 1 else f"LN-G g={groups}"
            rows.append(["practical: test acc (%)", f"{fam} {norm}", str(len(vals)),
                         fmt_mean_std(vals)])
    th = results.select(kind="theory", status="finished")
    if th.runs:
        keys = [k for k in th.runs[0].summary if k.startswith(("construct_", "vc_", "h_ratio",
                                                               "jac_ratio", "xor", "random_ln",
                                                               "constructed", "linear_v",
                                                               "invariance", "nonadd"))]
        for k in keys:
            vals = [float(r.summary[k]) for r in th.runs if k in r.summary]
            rows.append(["theory", k, str(len(vals)), fmt_mean_std(vals)])
    return header, rows


# --------------------------------------------------------------------------------- figures
def figures(results: Results, out_dir: Path) -> list[Path]:
    import numpy as np

    from lnlab.analysis.lnnet import plot_construction, random_problem
    from lnlab.plotting import COLORS, figure, save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    datasets = [d for d in ("mnist1d", "digits") if results.select(kind="fit", dataset=d).runs]
    if datasets:
        with figure(ncols=len(datasets), width=3.3, height=2.7) as (fig, axes):
            axes = axes if len(datasets) > 1 else [axes]
            for ax, ds in zip(axes, datasets, strict=True):
                tab = fit_table(results, ds)
                gs = sorted(int(k[1:]) for k in tab if k.startswith("g"))
                means = [statistics.fmean(tab[f"g{g}"].values()) if tab[f"g{g}"] else math.nan
                         for g in gs]
                for g in gs:
                    ax.scatter([g] * len(tab[f"g{g}"]), list(tab[f"g{g}"].values()), s=10,
                               color=COLORS[0], alpha=0.5)
                ax.plot(gs, means, "o-", color=COLORS[0], label="LN-Net (g=1: LN, g>1: LN-G)")
                if tab["linear"]:
                    ax.axhline(statistics.fmean(tab["linear"].values()), color=COLORS[3],
                               ls="--", label="linear classifier (best lr)")
                ax.set_xscale("log", base=2)
                ax.set_xticks(gs, [str(g) for g in gs])
                ax.set_xlabel("group number g")
                ax.set_ylabel("training accuracy, random labels (%)")
                ax.set_title(f"{ds} subset")
                ax.legend(loc="best")
            paths.append(save(fig, out_dir / "capacity_vs_groups.png"))
    px = results.select(kind="proxy", status="finished")
    if px.runs:
        groups = px.runs[0].config["groups"]
        with figure(width=3.4, height=2.6) as (fig, ax):
            ys = [[100 * r.summary[f"acc_g{g}"] for r in px.runs] for g in groups]
            ax.errorbar(groups, [statistics.fmean(v) for v in ys],
                        yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in ys],
                        fmt="o-", color=COLORS[0], label="random features + LN-G")
            ax.axhline(statistics.fmean(100 * r.summary["acc_linear"] for r in px.runs),
                       color=COLORS[3], ls="--", label="linear readout")
            ax.set_xscale("log", base=2)
            ax.set_xticks(groups, [str(g) for g in groups])
            ax.set_xlabel("group number g (width 256)")
            ax.set_ylabel("training accuracy (%)")
            ax.set_title("random-feature proxy (Gaussian, d=32)")
            ax.legend(loc="best")
            paths.append(save(fig, out_dir / "proxy_vs_groups.png"))
    th = results.select(kind="theory", status="finished")
    if th.runs:
        gs = th.runs[0].config["curve_groups"]
        dim = th.runs[0].config["curve_dim"]
        with figure(width=3.4, height=2.6) as (fig, ax):
            h = [statistics.fmean(r.summary[f"h_ratio_g{g}"] for r in th.runs) for g in gs]
            j = [statistics.fmean(r.summary[f"jac_ratio_g{g}"] for r in th.runs) for g in gs]
            ev = [th.runs[0].summary[f"h_equal_var_g{g}"] / th.runs[0].summary["h_equal_var_g1"]
                  for g in gs]
            ax.plot(gs, h, "o-", color=COLORS[0], label="H (median) / H(LN)")
            ax.plot(gs, ev, "s--", color=COLORS[1], label="equal-variance formula")
            ax.plot(gs, j, "^-", color=COLORS[2], label="‖J‖² (median) / ‖J‖²(LN)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(gs, [str(g) for g in gs])
            ax.set_xlabel(f"group number g (d = {dim})")
            ax.set_ylabel("ratio to plain LN")
            ax.set_title("Hessian nonlinearity of LN-G")
            ax.legend(loc="best")
            paths.append(save(fig, out_dir / "nonlinearity_vs_groups.png"))
        X, y = random_problem(10, 2, 2, 0)
        paths.append(Path(plot_construction(
            np.asarray(X), np.asarray(y), out_dir / "construction_2d.png",
            title="width-3 LN-Net construction, 10 points, 2 classes")))
    return paths
