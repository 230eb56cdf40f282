"""What an experiment module is, and the read-side view of its results.

An experiment is a package that reads like the method section of a paper: ``__init__``
(name, description, the claims), ``sweep.py`` (the settings, one declarative table row per
scale), ``protocol.py`` (``run``: one run), ``measures.py`` (``analyze`` and the named
measurement functions the claims test) and ``figures.py``. ``__init__`` re-exports what the
framework reads, so to the framework it is one module::

    NAME = "baselines"
    DESCRIPTION = "MNIST-1D logistic regression and MLPs, the sanity check of the pipeline."
    CLAIMS = [Claim(...), ...]                    # written before anything runs

    def sweep(scale, seeds) -> list[dict]: ...    # the run configs ("quick" | "full")
    def run(config, run_dir) -> dict: ...         # one run; top level, so workers can import it
    def analyze(results) -> dict[str, Measurement]: ...   # per-seed numbers the claims test
    def figures(results, out_dir) -> list[Path]: ...      # PNGs for the report

Optional: ``EXTRA_SCALES`` (scales beyond quick and full: ``tiny``, a seconds-long smoke
sweep), ``SEEDS = {"quick": 5, "full": 5}`` (default seed counts; quick ≥ 5), ``OPTIONS = {"name":
"help"}`` (extra ``--option name=value`` passed to ``sweep`` as keywords), ``GROUP_BY``
(config fields that name a row of the results table), ``TABLE_METRICS`` (summary keys shown,
or ``(header, key, factor)`` triples), ``HEADLINE_METRIC`` (shown on the progress bar), and a
``table(results) -> (header, rows)`` function that replaces the default results table.

A run config is a JSON dict. Experiments that train use ``{"arm": ..., "train": TrainConfig
dict}`` and ``run = train_run``; the seed lives at ``train.seed`` (or top-level ``seed``).
The runner does not read configs: ``run_resources(config) -> Resources`` (threads, GPUs) and
``with_device(configs, device)`` say what a run needs and where it computes; the defaults,
``train_resources`` and ``train_with_device``, read and write the ``train`` section, and a
module may define its own.
"""

from __future__ import annotations

import copy
import math
import operator
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from lnlab.errors import LnlabError
from lnlab.experiments.claims import Claim, Measurement
from lnlab.runner.backends import Resources
from lnlab.runner.config import flatten, get_path
from lnlab.runner.store import RunRow, Store

__all__ = [
    "SCALES",
    "Experiment",
    "Results",
    "difference",
    "paired_values",
    "spearman",
    "train_resources",
    "train_run",
    "train_with_device",
]

SCALES = ("quick", "full")
# Empirical claims decide from a confidence interval over seeds: 5 at quick is the fewest at
# which a paired t interval is not dominated by its t quantile (t_{0.975,4} = 2.78 vs 4.30 at
# 3 seeds); an experiment may ask for more.
DEFAULT_SEEDS = {"quick": 5, "full": 5}
# An experiment may add scales (``EXTRA_SCALES``): ``tiny``, a seconds-long smoke sweep for
# tests, declared in its sweep table like the others; its default is enough seeds to pair.
SMOKE_SEEDS = 2
MIN_QUICK_SEEDS = 5


