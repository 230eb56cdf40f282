"""What the weight-decay claims test: audit values, accuracy changes, the control, Li–Arora."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lnlab.experiments.claims import Claim, Measurement
from lnlab.experiments.framework import Results, Run, difference
from lnlab.experiments.weight_decay.protocol import disagreement
from lnlab.experiments.weight_decay.sweep import ARCHS

__all__ = ["control_measures", "function_distance", "measure_all"]


def _lam_max(results: Results) -> float | None:
    wds = [w for w in results.values("wd") if isinstance(w, int | float) and w > 0]
    ctrl = [w for w in results.select(kind="control").values("wd") if isinstance(w, int | float)]
    pool = ctrl or wds
    return max(pool) if pool else None


def _acc(run: Run) -> float:
    return 100.0 * float(run.summary["final_test_acc"])


def _pick(results: Results, **where: Any) -> dict[int, Run]:
    """Finished runs matching ``where``, by seed."""
    return {r.seed: r for r in results.select(where, status="finished").runs}


def _static(results: Results, arch: str, key: str | Any) -> Measurement:
    def value(r: Run) -> float | None:
        if callable(key):
            return key(r.summary)
        v = r.summary.get(key)
        return float(v) if isinstance(v, int | float) else None

    return results.per_seed(lambda r: value(r),  # type: ignore[arg-type, return-value]
                            {"kind": "train", "arch": arch, "static": True})


def _max_of(prefix: str, suffix: str = "") -> Any:
    def f(s: Mapping[str, Any]) -> float | None:
        vs = [float(v) for k, v in s.items() if k.startswith(prefix) and k.endswith(suffix)
              and isinstance(v, int | float)]
        return max(vs) if vs else None
    return f


def _min_of(prefix: str, suffixes: Sequence[str]) -> Any:
    def f(s: Mapping[str, Any]) -> float | None:
        vs = [float(v) for k, v in s.items() if k.startswith(prefix)
              and any(k.endswith(x) for x in suffixes) and isinstance(v, int | float)]
        return min(vs) if vs else None
    return f


def _eps_growth(s: Mapping[str, Any]) -> float | None:
    a, b = s.get("static/eps_change/0.1"), s.get("static/eps_change/0.001")
    if not isinstance(a, int | float) or not isinstance(b, int | float) or a <= 0:
        return None
    return float(b) / float(a)


def function_distance(results: Results, dataset: str, arch: str, wd: float,
                      kind: str = "train", **where: Any) -> Measurement:
    """Per seed: share of test predictions (%) that differ from the same-seed λ = 0 run (for
    an exact control: its own float64, eps = 0 λ = 0 run)."""
    ref = _pick(results, kind="train", dataset=dataset, arch=arch, wd=0.0)
    runs = _pick(results, kind=kind, dataset=dataset, arch=arch, wd=wd, **where)
    vals = {}
    for s, r in runs.items():
        zero = r.summary.get("zero_test_pred") or (
            ref[s].summary.get("test_pred") if s in ref else None)
        if zero and "test_pred" in r.summary:
            vals[s] = 100.0 * disagreement(r.summary["test_pred"], zero)
    return Measurement(vals, unit="% of test set")


def control_measures(results: Results, dataset: str, arch: str, wd: float, *,
                     exact: bool = True) -> tuple[Measurement, Measurement, int]:
    """(residual, acc gap, twins that differ from the sweep's decayed run) per seed.

    residual = disagreement(control, decayed twin) / disagreement(λ = 0 run, decayed twin):
    0 when the control reproduces the decayed function, ≈ 1 when it is as far away as
    training without decay. All three are taken at the control's last finite epoch (a
    diverged control counts, compared where it still was sound); the λ = 0 run is the control
    run's own exact-arithmetic one when it has it, else the sweep's."""
    ctrl = {r.seed: r for r in results.select(kind="control", dataset=dataset, arch=arch,
                                               wd=wd, exact=exact,
                                               status=("finished", "diverged")).runs}
    ref = _pick(results, kind="train", dataset=dataset, arch=arch, wd=0.0)
    dec = _pick(results, kind="train", dataset=dataset, arch=arch, wd=wd)
    resid, gap, mismatch, diverged = {}, {}, 0, 0
    for s, c in ctrl.items():
        twin = c.summary.get("twin_test_pred")
        if twin is None or "test_pred" not in c.summary or (
                s not in ref and "zero_test_pred" not in c.summary):
            continue
        if s in dec and not c.summary.get("exact") and dec[s].summary.get("test_pred") != twin:
            mismatch += 1
        zero = c.summary.get("zero_test_pred") or ref[s].summary["test_pred"]
        far = disagreement(zero, twin)
        resid[s] = disagreement(c.summary["test_pred"], twin) / far if far > 0 else math.nan
        ta, ca = c.summary.get("twin_test_acc"), c.summary.get("cmp_test_acc")
        if isinstance(ta, int | float) and isinstance(ca, int | float):
            gap[s] = 100.0 * (float(ca) - float(ta))
        diverged += c.status == "diverged"
    notes = []
    if mismatch:
        notes.append(f"{mismatch} twin(s) differ from the sweep's decayed run")
    note = "; ".join(notes)
    # a diverged control is not evidence for anything: the claims built on it are inconclusive
    blocked = (f"{diverged} of {len(ctrl)} control run(s) diverged; a diverged control "
               "cannot show that the effect of λ disappears" if diverged else "")
    return (Measurement(resid, unit="ratio", note=note, blocked=blocked),
            Measurement(gap, unit="points", note=note, blocked=blocked), mismatch)


def measure_all(results: Results, claims: Sequence[Claim]) -> dict[str, Measurement]:
    """Static audit numbers, exact identities, B6 angles, B7 accuracy and control metrics."""
    out: dict[str, Measurement] = {}
    for arch in ARCHS:
        out[f"unconstrained_share[{arch}]"] = _static(results, arch,
                                                      "static/unconstrained_share")
        out[f"decay_step[{arch}]"] = _static(results, arch, "static/decay_step")
        out[f"decay_step_keep_b2[{arch}]"] = _static(results, arch, "static/decay_step_keep_b2")
        out[f"decay_step_blocks[{arch}]"] = _static(results, arch, "static/decay_step_blocks")
    out["change[ln/hidden]"] = _static(results, "ln", _max_of("static/change/blocks."))
    out["change[ln/readout]"] = _static(results, "ln", "static/change/readout")
    out["eps_growth[ln]"] = _static(results, "ln", _eps_growth)
    out["change[pre/min_fc2]"] = _static(results, "pre", _min_of("static/change/", [".fc2"]))
    out["change[pre/stream]"] = _static(results, "pre", "static/change/stream")
    out["change[pre+final/stream]"] = _static(results, "pre+final", "static/change/stream")
    out["change[post/min_block]"] = _static(results, "post",
                                            _min_of("static/change/blocks.", [".fc1", ".fc2"]))
    out["change[branch/fc2]"] = _static(results, "branch", _max_of("static/change/", ".fc2"))
    for key in ("li_arora_direction_gap", "li_arora_norm_ratio_error",
                "li_arora_gap_constant_lr", "li_arora_gap_readout_trained", "li_arora_gap_pre",
                "b4_norm_identity", "b4_cos"):
        out[key] = results.per_seed(key, kind="li-arora")

    lam = _lam_max(results)
    if lam is not None:
        for arch in ARCHS:
            out[f"angle_ratio[{arch}]"] = _angle_ratio(results, arch, lam)
            d0 = results.per_seed(_acc, kind="train", dataset="mnist1d", arch=arch, wd=0.0)
            d1 = results.per_seed(_acc, kind="train", dataset="mnist1d", arch=arch, wd=lam)
            out[f"acc_change[{arch}]"] = difference(d1, d0, unit="points")
            resid, gap, _ = control_measures(results, "mnist1d", arch, lam)
            out[f"control_residual[{arch}]"] = resid
            out[f"control_acc_gap[{arch}]"] = gap
            if results.select(kind="control", exact=False, arch=arch).runs:
                resid, gap, _ = control_measures(results, "mnist1d", arch, lam, exact=False)
                out[f"control_residual_real_eps[{arch}]"] = resid
                out[f"control_acc_gap_real_eps[{arch}]"] = gap
        ca, cb = out["acc_change[pre]"], out["acc_change[ln]"]
        out["acc_change[pre] − acc_change[ln]"] = difference(ca, cb, unit="points")
        a, b = out["control_residual[pre]"], out["control_residual[ln]"]
        out["control_residual[pre] − control_residual[ln]"] = difference(a, b, unit="ratio")
    else:  # no λ > 0 in this sweep: the λ claims have nothing to read (n = 0, not a defect)
        for c in claims:
            out.setdefault(c.metric, Measurement({}, note="no λ > 0 runs in this sweep"))
    return out


def _angle_ratio(results: Results, arch: str, lam: float) -> Measurement:
    """Last-epoch mean per-step angle of the hidden layers / sqrt(2ηλ), per seed; runs that
    have not had 3/(ηλ) steps are excluded (not at equilibrium yet)."""
    vals: dict[int, float] = {}
    excluded = 0
    for s, r in _pick(results, kind="train", dataset="mnist1d", arch=arch, wd=lam).items():
        eta = float(r.get("train.lr"))
        if not r.epochs or r.summary.get("steps", 0) < 3.0 / (eta * lam):
            excluded += 1
            continue
        last = r.epochs[-1]
        angles = [float(v) for k, v in last.items() if k.startswith("angle/blocks.")
                  and isinstance(v, int | float)]
        if angles:
            vals[s] = (sum(angles) / len(angles)) / math.sqrt(2 * eta * lam)
    return Measurement(vals, unit="ratio", excluded=excluded)
