"""The sweep driver: register runs, skip what is done, feed a backend, record every outcome.

The driver is the only writer of the store. Its loop is restartable at any instant: a run is
``pending`` until submitted, ``running`` while a worker has it, and becomes ``finished`` /
``diverged`` / ``failed`` in the same transaction that stores its metrics. Kill the driver
and start it again: finished and diverged runs are skipped, everything else runs (again),
and each run resumes from the checkpoints in its own ``runs/<key>/`` directory.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lnlab.io import dir_lock
from lnlab.runner.backends import Backend, Resources, RunOutcome, RunTask, make_backend
from lnlab.runner.config import check_config, run_key
from lnlab.runner.store import DB_NAME, DONE, Store

__all__ = ["SweepResult", "run_dir_for", "run_sweep", "sweep_lock"]

HEADLINE_METRICS = ("test_acc", "final_test_acc", "test_loss", "train_acc", "value")


@dataclass
class SweepResult:
    """Counts of one driver invocation (``skipped`` = already done before it started)."""

    experiment: str
    total: int
    skipped: int = 0
    finished: int = 0
    diverged: int = 0
    failed: int = 0
    keys: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    wall_time: float = 0.0
    replicate: bool = False  # the replication sweep on the second seed set

    @property
    def ran(self) -> int:
        return self.finished + self.diverged + self.failed


def run_dir_for(root: str | Path, key: str) -> Path:
    """Each run's private directory (checkpoints, noisy labels, error.txt) under ``root``."""
    return Path(root) / "runs" / key


def sweep_lock(out_dir: Path) -> contextlib.AbstractContextManager[None]:
    """One driver per output directory: a second one would race the first on the same runs."""
    return dir_lock(out_dir, "running a sweep")


def _headline(outcome: RunOutcome, metric: str | None) -> str:
    if outcome.status == "failed":
        return f"failed: {outcome.error}"
    names = (metric,) if metric else HEADLINE_METRICS
    for name in names:
        v = outcome.summary.get(name) if name else None
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            return f"{outcome.status} {name}={v:.4g}"
    return outcome.status


class _Progress:
    """Rich progress bar (runs done/total, elapsed, ETA, last result), or nothing."""

    def __init__(self, enabled: bool, title: str, total: int, skipped: int) -> None:
        self._bar = None
        if not enabled or total == 0:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("runs"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[last]}", style="dim"),
        )
        note = f" ({skipped} done before)" if skipped else ""
        self._task = self._bar.add_task(f"{title}{note}", total=total, last="")
        self._bar.start()

    def advance(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, last=text[:60])

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def run_sweep(
    out_dir: str | Path,
    experiment: str,
    module: str,
    configs: Sequence[Mapping[str, Any]],
    *,
    scale: str = "custom",
    seeds: Sequence[int] = (),
    options: Mapping[str, Any] | None = None,
    backend: Backend | None = None,
    versions: Mapping[str, str] | None = None,
    claims: Sequence[Mapping[str, Any]] = (),
    progress: bool = True,
    headline_metric: str | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
    storage: str | Path | None = None,
    resources: Callable[[Mapping[str, Any]], Resources] | None = None,
    replicate: bool = False,
) -> SweepResult:
    """Run every config of one experiment into ``out_dir``'s store; return the counts.

    ``module`` must be importable in the workers and define ``run(config, run_dir)``.
    ``resources(config)`` says what each run needs (its thread count, which the worker pins,
    and GPUs); the runner knows nothing of the configs' layout, so the experiment supplies
    it (default: one thread, no GPU). Run directories live under ``storage`` (default
    ``out_dir``; a cluster backend points it at a path every node sees). ``replicate`` marks
    the sweep as the replication on a second seed set (the report keeps it apart). Configs
    are validated (JSON data) before anything is written, so bad input leaves no trace.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    for i, cfg in enumerate(configs):
        check_config(dict(cfg), f"{experiment} config #{i}")
    keyed = {run_key(experiment, cfg): dict(cfg) for cfg in configs}  # duplicates run once
    needs = {k: resources(cfg) if resources else Resources() for k, cfg in keyed.items()}
    keys = list(keyed)
    result = SweepResult(experiment=experiment, total=len(keys), keys=keys,
                         replicate=replicate)
    own_backend = backend is None
    backend = backend or make_backend("local", workers=1)
    if (out / DB_NAME).exists():  # a damaged or foreign store is refused before any write
        Store.open(out).close()
    with sweep_lock(out), Store.open(out, create=True) as store:
        store.add_runs(experiment, keyed.items())
        store.reset_stale(keys)  # running = left by a dead driver; failed = try again
        sweep_id = store.begin_sweep(experiment, scale=scale, seeds=list(seeds),
                                     options=dict(options or {}), keys=keys,
                                     versions=dict(versions or {}), claims=claims,
                                     replicate=replicate)
        status = store.statuses(keys)
        todo = [k for k in keys if status.get(k) not in DONE]
        result.skipped = len(keys) - len(todo)
        title = f"{experiment} (replication)" if replicate else experiment
        bar = _Progress(progress, title, len(todo), result.skipped)
        in_flight: set[str] = set()
        queue = list(reversed(todo))
        try:
            while queue or in_flight:
                while queue and len(in_flight) < max(1, backend.capacity):
                    key = queue.pop()
                    store.mark_running(key)
                    backend.submit(RunTask(
                        key=key, experiment=experiment, module=module, config=keyed[key],
                        run_dir=str(run_dir_for(storage or out, key)),
                        resources=needs[key],
                    ))
                    in_flight.add(key)
                for outcome in backend.completed():
                    in_flight.discard(outcome.key)
                    store.record(outcome.key, status=outcome.status, summary=outcome.summary,
                                 epochs=outcome.epochs, artifacts=outcome.artifacts,
                                 error=outcome.error, wall_time=outcome.wall_time,
                                 host=outcome.host or None, retries=outcome.retries,
                                 environment=outcome.environment)
                    setattr(result, outcome.status, getattr(result, outcome.status) + 1)
                    if outcome.error:
                        result.errors[outcome.key] = outcome.error
                    bar.advance(_headline(outcome, headline_metric))
                    if on_outcome is not None:
                        on_outcome(outcome)
                    if queue:
                        break  # refill the backend before waiting on the next outcome
            store.end_sweep(sweep_id)
        finally:
            bar.close()
            if in_flight:  # interrupted: give the runs back so the next driver re-runs them
                with contextlib.suppress(Exception):
                    store.mark_pending(sorted(in_flight))
            if own_backend:
                backend.close()
    result.wall_time = time.perf_counter() - t0
    return result
