"""Export a results store to the tools researchers already use to look at runs.

The store (``DIR/results.sqlite``, see :mod:`lnlab.runner.store`) stays the source of truth;
an export is a one-way copy made for browsing. Four formats:

* ``csv`` — ``runs.csv`` (one row per run: status, timing, flattened ``config.*`` and
  ``summary.*`` columns) and ``metrics.csv`` (long format: key, experiment, epoch, metric, value).
  Standard library only.
* ``parquet`` — the same two tables as ``runs.parquet`` / ``metrics.parquet`` (needs pyarrow).
* ``tensorboard`` — one event-file directory per run, ``DEST/<experiment>/<key>/``: every
  per-epoch metric as a scalar (step = epoch), the config and summary as JSON text, and the
  config as hyper-parameters with the numeric summary as their metrics. Needs ``tensorboard``
  (through ``torch.utils.tensorboard``) or ``tensorboardX``.
* ``mlflow`` — an MLflow tracking database ``DEST/mlflow.db`` (SQLite; MLflow's recommended
  local store): one MLflow experiment per lnlab experiment, one MLflow run per lnlab run named
  by its key, flattened config as params, per-epoch metrics with step = epoch, the numeric
  summary as ``summary.*`` metrics, tags ``lnlab.key``/``lnlab.status``. Needs ``mlflow-skinny``
  with SQLAlchemy and Alembic (the ``export-mlflow`` extra). Browse with
  ``mlflow ui --backend-store-uri sqlite:///DEST/mlflow.db``.

Event files and MLflow runs cannot be replaced in place, so those two formats refuse a
destination that is not empty; CSV and Parquet files are rewritten atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lnlab.errors import LnlabError
from lnlab.report.files import write_atomic
from lnlab.runner.config import flatten
from lnlab.runner.store import RunRow, Store

__all__ = ["FORMATS", "ExportResult", "export_runs", "metric_rows", "run_rows"]

FORMATS = ("csv", "parquet", "tensorboard", "mlflow")
_RUN_FIELDS = ("key", "experiment", "status", "created", "started", "finished", "wall_time",
               "host", "attempts", "error")
_MLFLOW_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the format, where, and how many runs and metric values."""

    fmt: str
    dest: Path
    runs: int
    values: int
    paths: tuple[Path, ...]


def _scalar(v: Any) -> Any:
    """A table cell: numbers, strings, bools and None stay; lists become JSON text."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return json.dumps(v, sort_keys=True)


def _uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every column one type, so that Parquet (typed columns) accepts the table.

    A column mixing ints and floats becomes float; one mixing numbers or bools with text
    becomes text. None stays None (a missing value) in every column.
    """
    kinds: dict[str, set[type]] = {}
    for r in rows:
        for k, v in r.items():
            if v is not None:
                kinds.setdefault(k, set()).add(type(v))
    out = []
    for r in rows:
        row = {}
        for k in kinds.keys() | r.keys():
            v, ks = r.get(k), kinds.get(k, set())
            if v is not None and len(ks) > 1:
                v = float(v) if ks <= {int, float} else str(v)
            row[k] = v
        out.append(row)
    return out


def run_rows(runs: Iterable[RunRow]) -> list[dict[str, Any]]:
    """One flat dict per run: the run's fields, ``config.<path>`` and ``summary.<path>``."""
    rows = []
    for r in runs:
        row: dict[str, Any] = {f: getattr(r, f) for f in _RUN_FIELDS}
        row.update({f"config.{k}": _scalar(v) for k, v in flatten(r.config).items()})
        row.update({f"summary.{k}": _scalar(v) for k, v in flatten(r.summary).items()})
        rows.append(row)
    return _uniform(rows)


def metric_rows(store: Store, runs: Iterable[RunRow]) -> list[dict[str, Any]]:
    """Every per-epoch value in long format (a missing or non-finite value is None)."""
    out = []
    for r in runs:
        for ep in store.epochs(r.key):
            e = int(ep["epoch"])  # type: ignore[arg-type]
            out.extend({"key": r.key, "experiment": r.experiment, "epoch": e, "metric": n,
                        "value": v} for n, v in sorted(ep.items()) if n != "epoch")
    return out


def _columns(rows: list[dict[str, Any]], first: Iterable[str]) -> list[str]:
    first = [c for c in first if any(c in r for r in rows)]
    rest = sorted({k for r in rows for k in r} - set(first))
    return first + rest


def _write_csv(path: Path, rows: list[dict[str, Any]], first: Iterable[str]) -> Path:
    cols = _columns(rows, first) or list(first)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return write_atomic(path, buf.getvalue())


def _write_parquet(path: Path, rows: list[dict[str, Any]], first: Iterable[str]) -> Path:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise LnlabError("--to parquet needs pyarrow: pip install 'lnlab[parquet]'") from e
    cols = _columns(rows, first) or list(first)
    table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows] or [],
                                 schema=None if rows else pa.schema(
                                     [(c, pa.string()) for c in cols]))
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return write_atomic(path, buf.getvalue().to_pybytes())


def _require_empty(dest: Path, fmt: str) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise LnlabError(f"{dest} is not an empty directory; --to {fmt} adds runs rather "
                         "than replacing them, so export into a new directory")


