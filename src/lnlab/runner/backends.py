"""Where runs execute: local backends and ``make_backend`` (the ``Backend`` interface and the
worker-side ``execute`` are in ``lnlab.runner.base``, shared with the Ray backend).

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
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from lnlab.errors import LnlabError, error_summary
from lnlab.runner.base import (
    Backend,
    Resources,
    RunOutcome,
    RunTask,
    execute,
    pinned_threads,
)

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

BACKENDS = ("local", "ray")
DEVICES = ("auto", "cpu", "cuda")
RAY_INSTALL_HINT = ("the ray backend needs Ray, which is not installed: "
                    "pip install 'lnlab[ray]'  (or: pip install 'ray>=2.9')")


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
                    yield RunOutcome(task.key, "failed", error=error_summary(e))

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
