"""What the baselines claims test: final test accuracy per setting and its paired gaps."""

from __future__ import annotations

from lnlab.experiments.baselines.sweep import ARMS, DATASETS
from lnlab.experiments.claims import Measurement
from lnlab.experiments.framework import Results, Run

__all__ = ["analyze", "final_test_acc_pct"]


def final_test_acc_pct(run: Run) -> float:
    return 100.0 * float(run.summary["final_test_acc"])


def analyze(results: Results) -> dict[str, Measurement]:
    """Final test accuracy (%) per (dataset, arm), and the paired differences claims test."""
    acc = final_test_acc_pct
    out: dict[str, Measurement] = {}
    for dataset in DATASETS:
        for arm in ARMS:
            out[f"test_acc[{dataset}/{arm}]"] = results.per_seed(acc, dataset=dataset, arm=arm,
                                                                 unit="%")
    mn = {"dataset": "mnist1d"}
    out["test_acc[mnist1d/mlp] − test_acc[mnist1d/logistic]"] = results.paired(
        acc, {**mn, "arm": "mlp"}, {**mn, "arm": "logistic"}, unit="points")
    out["test_acc[mnist1d/mlp+ln] − test_acc[mnist1d/mlp]"] = results.paired(
        acc, {**mn, "arm": "mlp+ln"}, {**mn, "arm": "mlp"}, unit="points")
    return out