def _summary_numbers(summary: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in flatten(summary).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def _hparam(v: Any) -> int | float | str | bool:
    v = _scalar(v)
    return "None" if v is None else v


def _summary_writer() -> Callable[..., Any]:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        try:
            from tensorboardX import SummaryWriter  # type: ignore[no-redef]
        except ImportError as e:
            raise LnlabError("--to tensorboard needs tensorboard (or tensorboardX): "
                             "pip install 'lnlab[export-tb]'") from e
    return SummaryWriter


def _export_tensorboard(store: Store, runs: list[RunRow], dest: Path) -> tuple[int, list[Path]]:
    writer_cls = _summary_writer()
    _require_empty(dest, "tensorboard")
    n, dirs = 0, []
    for r in runs:
        logdir = dest / r.experiment / r.key
        w = writer_cls(log_dir=str(logdir))
        try:
            w.add_text("config", f"```\n{json.dumps(r.config, indent=1, sort_keys=True)}\n```")
            w.add_text("summary", f"status: {r.status}\n\n```\n"
                       f"{json.dumps(r.summary, indent=1, sort_keys=True)}\n```")
            for ep in store.epochs(r.key):
                for name, v in sorted(ep.items()):
                    if name != "epoch" and v is not None:
                        w.add_scalar(name, v, int(ep["epoch"]))  # type: ignore[arg-type]
                        n += 1
            hp = {k: _hparam(v) for k, v in flatten(r.config).items()}
            if hp:  # run_name "." keeps the hyper-parameters in this run's directory
                w.add_hparams(hp, {f"summary/{k}": v
                                   for k, v in _summary_numbers(r.summary).items()},
                              run_name=".")
        finally:
            w.close()
        dirs.append(logdir)
    return n, dirs


def _ms(stamp: str | None) -> int | None:
    return int(datetime.fromisoformat(stamp).timestamp() * 1000) if stamp else None


def _export_mlflow(store: Store, runs: list[RunRow], dest: Path) -> tuple[int, list[Path]]:
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise LnlabError("--to mlflow needs mlflow: pip install 'lnlab[export-mlflow]'") from e
    _require_empty(dest, "mlflow")
    dest.mkdir(parents=True, exist_ok=True)
    db = dest.resolve() / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiments: dict[str, str] = {}
    n = 0
    for r in runs:
        if r.experiment not in experiments:
            experiments[r.experiment] = client.create_experiment(
                r.experiment, artifact_location=(dest.resolve() / "artifacts").as_uri())
        start = _ms(r.started or r.created)
        run = client.create_run(experiments[r.experiment], run_name=r.key, start_time=start,
                                tags={"lnlab.key": r.key, "lnlab.status": r.status,
                                      "lnlab.host": r.host or ""})
        rid = run.info.run_id
        params = [Param(k, str(_hparam(v))[:6000]) for k, v in flatten(r.config).items()]
        stamp = _ms(r.finished) or start or 0
        metrics = [Metric(name, float(v), stamp, int(ep["epoch"]))  # type: ignore[arg-type]
                   for ep in store.epochs(r.key)
                   for name, v in sorted(ep.items()) if name != "epoch" and v is not None]
        n += len(metrics)
        last = max((m.step for m in metrics), default=0)
        metrics += [Metric(f"summary.{k}", v, stamp, last)
                    for k, v in _summary_numbers(r.summary).items()]
        for i in range(0, max(len(params), 1), 100):  # at most 100 params per batch
            client.log_batch(rid, params=params[i:i + 100])
        for i in range(0, len(metrics), _MLFLOW_BATCH):
            client.log_batch(rid, metrics=metrics[i:i + _MLFLOW_BATCH])
        status = {"finished": "FINISHED", "diverged": "FINISHED", "failed": "FAILED"}
        client.set_terminated(rid, status.get(r.status, "KILLED"), end_time=_ms(r.finished))
    return n, [db]


def export_runs(src: str | Path, dest: str | Path, fmt: str, *,
                experiment: str | None = None,
                status: tuple[str, ...] | None = None) -> ExportResult:
    """Copy the runs of the results store in ``src`` (optionally one experiment's, or those
    with the given statuses) with their configs, summaries and per-epoch metrics to ``dest``
    in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise LnlabError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    dest = Path(dest)
    with Store.open(src) as store:
        runs = store.runs(experiment=experiment, status=status)
        if experiment and not runs and not store.runs(experiment=experiment):
            known = sorted({r.experiment for r in store.runs()})
            raise LnlabError(f"no runs of experiment {experiment!r} in {src} "
                             f"(it has: {', '.join(known) or 'no runs'})")
        if fmt in ("csv", "parquet"):
            write = _write_csv if fmt == "csv" else _write_parquet
            mrows = metric_rows(store, runs)
            paths = [write(dest / f"runs.{fmt}", run_rows(runs), _RUN_FIELDS),
                     write(dest / f"metrics.{fmt}", mrows,
                           ("key", "experiment", "epoch", "metric", "value"))]
            values = len(mrows)
        elif fmt == "tensorboard":
            values, paths = _export_tensorboard(store, runs, dest)
        else:
            values, paths = _export_mlflow(store, runs, dest)
    return ExportResult(fmt, dest, len(runs), values, tuple(paths))
