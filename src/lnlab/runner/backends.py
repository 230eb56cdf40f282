"""Where runs execute: the ``Backend`` interface, the worker-side ``execute``, local backends.

The split is deliberate. ``execute(task)`` is everything that happens *for one run* — pin
torch's thread count to the run's ``Resources``, import the experiment module, call its
``run(config, run_dir)``, time it, record the environment it ran in, turn an exception into a
``failed`` outcome with a one-line error — and it returns plain picklable data. A backend only
decides where ``execute`` runs and hands back outcomes as they complete; it never touches the
results store (only the driver writes it). A Ray backend is therefore ``execute`` wrapped in
``ray.remote`` with ``task.resources`` as the request, plus retries when a worker dies.

Determinism. A run's thread count comes from the task (the experiment decides it from the
config, so it is part of the run key), never from the backend, the worker count or the
machine's cores: the same config gives bitwise the same numbers in-process, in a pool worker
or on Ray. (A float reduction split over 2 threads sums in another order than over 1; before
this rule ``--workers 1`` ran with all cores' threads and a pool with one per worker, and
``lnlab run baselines`` gave different accuracies for the same run key.)
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import multiprocessing
import os
import signal
import socket
import sys
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lnlab.errors import LnlabError

__all__ = [
    "BACKENDS",
    "DEVICES",
    "Backend",
    "InProcessBackend",
    "LocalBackend",
    "Resources",
    "RunOutcome",
    "RunTask",
    "execute",
    "make_backend",
    "pinned_threads",
    "resolve_device",
]

MAX_ERROR_CHARS = 300
BACKENDS = ("local", "ray")
DEVICES = ("auto", "cpu", "cuda")
RAY_INSTALL_HINT = ("the ray backend needs Ray, which is not installed: "
                    "pip install 'lnlab[ray]'  (or: pip install 'ray>=2.9')")


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


def one_line(exc: BaseException) -> str:
    """``TypeName: first line of the message``, capped, for the store and the progress bar."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


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
        return RunOutcome(task.key, "failed", error=one_line(e),
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


class InProcessBackend(Backend):
    """Runs each task in the calling process (``--workers 1``): simplest, easiest to debug.

    ``execute`` pins each run's threads and restores the caller's setting afterwards.
    """

    capacity = 1

    def __init__(self) -> None:
        self._queue: list[RunTask] = []

    def submit(self, task: RunTask) -> None:
        self._queue.append(task)

    def completed(self) -> Iterator[RunOutcome]:
        while self._queue:
            yield execute(self._queue.pop(0))


def _die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel kill this worker when the driver dies (even by SIGKILL).

    Otherwise an orphaned worker would finish its run while the next driver re-runs the same
    run in the same run directory.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the driver died before prctl took effect
        os._exit(1)


def _init_worker(parent_pid: int) -> None:
    """Pool initializer: die with the driver; one OpenMP thread until a run pins its own."""
    _die_with_parent(parent_pid)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # only settable before any inter-op work
        torch.set_num_interop_threads(1)


class LocalBackend(Backend):
    """A pool of worker processes on this machine, one run per worker at a time.

    Workers are started with ``spawn`` (never ``fork``: forking a process that already has
    torch's thread pools running can deadlock). If a worker dies (OOM killer, segfault) the
    pool breaks: every task that was in it comes back ``failed`` with that reason, and a fresh
    pool serves later submissions. Each run uses the threads its task asks for (so workers ×
    threads above the core count oversubscribes the CPU: slower, same numbers).
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise LnlabError(f"--workers must be at least 1 (got {workers})")
        self.capacity = workers
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[Future[RunOutcome], RunTask] = {}

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.capacity,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
        return self._pool

    def submit(self, task: RunTask) -> None:
        try:
            fut = self._get_pool().submit(execute, task)
        except BrokenProcessPool:
            self._pool = None
            fut = self._get_pool().submit(execute, task)
        self._futures[fut] = task

    def completed(self) -> Iterator[RunOutcome]:
        while self._futures:
            done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
            for fut in done:
                task = self._futures.pop(fut)
                try:
                    yield fut.result()
                except BrokenProcessPool:
                    self._pool = None
                    yield RunOutcome(task.key, "failed",
                                     error="worker process died (killed or crashed)")
                except Exception as e:  # e.g. an unpicklable result
                    yield RunOutcome(task.key, "failed", error=one_line(e))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._futures.clear()


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def make_backend(name: str = "local", *, workers: int | None = None,
                 address: str | None = None) -> Backend:
    """Backend by name. ``local`` with one worker runs in-process (no pool).

    ``ray`` starts a local Ray instance with ``workers`` CPUs (default: all cores), or joins
    the cluster at ``address`` (then ``workers``, if given, caps the runs in flight).
    """
    if name not in BACKENDS:
        raise LnlabError(f"unknown backend {name!r}: available: {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise LnlabError(f"--workers must be at least 1 (got {workers})")
    if name == "ray":
        try:
            import ray  # noqa: F401 - only to give the one-line install hint
        except ImportError:
            raise LnlabError(RAY_INSTALL_HINT) from None
        from lnlab.runner.ray_backend import RayBackend

        return RayBackend(address=address, workers=workers)
    if address:
        raise LnlabError("--address only applies to --backend ray")
    n = default_workers() if workers is None else workers
    if n < 1:
        raise LnlabError(f"--workers must be at least 1 (got {n})")
    if n == 1:
        return InProcessBackend()
    return LocalBackend(n)


def resolve_device(device: str, backend: Backend) -> str:
    """``auto`` → ``cuda`` if the backend can give runs a GPU, else ``cpu``; check ``cuda``.

    Resolved once per sweep by the driver, so the stored config says what the run used.
    """
    if device not in DEVICES:
        raise LnlabError(f"unknown device {device!r}: use {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    gpu = backend.has_gpu()
    if device == "cuda" and not gpu:
        raise LnlabError(f"--device cuda: {backend.where} has no CUDA GPU "
                         "(use --device cpu or auto)")
    return "cuda" if gpu else "cpu"
