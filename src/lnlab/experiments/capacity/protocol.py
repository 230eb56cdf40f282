"""The capacity runs: theory and proxy runs measure directly, fit and practical runs train."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lnlab.errors import LnlabError
from lnlab.runner.base import pinned_threads

__all__ = ["proxy_measurements", "run", "subset_arrays", "subset_file", "theory_measurements"]


def run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Dispatch on ``config["kind"]``; theory and proxy runs measure, the others train."""
    kind = config.get("kind")
    if kind == "theory":
        with pinned_threads(1):
            return _done(theory_measurements(config))
    if kind == "proxy":
        with pinned_threads(1):
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