@dataclass(frozen=True)
class Experiment:
    """A validated experiment module (see the module docstring for the contract)."""

    name: str
    description: str
    module: str
    claims: tuple[Claim, ...]
    seeds: Mapping[str, int]
    options: Mapping[str, str]
    group_by: tuple[str, ...] | None
    table_metrics: tuple[str, ...] | None
    headline_metric: str | None
    _mod: ModuleType
    regime_note: str = ""  # which regime is closest to the paper (the report's regime table)

    @classmethod
    def from_module(cls, mod: ModuleType) -> Experiment:
        missing = [a for a in ("NAME", "DESCRIPTION", "CLAIMS", "sweep", "run", "analyze",
                               "figures") if not hasattr(mod, a)]
        if missing:
            raise TypeError(f"experiment module {mod.__name__} lacks {', '.join(missing)}")
        # every claim names the function that measures it (default: the module's analyze)
        claims = tuple(c if c.measured_by else replace(c, measured_by=f"{mod.__name__}.analyze")
                       for c in mod.CLAIMS)
        ids = [c.id for c in claims]
        if len(set(ids)) != len(ids):
            raise TypeError(f"{mod.__name__}: duplicate claim ids")
        seeds = {**DEFAULT_SEEDS, **getattr(mod, "SEEDS", {})}
        group_by = getattr(mod, "GROUP_BY", None)
        metrics = getattr(mod, "TABLE_METRICS", None)
        return cls(
            name=mod.NAME, description=mod.DESCRIPTION, module=mod.__name__, claims=claims,
            seeds=seeds,
            options=dict(getattr(mod, "OPTIONS", {})),
            group_by=tuple(group_by) if group_by else None,
            table_metrics=tuple(metrics) if metrics else None,
            headline_metric=getattr(mod, "HEADLINE_METRIC", None), _mod=mod,
            regime_note=getattr(mod, "REGIME_NOTE", ""),
        )

    def configs(self, scale: str, seeds: int | None = None,
                options: Mapping[str, str] | None = None, *,
                first_seed: int = 0) -> tuple[list[dict], list[int]]:
        """Validated run configs for a scale and seed count (bad input → LnlabError).

        The seeds are ``first_seed, first_seed + 1, …`` (a replication uses a second,
        disjoint range)."""
        scales = (*SCALES, *getattr(self._mod, "EXTRA_SCALES", ()))  # tiny, memorization's paper
        if scale not in scales:
            raise LnlabError(f"unknown scale {scale!r}: use {' or '.join(scales)}")
        n = self.seeds.get(scale, SMOKE_SEEDS) if seeds is None else seeds
        if n < 1:
            raise LnlabError(f"--seeds must be at least 1 (got {n})")
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise LnlabError(f"experiment {self.name!r} has no option {unknown[0]!r} "
                             f"(valid: {valid})")
        seed_list = list(range(first_seed, first_seed + n))
        configs = list(self._mod.sweep(scale, seed_list, **options))
        if not configs or not all(isinstance(c, Mapping) for c in configs):
            raise TypeError(f"{self.module}.sweep() must return a non-empty list of dicts")
        return [complete_config(c) for c in configs], seed_list

    def resources(self, config: Mapping[str, Any]) -> Resources:
        """What one run needs (the threads its worker pins, GPUs), from its config: the
        module's ``run_resources`` if it has one, else ``train_resources``."""
        res = getattr(self._mod, "run_resources", train_resources)(config)
        if not isinstance(res, Resources):
            raise TypeError(f"{self.module}.run_resources() must return a Resources "
                            f"(got {type(res).__name__})")
        return res

    def with_device(self, configs: Sequence[Mapping[str, Any]],
                    device: str) -> list[dict[str, Any]]:
        """The configs computing on ``device`` (``cpu`` | ``cuda``, already resolved)."""
        return list(getattr(self._mod, "with_device", train_with_device)(configs, device))

    def analyze(self, results: Results) -> dict[str, Measurement]:
        return dict(self._mod.analyze(results))

    def figures(self, results: Results, out_dir: Path) -> list[Path]:
        return [Path(p) for p in self._mod.figures(results, out_dir)]

    def extra_tables(self, results: Results) -> list[tuple[str, list[str], list[list[str]]]]:
        """More (title, header, rows) tables after the results table (module ``extra_tables``),
        e.g. per-seed values with intervals for one setting."""
        f = getattr(self._mod, "extra_tables", None)
        return [(t, list(h), [list(r) for r in rows]) for t, h, rows in f(results)] if f else []

    def table(self, results: Results) -> tuple[list[str], list[list[str]]]:
        """Results table (header, rows): one row per setting, mean ± std over seeds."""
        custom = getattr(self._mod, "table", None)
        if custom is not None:
            header, rows = custom(results)
            return list(header), [list(r) for r in rows]
        return results.summary_table(self.group_by, self.table_metrics)


