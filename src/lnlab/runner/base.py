"""The run contract every backend shares: ``RunTask`` in, ``RunOutcome`` out, ``execute``.

Kept apart from the backends themselves so that the Ray backend and the local ones both build
on it without importing each other (``make_backend`` picks one lazily). See
``lnlab.runner.backends`` for why execution and scheduling are split this way.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lnlab.errors import error_summary

__all__ = ["Backend", "Resources", "RunOutcome", "RunTask", "execute", "pinned_threads"]


@dataclass(frozen=True)
class Resources:
    """What one run needs, as its experiment states it from the run's config.

    ``threads`` is torch's intra-op thread count during the run (the worker pins it, so it
    must come from the config for a run to be reproducible) and the CPUs a scheduler
    reserves; ``gpus`` the GPUs it reserves.
    """

    threads: int = 1
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) \
                or self.threads < 1:
            raise ValueError(f"Resources.threads must be a positive int (got {self.threads!r})")
        if not self.gpus >= 0:
            raise ValueError(f"Resources.gpus must be >= 0 (got {self.gpus!r})")

    def request(self) -> dict[str, float]:
        """The scheduler's view: ``{"cpus": threads, "gpus": gpus}``."""
        return {"cpus": float(self.threads), "gpus": float(self.gpus)}


@dataclass(frozen=True)
class RunTask:
    """One run to execute: all a worker on any machine needs (plain data, picklable)."""

    key: str
    experiment: str  # registry name, for messages
    module: str  # importable module that defines run(config, run_dir)
    config: dict[str, Any]
    run_dir: str
    resources: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class RunOutcome:
    """What came back from one run. ``status`` is finished | diverged | failed."""

    key: str
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    wall_time: float = 0.0
    host: str = ""
    retries: int = 0  # extra attempts the backend made (e.g. Ray re-ran it after a worker died)
    environment: dict[str, Any] = field(default_factory=dict)  # versions, CPU, threads


def _parse_output(out: Any, run_dir: Path) -> tuple[str, dict, list, dict]:
    """Check the dict a ``run`` function returned: ``{"summary": {...}, "status"?, ...}``."""
    if not isinstance(out, Mapping) or not isinstance(out.get("summary"), Mapping):
        raise TypeError("run() must return a dict with a 'summary' dict "
                        f"(got {type(out).__name__})")
    status = out.get("status", "finished")
    if status not in ("finished", "diverged"):
        raise ValueError(f"run() returned status {status!r}: use 'finished' or 'diverged'")
    epochs = list(out.get("epochs") or [])
    if not all(isinstance(e, Mapping) for e in epochs):
        raise TypeError("run() 'epochs' must be a list of dicts")
    artifacts = {}
    for name, p in dict(out.get("artifacts") or {}).items():
        path = Path(p)
        artifacts[str(name)] = str(path if path.is_absolute() else run_dir / path)
    return status, dict(out["summary"]), [dict(e) for e in epochs], artifacts


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """torch uses exactly ``threads`` intra-op threads inside, and the old count after.

    Only the intra-op count changes results: eager CPU kernels split their loops and sums
    over the intra-op pool (torch's OpenMP threads, which also drive MKL and oneDNN). The
    inter-op pool runs independent ops side by side without changing any op's arithmetic,
    so it is left as it is (it can be set only once per process; worker processes set 1).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def execute(task: RunTask) -> RunOutcome:
    """Run one task here and now; never raises for a failing run (it becomes ``failed``).

    Torch's thread count is pinned to ``task.resources.threads`` for the run and restored
    after. A full traceback goes to ``run_dir/error.txt``; the outcome carries one line.
    """
    from lnlab.runner.environment import run_environment

    t0 = time.perf_counter()
    host = socket.gethostname()
    run_dir = Path(task.run_dir)
    env: dict[str, Any] = {}
    try:
        with pinned_threads(task.resources.threads):
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "error.txt").unlink(missing_ok=True)  # from an earlier failure
                module = importlib.import_module(task.module)
                out = module.run(dict(task.config), run_dir)
            finally:  # at the end: what the run loaded (norm kernels) is known by then
                env = run_environment()
        status, summary, epochs, artifacts = _parse_output(out, run_dir)
        return RunOutcome(task.key, status, summary, epochs, artifacts, None,
                          time.perf_counter() - t0, host, environment=env)
    except Exception as e:  # a failing run is a recorded result, not a crash of the sweep
        with contextlib.suppress(OSError):
            (run_dir / "error.txt").write_text(traceback.format_exc())
        return RunOutcome(task.key, "failed", error=error_summary(e),
                          wall_time=time.perf_counter() - t0, host=host, environment=env)


class Backend(ABC):
    """Runs tasks somewhere and yields their outcomes as they complete.

    Contract: ``submit`` never blocks for long; ``completed()`` yields one outcome per
    submitted task (in completion order) and returns when none is outstanding; a task whose
    worker died comes back as ``failed`` (or is retried by the backend), never silently lost.
    ``capacity`` is how many tasks can usefully run at once: the driver keeps at most that
    many in flight, so the store's ``running`` status means running, not queued.
    """

    capacity: int = 1
    where: str = "this machine"  # for messages: where the runs execute

    @abstractmethod
    def submit(self, task: RunTask) -> None: ...

    @abstractmethod
    def completed(self) -> Iterator[RunOutcome]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers; outstanding tasks are abandoned (they stay ``running`` → re-run)."""

    def has_gpu(self) -> bool:
        """Whether runs can get a CUDA device here (``--device auto`` picks CUDA if so)."""
        import torch

        return bool(torch.cuda.is_available())

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
