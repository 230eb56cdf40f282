"""What the memorization claims test: accuracies, noisy-sample shares, gradient ratios."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from typing import Any

from lnlab.experiments.claims import Claim, Measurement
from lnlab.experiments.framework import Results, Run, paired_values, spearman
from lnlab.experiments.memorization.removal import FOLDED
from lnlab.experiments.memorization.sweep import GROUP_ARMS

__all__ = ["PRETRAINED", "SETTING_NAMES", "measure_all"]

PRETRAINED = "pretrained"
SETTING_NAMES = ("mnist1d", "tokens-hf", "mnist1d-pt", PRETRAINED)
"""Every setting a claim is written for (``sweep``'s tables and the ``paper`` scale)."""


def _arm_ok(r: Run, arm: str) -> bool:
    """An arm that diverged keeps the numbers of its last good epoch: a run cut short
    memorizes less, which would pass for the effect, so its seed is left out (and counted
    as excluded). A run's own status is the intact arm's."""
    return r.summary.get(f"{arm}/status", "finished") == "finished"


def _pct(arm: str, key: str) -> Any:
    def f(r: Run) -> float | None:
        v = r.summary.get(f"{arm}/{key}")
        return None if v is None or not _arm_ok(r, arm) else 100.0 * float(v)
    return f


def _share(arm: str, kind: str) -> Any:
    def f(r: Run) -> float | None:
        n = r.summary.get(f"{arm}/final_n_noisy")
        c = r.summary.get(f"{arm}/final_n_{kind}")
        return None if not n or c is None or not _arm_ok(r, arm) else 100.0 * c / n
    return f


def _gap(arm: str) -> Any:
    def f(r: Run) -> float | None:
        v = r.summary.get(f"{arm}/final_gap")
        return None if v is None or not _arm_ok(r, arm) else 100.0 * float(v)
    return f


def _natural(name: str) -> tuple:
    """Sort key reading digit runs as numbers (blocks.2 before blocks.10)."""

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _sites(r: Run, arm: str = "intact", kind: str = "learn_total") -> list[tuple[str, float]]:
    """(site, value) in forward order: the order ``find_norms`` recorded with the run
    (``gradfinal/order``), never the order of keys in the stored (key-sorted) summary. Runs
    stored before the order was recorded fall back to a natural sort of the names."""
    pre = f"{arm}/gradfinal/{kind}/"
    order = _site_info(r, arm, "order")
    vals = [(k[len(pre):], float(v)) for k, v in r.summary.items()
            if k.startswith(pre) and isinstance(v, int | float)]
    if order and all(n in order for n, _ in vals):
        return sorted(vals, key=lambda nv: order[nv[0]])
    listed = r.summary.get("ln_order")  # the pretrained setting records the order as a list
    if isinstance(listed, list) and all(n in listed for n, _ in vals):
        pos = {n: i for i, n in enumerate(listed)}
        return sorted(vals, key=lambda nv: pos[nv[0]])
    return sorted(vals, key=lambda nv: _natural(nv[0]))


def _site_info(r: Run, arm: str, what: str) -> dict[str, float]:
    pre = f"{arm}/gradfinal/{what}/"
    return {k[len(pre):]: float(v) for k, v in r.summary.items()
            if k.startswith(pre) and isinstance(v, int | float)}


def _block_sites(r: Run, kind: str) -> list[tuple[str, float]]:
    """Per-block LN sites in forward order (embedding/final norms left out: no depth)."""

    block = _site_info(r, "intact", "block")
    sites = _sites(r, "intact", kind)
    if block and all(n in block for n, _ in sites):
        return [(n, v) for n, v in sites if block[n] >= 0]
    return [(n, v) for n, v in sites if re.search(r"\.\d+\.", n)]


def _spearman(xs: list[float], ys: list[float]) -> float:
    """Rank correlation of a depth trend; NaN below 3 points (too few to call a trend)."""
    return spearman(xs, ys, min_n=3)


def _min_ratio(r: Run) -> float:
    learn = dict(_sites(r, "intact", "learn_total"))
    mem = dict(_sites(r, "intact", "mem_total"))
    ratios = [learn[k] / mem[k] for k in learn if k in mem and mem[k] > 0]
    return min(ratios) if ratios else math.nan


def _min_ratio_same_class(r: Run) -> float:
    """Theorem 1's premise: min over LNs of learn(clean same-class train samples) / mem."""
    learn = dict(_sites(r, "intact", "learn_sameclass_total"))
    mem = dict(_sites(r, "intact", "mem_total"))
    ratios = [learn[k] / mem[k] for k in learn if k in mem and mem[k] > 0]
    return min(ratios) if ratios else math.nan


def _depth_rho(r: Run) -> float:
    vals = [v for _, v in _block_sites(r, "learn_total")]
    return _spearman(list(range(len(vals))), vals)


def _first_share(r: Run) -> float:
    vals = [v for _, v in _block_sites(r, "learn_branch")]
    return vals[0] / sum(vals) if vals and sum(vals) > 0 else math.nan


def _ratio_of_ratios(pre: Run, post: Run) -> float:
    def ratios(r: Run) -> list[float]:
        mem = dict(_block_sites(r, "mem_total"))
        return [v / mem[n] for n, v in _block_sites(r, "learn_total") if mem.get(n)]
    a, b = ratios(pre), ratios(post)
    n = min(len(a), len(b))
    if not n:
        return math.nan
    # layer by layer at the same relative depth (both have 2 LNs per block)
    logs = [math.log(a[int(i * len(a) / n)] / b[int(i * len(b) / n)]) for i in range(n)]
    return math.exp(statistics.fmean(logs))


def _mem_part(r: Run) -> float | None:
    """The part of the change in training accuracy (on the noisy labels), hence of the overfit
    gap, that the change in memorized noisy samples makes: 100·(n_mem[all] − n_mem[intact])/N,
    N = n_noisy / noise the training-set size. Test accuracy does not enter it."""
    s, noise = r.summary, r.config.get("noise")
    n, ma, mi = (s.get(k) for k in ("intact/final_n_noisy", "all/final_n_mem",
                                     "intact/final_n_mem"))
    if not n or not noise or ma is None or mi is None or not _arm_ok(r, "all"):
        return None
    return 100.0 * (float(ma) - float(mi)) * float(noise) / float(n)


def _identity(results: Results) -> Measurement:
    """Per seed, the worst |mem + rec + rand − 1| (exact, from counts) over all models."""
    from fractions import Fraction

    worst: dict[int, float] = {}
    for r in results.select(status="finished").runs:
        for arm in ("intact", *r.config.get("arms", [])):
            n = r.summary.get(f"{arm}/final_n_noisy")
            if not n:
                continue
            s = sum(Fraction(int(r.summary[f"{arm}/final_n_{k}"]), int(n))
                    for k in ("mem", "rec", "rand"))
            worst[r.seed] = max(worst.get(r.seed, 0.0), float(abs(s - 1)))
    return Measurement(worst)


def _empty(out: dict[str, Measurement], claims: Sequence[Claim], setting: str,
           why: str, *, not_run: bool = False) -> None:
    """Empty measurements (n = 0, with the reason) for a setting's claims that this sweep
    could not measure, so they read "inconclusive: 0 values" — or, with ``not_run``, "not run
    at this scale" — rather than a missing metric (which is reserved for analysis defects)."""
    for c in claims:
        if c.id.endswith(f".{setting}") and c.metric not in out:
            out[c.metric] = (Measurement({}, not_run=why) if not_run
                             else Measurement({}, note=why))


def _scales_of(setting: str) -> str:
    """The scales whose sweep runs a setting (for "not run at this scale")."""
    from lnlab.experiments.memorization.sweep import OWN_PRETRAINED, SETTINGS

    scales = [sc for sc, t in SETTINGS.items() if sc != "tiny"
              and any(r["name"] == setting for r in t["rows"])]
    if setting in (PRETRAINED, OWN_PRETRAINED["name"]):
        scales.insert(0, "paper")
    return " or ".join(f"--scale {sc}" for sc in scales) or "no built-in scale"


def _gate(sel: Results, value: Any) -> Measurement:
    """Per seed, the lowest ``value`` (%) over the setting's models (a gate must hold for
    every model of every seed); a model that did not finish counts as 0, so a seed cannot
    pass by losing a run."""
    low: dict[int, float] = {}
    for r in sel.runs:
        v = value(r) if r.status == "finished" else None
        low[r.seed] = min(low.get(r.seed, 100.0), 0.0 if v is None else v)
    return Measurement(low, unit="%")


def measure_all(results: Results, claims: Sequence[Claim]) -> dict[str, Measurement]:
    """Per-seed numbers for the claims (accuracy and shares in %, differences in points); a
    claim of a setting that this sweep could not measure gets an empty measurement."""
    out: dict[str, Measurement] = {"max |mem + rec + rand − 1| over models": _identity(results)}
    for s in SETTING_NAMES:
        sel = results.select(setting=s)
        if not len(sel):
            _empty(out, claims, s, f"setting {s} runs at {_scales_of(s)}", not_run=True)
            continue
        if s == PRETRAINED:
            if not len(sel.select(family="post")):  # e.g. -o init= a GPT-2 checkpoint
                _empty(out, claims, s, "the checkpoint is not Post-LN: the real-checkpoint "
                       "claims are the paper's Post-LN ones (its runs are in the table)",
                       not_run=True)
                continue
            _pretrained_measures(sel, out)
            _empty(out, claims, s, "no gradient statistics recorded")
            continue
        out[f"{s}: min over models of intact final train acc (%)"] = _gate(
            sel, _pct("intact", "final_train_acc"))
        pre, post = {"family": "pre"}, {"family": "post"}
        acc = {(f, a): sel.by_seed(_pct(a, "final_test_acc"), family=f)
               for f in ("pre", "post") for a in ("intact", "all", *GROUP_ARMS)}
        dpre = paired_values(acc["pre", "all"], acc["pre", "intact"], unit="points")
        dpost = paired_values(acc["post", "all"], acc["post", "intact"], unit="points")
        out[f"{s}: Δtest_acc[post, all − intact]"] = dpost
        out[f"{s}: Δtest_acc[pre, all − intact]"] = dpre
        out[f"{s}: Δtest_acc[pre] − Δtest_acc[post]"] = paired_values(
            dict(dpre.values), dict(dpost.values), unit="points")
        mem_post = sel.per_seed(_share("all", "mem"), **post)
        rec_post = sel.per_seed(_share("all", "rec"), **post)
        out[f"{s}: mem [post, all] (%)"] = Measurement(dict(mem_post.values), unit="%")
        out[f"{s}: rec − mem [post, all] (points)"] = paired_values(
            dict(rec_post.values), dict(mem_post.values), unit="points")
        out[f"{s}: rec[pre, all] − rec[post, all] (points)"] = paired_values(
            sel.by_seed(_share("all", "rec"), **pre), dict(rec_post.values), unit="points")
        for f in ("pre", "post"):
            out[f"{s}: Δgap[{f}, all − intact] (points)"] = paired_values(
                sel.by_seed(_gap("all"), family=f), sel.by_seed(_gap("intact"), family=f),
                unit="points")
        out[f"{s}: memorization part of Δgap[post, all − intact] (points)"] = sel.per_seed(
            _mem_part, unit="points", **post)
        if s == "mnist1d" and any(set(GROUP_ARMS) & set(r.get("arms", [])) for r in sel.runs):
            _group_measures(sel, out)
        elif s == "mnist1d":  # quick leaves the layer-group arms out, for time
            for c in claims:
                if c.id.startswith(("sk.6", "sk.7")) and c.id.endswith(".mnist1d"):
                    out[c.metric] = Measurement({}, not_run="the layer-group arms run at "
                                                "--scale full")
        if any(FOLDED in r.get("arms", []) for r in sel.runs):
            _folded_measures(sel, s, out)
        if any(_sites(r) for r in sel.runs):
            _grad_measures(sel, s, out)
        _empty(out, claims, s, "no gradient statistics recorded")
        if s == "mnist1d":
            out[f"{s}: last / first tracked learn norm at the first LN (geo. mean pre, post)"] \
                = _growth(sel)
    return out


def _group_measures(sel: Results, out: dict[str, Measurement]) -> None:
    def per(f: str, metric: Any) -> dict[str, dict[int, float]]:
        return {a: sel.by_seed(metric(a), family=f) for a in ("intact", *GROUP_ARMS)}

    def early_vs(d: dict[str, dict[int, float]], name: str) -> None:
        """Paired contrast per seed: early − mean(middle, later) (no min/max over arms)."""
        seeds = sorted(set(d["early"]) & set(d["middle"]) & set(d["later"]))
        lost = len(set(d["early"]) | set(d["middle"]) | set(d["later"])) - len(seeds)
        out[name] = Measurement({s: d["early"][s] - (d["middle"][s] + d["later"][s]) / 2
                                 for s in seeds}, unit="points", excluded=lost)

    acc_pre, gap_pre = per("pre", lambda a: _pct(a, "final_test_acc")), per("pre", _gap)
    early_vs(acc_pre, "mnist1d: test_acc[pre, early] − mean(middle, later)")
    early_vs(gap_pre, "mnist1d: gap[pre, early] − mean(middle, later)")
    early_vs(per("post", lambda a: _share(a, "mem")),
             "mnist1d: mem[post, early] − mean(middle, later)")
    early_vs(per("post", lambda a: _share(a, "rec")),
             "mnist1d: rec[post, early] − mean(middle, later)")
    early_vs(per("post", _gap), "mnist1d: gap[post, early] − mean(middle, later)")
    acc_post = per("post", lambda a: _pct(a, "final_test_acc"))
    for a in GROUP_ARMS:
        out[f"mnist1d: Δtest_acc[post, {a} − intact] (points)"] = paired_values(
            acc_post[a], acc_post["intact"], unit="points")


def _growth(sel: Results) -> Measurement:
    """Per seed: geometric mean over Pre/Post of (last / first) tracked learning gradient norm
    (total) at the first block LN of the intact model."""
    per: dict[int, list[float]] = {}
    for r in sel.select(status="finished").runs:
        keys = sorted({k for e in r.epochs for k in e
                       if k.startswith("intact/grad/learn_total/") and ".0." in k})
        if not keys:
            continue
        xs = [v for _, v in zip(*r.curve(keys[0]), strict=True) if math.isfinite(v)]
        if len(xs) >= 2 and xs[0] > 0:
            per.setdefault(r.seed, []).append(math.log(xs[-1] / xs[0]))
    return Measurement({sd: math.exp(statistics.fmean(v)) for sd, v in per.items()})


def _grad_measures(sel: Results, s: str, out: dict[str, Measurement]) -> None:
    runs = {(r.get("family"), r.seed): r for r in sel.select(status="finished").runs}
    seeds = sorted({sd for (_, sd) in runs})
    both = [sd for sd in seeds if ("pre", sd) in runs and ("post", sd) in runs]
    out[f"{s}: min over LNs and models of learn/mem (total)"] = Measurement(
        {sd: min(_min_ratio(runs["pre", sd]), _min_ratio(runs["post", sd])) for sd in both})
    out[f"{s}: min over LNs and models of learn(same class)/mem (total)"] = Measurement(
        {sd: v for sd in both if math.isfinite(v := min(_min_ratio_same_class(runs["pre", sd]),
                                                        _min_ratio_same_class(runs["post", sd])))})
    out[f"{s}: geometric mean over block LNs of ratio[pre]/ratio[post]"] = Measurement(
        {sd: _ratio_of_ratios(runs["pre", sd], runs["post", sd]) for sd in both})
    for f in ("pre", "post"):
        out[f"{s}: Spearman ρ(depth, learn norm) [{f}]"] = Measurement(
            {sd: _depth_rho(runs[f, sd]) for sd in seeds if (f, sd) in runs})
    out[f"{s}: first-LN share of the branch learn norm, pre − post"] = Measurement(
        {sd: _first_share(runs["pre", sd]) - _first_share(runs["post", sd]) for sd in both})


def _folded_measures(sel: Results, s: str, out: dict[str, Measurement]) -> None:
    """The control that separates the two explanations (Pre-LN, own pretraining): the
    parameters removed without changing the function (``folded``) vs reset to (1, 0)."""
    acc = {a: sel.by_seed(_pct(a, "final_test_acc"), family="pre")
           for a in ("intact", "all", FOLDED)}
    dfold = paired_values(acc[FOLDED], acc["intact"], unit="points")
    dall = paired_values(acc["all"], acc["intact"], unit="points")
    out[f"{s}: Δtest_acc[pre, folded − intact]"] = dfold
    out[f"{s}: Δtest_acc[pre, folded] − Δtest_acc[pre, all]"] = paired_values(
        dict(dfold.values), dict(dall.values), unit="points")


def _ratio_to_intact(arm: str, kind: str) -> Any:
    def f(r: Run) -> float | None:
        a, i = _share(arm, kind)(r), _share("intact", kind)(r)
        return None if a is None or not i else a / i
    return f


def _pretrained_measures(sel: Results, out: dict[str, Measurement]) -> None:
    """The real pretrained Post-LN checkpoint (one family): its gate is the intact model's
    memorization (the fixed epoch budget may end before 100%), and memorization is read
    relative to the intact model's rather than to 100%."""
    s, post = PRETRAINED, {"family": "post"}
    out[f"{s}: intact memorization (%)"] = _gate(sel.select(**post), _share("intact", "mem"))
    acc = {a: sel.by_seed(_pct(a, "final_test_acc"), **post) for a in ("intact", "all")}
    out[f"{s}: Δtest_acc[post, all − intact]"] = paired_values(acc["all"], acc["intact"],
                                                               unit="points")
    mem = sel.per_seed(_share("all", "mem"), **post)
    rec = sel.per_seed(_share("all", "rec"), **post)
    out[f"{s}: rec − mem [post, all] (points)"] = paired_values(
        dict(rec.values), dict(mem.values), unit="points")
    out[f"{s}: mem[post, all] / mem[post, intact]"] = sel.per_seed(_ratio_to_intact("all", "mem"),
                                                                   **post)
    out[f"{s}: Δgap[post, all − intact] (points)"] = paired_values(
        sel.by_seed(_gap("all"), **post), sel.by_seed(_gap("intact"), **post), unit="points")
    out[f"{s}: memorization part of Δgap[post, all − intact] (points)"] = sel.per_seed(
        _mem_part, unit="points", **post)
    runs = sel.select(status="finished", **post).runs
    if any(_sites(r) for r in runs):
        out[f"{s}: min over LNs of learn/mem (total) [post]"] = Measurement(
            {r.seed: _min_ratio(r) for r in runs})
        out[f"{s}: min over LNs of learn(same class)/mem (total) [post]"] = Measurement(
            {r.seed: v for r in runs if math.isfinite(v := _min_ratio_same_class(r))})
        out[f"{s}: Spearman ρ(depth, learn norm) [post]"] = Measurement(
            {r.seed: _depth_rho(r) for r in runs})