def complete_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A ``train`` section is a TrainConfig: fill in every default and validate it.

    The run key hashes the *full* config, so a changed trainer default makes new runs
    instead of silently reusing old ones; a bad value fails before anything is written.
    """
    out = dict(config)
    if isinstance(out.get("train"), Mapping):
        from lnlab.train import TrainConfig

        out["train"] = TrainConfig.from_dict(dict(out["train"])).validate().to_dict()
    return out


def train_resources(config: Mapping[str, Any]) -> Resources:
    """A run's needs from its ``train`` section: ``threads`` (default 1) and a GPU when
    ``device`` is ``cuda``; a config without one (a measurement run) gets one thread."""
    train = config.get("train")
    if not isinstance(train, Mapping):
        return Resources()
    threads = train.get("threads")
    device = str(train.get("device") or "cpu")
    return Resources(threads=threads if isinstance(threads, int) and threads > 0 else 1,
                     gpus=1.0 if device.startswith("cuda") else 0.0)


def train_with_device(configs: Sequence[Mapping[str, Any]], device: str) -> list[dict[str, Any]]:
    """Configs whose ``train`` section runs on ``device`` (``cpu`` or ``cuda``).

    ``cpu`` returns the configs unchanged, so their run keys (and every existing store) stay
    valid. ``cuda`` sets ``train.device`` and therefore changes the keys: a GPU run computes
    different floating-point results, so it is a different run, never mixed with CPU rows.
    Configs without a ``train`` section (runs that do not train) are left alone.
    """
    if device not in ("cpu", "cuda"):
        raise LnlabError(f"with_device: device must be 'cpu' or 'cuda' (resolve {device!r} "
                         "first)")
    out = []
    for cfg in configs:
        cfg = copy.deepcopy(dict(cfg))
        if device != "cpu" and isinstance(cfg.get("train"), Mapping):
            cfg["train"] = {**cfg["train"], "device": device}
        out.append(cfg)
    return out


def seed_of(config: Mapping[str, Any]) -> int:
    """A run's seed: top-level ``seed`` or ``train.seed``."""
    for path in ("seed", "train.seed"):
        v = get_path(config, path, None)
        if isinstance(v, int):
            return v
    raise KeyError("run config has no 'seed' or 'train.seed'")


def _match(config: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    missing = object()
    return all(get_path(config, k.replace("__", "."), missing) == v for k, v in where.items())


@dataclass(frozen=True)
class Run:
    """One run as an analysis sees it: config, status, summary and its epoch curves."""

    key: str
    config: dict[str, Any]
    status: str
    summary: dict[str, Any]
    epochs: list[dict[str, float | None]]
    error: str | None = None

    @property
    def seed(self) -> int:
        return seed_of(self.config)

    def get(self, path: str, default: Any = None) -> Any:
        return get_path(self.config, path, default)

    def curve(self, metric: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of one per-epoch metric; missing values are NaN."""
        xs, ys = [], []
        for e in self.epochs:
            if metric in e:
                xs.append(int(e["epoch"] or 0))
                v = e[metric]
                ys.append(math.nan if v is None else float(v))
        return xs, ys


class Results:
    """The runs of one sweep, with the selections analyses need.

    Select by config fields with dotted paths or ``__`` (``select(arm="mlp")``,
    ``select(train__weight_decay=0.0)``). ``per_seed`` and ``paired`` return ``Measurement``s
    that count only finished runs and remember how many were excluded.
    """

    def __init__(self, runs: Iterable[Run], experiment: str = "", scale: str = "",
                 seeds: Sequence[int] = ()) -> None:
        self.runs = list(runs)
        self.experiment, self.scale, self.seeds = experiment, scale, list(seeds)

    @classmethod
    def from_store(cls, store: Store, keys: Sequence[str], *, experiment: str = "",
                   scale: str = "", seeds: Sequence[int] = ()) -> Results:
        runs = [_to_run(r, store) for r in store.runs(keys=keys)]
        return cls(runs, experiment, scale, seeds)

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.runs)

    def select(self, where: Mapping[str, Any] | None = None, /, *,
               status: str | Sequence[str] | None = None, **kw: Any) -> Results:
        cond = {**(where or {}), **kw}
        st = (status,) if isinstance(status, str) else status
        runs = [r for r in self.runs if _match(r.config, cond) and (st is None or r.status in st)]
        return Results(runs, self.experiment, self.scale, self.seeds)

    def values(self, path: str) -> list[Any]:
        """Distinct values of a config field, in first-seen order."""
        return list(dict.fromkeys(
            _hashable(get_path(r.config, path.replace("__", "."), None)) for r in self.runs))

    def per_seed(self, metric: str | Callable[[Run], float], where: Mapping[str, Any] | None
                 = None, /, *, unit: str = "", **kw: Any) -> Measurement:
        """One value per seed from finished runs: a summary key, or a function of the run."""
        sel = self.select(where, **kw)
        vals: dict[int, float] = {}
        excluded = 0
        for r in sel.runs:
            v = _value(r, metric) if r.status == "finished" else None
            if v is None or not math.isfinite(v):
                excluded += 1
                continue
            if r.seed in vals:
                raise ValueError(f"two runs with seed {r.seed} match {dict(where or {}, **kw)}")
            vals[r.seed] = v
        return Measurement(vals, unit=unit, excluded=excluded)

    def by_seed(self, metric: str | Callable[[Run], float], where: Mapping[str, Any] | None
                = None, /, **kw: Any) -> dict[int, float]:
        """``per_seed``'s values alone: seed → value, finished runs only."""
        return dict(self.per_seed(metric, where, **kw).values)

    def paired(self, metric: str | Callable[[Run], float], a: Mapping[str, Any],
               b: Mapping[str, Any], *, unit: str = "") -> Measurement:
        """Per-seed differences A − B over the seeds where both finished."""
        ma, mb = self.per_seed(metric, a), self.per_seed(metric, b)
        return paired_values(ma.values, mb.values, unit=unit,
                             excluded=ma.excluded + mb.excluded)

    def count(self, status: str, where: Mapping[str, Any] | None = None, /, **kw: Any) -> int:
        return len(self.select(where, status=status, **kw).runs)

    def summary_table(self, group_by: Sequence[str] | None = None,
                      metrics: Sequence[str | tuple[str, str, float]] | None = None,
                      ) -> tuple[list[str], list[list[str]]]:
        """Group runs by setting (config fields that vary, seed excluded) → mean ± std.

        A metric is a summary key, or ``(header, key, factor)`` to rename and rescale it
        (e.g. ``("test acc (%)", "final_test_acc", 100)``).
        """
        if not self.runs:
            return ["setting"], []
        flat = [flatten(r.config) for r in self.runs]
        if group_by is None:
            keys = sorted({k for f in flat for k in f})
            group_by = [k for k in keys if k not in ("seed", "train.seed")
                        and len({repr(f.get(k)) for f in flat}) > 1]
        if metrics is None:
            nums: dict[str, None] = {}
            for r in self.runs:
                for k, v in r.summary.items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        nums.setdefault(k)
            metrics = list(nums)[:5]
        cols = [(m, m, 1.0) if isinstance(m, str) else (m[0], m[1], float(m[2]))
                for m in metrics]
        groups: dict[tuple, list[Run]] = {}
        for r, f in zip(self.runs, flat, strict=True):
            groups.setdefault(tuple(_hashable(f.get(k)) for k in group_by), []).append(r)
        header = [*(group_by or ["setting"]), "runs", *(c[0] for c in cols)]
        rows = []
        for label, runs in groups.items():
            done = [r for r in runs if r.status == "finished"]
            status = f"{len(done)}/{len(runs)}"
            bad = {s: sum(r.status == s for r in runs) for s in ("diverged", "failed")}
            status += "".join(f", {n} {s}" for s, n in bad.items() if n)
            cells = []
            for _, m, factor in cols:
                xs = [factor * float(r.summary[m]) for r in done
                      if isinstance(r.summary.get(m), int | float)
                      and math.isfinite(float(r.summary[m]))]
                cells.append(fmt_mean_std(xs))
            names = [_plain(x) for x in label] if group_by else ["all"]
            rows.append([*names, status, *cells])
        return header, rows


def paired_values(a: Mapping[int, float], b: Mapping[int, float],
                  op: Callable[[float, float], float] = operator.sub, *, unit: str = "",
                  excluded: int = 0, note: str = "") -> Measurement:
    """``op(a[s], b[s])`` for every seed both sides measured: the paired comparison.

    A seed only one side has is lost to the comparison and counted in ``excluded``, on top of
    the ``excluded`` runs the caller already lost (``Results.paired`` passes both sides').
    """
    common = sorted(set(a) & set(b))
    return Measurement({s: op(a[s], b[s]) for s in common}, unit=unit,
                       excluded=len(set(a) ^ set(b)) + excluded, note=note)


def difference(a: Measurement, b: Measurement, *, unit: str = "", note: str = "") -> Measurement:
    """``a − b`` for every seed both measurements have, when each already counted the runs it
    lost (``excluded`` is their sum: a seed only one side has is one of those runs) and its
    reasons not to decide (``blocked``, joined)."""
    common = sorted(set(a.values) & set(b.values))
    return Measurement({s: a.values[s] - b.values[s] for s in common}, unit=unit,
                       excluded=a.excluded + b.excluded, note=note,
                       blocked="; ".join(x for x in (a.blocked, b.blocked) if x))


def _plain(v: Any) -> str:
    return "" if v is None else str(v)


def fmt_mean_std(xs: Sequence[float], digits: int = 4) -> str:
    """``68.12 ± 1.2`` (sample std over seeds, 2 significant digits); ``–`` for no values."""
    if not xs:
        return "–"
    mean = statistics.fmean(xs)
    if len(xs) == 1:
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {statistics.stdev(xs):.2g}"


def _hashable(v: Any) -> Any:
    return repr(v) if isinstance(v, dict | list) else v


def _value(run: Run, metric: str | Callable[[Run], float]) -> float | None:
    v = metric(run) if callable(metric) else run.summary.get(metric)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _to_run(row: RunRow, store: Store) -> Run:
    return Run(key=row.key, config=row.config, status=row.status, summary=row.summary,
               epochs=store.epochs(row.key), error=row.error)


def train_run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``run`` for experiments that train one model: ``config["train"]`` is a TrainConfig dict.

    The trainer checkpoints into ``run_dir`` and resumes from it, so a killed sweep picks up
    mid-run. A diverged run is returned as ``status="diverged"`` — a result, not an error.
    """
    from lnlab.train import TrainConfig, train

    cfg = TrainConfig.from_dict(config["train"])
    return train_output(train(cfg, run_dir), run_dir)


def train_output(result: Any, run_dir: Path) -> dict[str, Any]:
    """A ``TrainResult`` as a run's output; the files in ``run_dir`` (final weights, the
    labels trained on, the trainer's result) are listed as the run's artifacts."""
    files = sorted(p for p in Path(run_dir).iterdir() if p.is_file()
                   and not p.name.startswith(".") and p.suffix != ".tmp")
    return {"status": result.status, "summary": dict(result.summary),
            "epochs": [dict(e) for e in result.epochs],
            "artifacts": {p.stem: p.name for p in files}}



def spearman(xs: Sequence[float], ys: Sequence[float], *, min_n: int = 2) -> float:
    """Spearman rank correlation (average ranks for ties) for the trend claims; NaN with
    fewer than ``min_n`` points or when either side is constant."""
    if len(xs) < min_n:
        return math.nan

    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return sxy / (sx * sy) if sx > 0 and sy > 0 else math.nan
