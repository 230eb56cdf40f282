"""The ``ray`` backend: one Ray task per run, on a local Ray instance or an existing cluster.

lnlab does not schedule anything itself here. Each run becomes one Ray task that asks for the
run's CPUs/GPUs (``RunTask.resources``, which its experiment derives from the config) and
calls the same worker-side ``execute`` as the local backends, which pins the run's thread
count, so a run computes the same result wherever it lands. The
driver keeps the SQLite store; tasks only return plain data to it.

Failures. A task whose worker process died (OOM killer, SIGKILL, a lost node) is re-run by Ray
itself (``max_retries``). The run directory lives on storage every node sees, so the re-run
resumes from the trainer's last checkpoint instead of starting over. Every attempt appends a
line to ``<run_dir>/.attempts`` (submission id, pid, host, time): that is how the outcome
knows how many times Ray ran it (stored in the run's ``attempts``), and it tells a user which
process on which node has a run. A run that still dies after all retries comes back
``failed``, and the next invocation of the sweep tries it again.

Orphans. If the driver dies (even by SIGKILL), a run it started must not go on writing its
run directory while the next driver re-runs it there. Ray kills the tasks of a dead owner,
but only after a delay; so a task on the driver's own node also watches the driver process
and exits within ``WATCH_INTERVAL_S`` of its death (the same guarantee the local backend gets
from ``PR_SET_PDEATHSIG``). On other nodes Ray's owner-death handling does it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lnlab.errors import LnlabError, error_summary
from lnlab.runner.base import Backend, RunOutcome, RunTask, execute

__all__ = ["ATTEMPTS_FILE", "RayBackend", "attempts_of", "run_attempt"]

ATTEMPTS_FILE = ".attempts"
DEFAULT_MAX_RETRIES = 3
_RESOURCE_TTL_S = 5.0  # how long a reading of the cluster's size is trusted (autoscaling)
WATCH_INTERVAL_S = 0.1


def _start_time(pid: int) -> str | None:
    """Linux: a process's start time (clock ticks since boot), or None if unreadable.

    (pid, start time) names a process uniquely even after its pid is reused.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name may contain spaces


def _current_node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _watch_driver(driver: tuple[str, int, str | None]) -> None:
    """Exit this worker soon after the driver dies, if this worker can see the driver.

    Only on the driver's node, and only if the driver's (pid, start time) matches here
    (another pid namespace, or no /proc: Ray's own owner-death handling has to do).
    """
    node, pid, started = driver
    if started is None or node != _current_node() or _start_time(pid) != started:
        return

    def watch() -> None:
        while _start_time(pid) == started:
            time.sleep(WATCH_INTERVAL_S)
        os._exit(1)

    threading.Thread(target=watch, name="lnlab-driver-watch", daemon=True).start()


def attempts_of(run_dir: str | Path) -> list[dict[str, Any]]:
    """The attempts logged in a run directory, oldest first (empty if none)."""
    path = Path(run_dir) / ATTEMPTS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def run_attempt(task: RunTask, submission: str,
                driver: tuple[str, int, str | None] | None = None) -> RunOutcome:
    """What a Ray task runs: log the attempt, ``execute`` the run (which pins its threads).

    Earlier attempts of the same ``submission`` in the log are Ray's retries of this task.
    ``driver`` is (Ray node id, pid, start time) of the driver process, to die with it.
    """
    if driver is not None:
        _watch_driver(driver)
    run_dir = Path(task.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    retries = sum(a.get("submission") == submission for a in attempts_of(run_dir))
    entry = {"submission": submission, "pid": os.getpid(), "host": socket.gethostname(),
             "started": time.time()}
    with (run_dir / ATTEMPTS_FILE).open("a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return dataclasses.replace(execute(task), retries=retries)


_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_only(ray: Any) -> Iterator[None]:
    """While a private local instance starts, make Ray keep every service on loopback.

    Why: ``_node_ip_address="127.0.0.1"`` alone is not enough. Ray replaces a loopback node
    address by the machine's routable one, and its gcs_server, raylet, workers and agents
    then listen on all interfaces. Ray's single-machine mode (the flag it uses on macOS and
    Windows) keeps the loopback address, and its servers bind to it. The flag is read from
    the environment by the processes Ray starts and from ``ray_constants`` by this one;
    both are restored once the instance is up. A test lists the instance's listening
    sockets (tests/test_ray_loopback.py).
    """
    consts = getattr(getattr(ray, "_private", None), "ray_constants", None)
    old_env = os.environ.get(_CLUSTER_ENV)
    old_flag = getattr(consts, "ENABLE_RAY_CLUSTER", None)
    os.environ[_CLUSTER_ENV] = "0"
    if old_flag is not None:
        consts.ENABLE_RAY_CLUSTER = False  # type: ignore[union-attr]
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = old_env
        if old_flag is not None:
            consts.ENABLE_RAY_CLUSTER = old_flag  # type: ignore[union-attr]


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail in seconds, with one line, on a ``HOST:PORT`` that does not resolve or does not
    accept connections: ``ray.init`` would retry such an address for minutes."""
    if address in ("auto", "local") or "://" in address:
        return  # Ray finds the cluster itself, or a Ray-client URL (checked by Ray)
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LnlabError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise LnlabError(f"could not reach the Ray cluster at {address}: {why}") from None


class RayBackend(Backend):
    """Runs each task as a Ray task; see the module docstring.

    ``address=None`` starts a private local Ray instance (``workers`` CPUs, default all cores,
    node address 127.0.0.1, no dashboard, no usage stats) and shuts it down on ``close``.
    ``address="auto"`` or ``"HOST:PORT"`` joins a running cluster and leaves it running.
    If Ray is already initialized in this process (a notebook, a test fixture), that
    session is used as is.
    """

    where = "the Ray cluster"

    def __init__(self, address: str | None = None, *, workers: int | None = None,
                 max_retries: int = DEFAULT_MAX_RETRIES) -> None:
        import ray

        if workers is not None and workers < 1:
            raise LnlabError(f"--workers must be at least 1 (got {workers})")
        if max_retries < 0:
            raise LnlabError(f"max_retries must be >= 0 (got {max_retries})")
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING",
                                      "log_to_driver": False, "configure_logging": True}
            if address:
                _check_reachable(address)
                kwargs["address"] = address
            else:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the box
                kwargs.update(num_cpus=workers or max(1, os.cpu_count() or 1),
                              _node_ip_address="127.0.0.1")
            try:
                with contextlib.nullcontext() if address else _loopback_only(ray):
                    ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise LnlabError(f"could not start or reach {where}: {error_summary(e)}") from None
            self._owns = True
        self.limit = workers if address else None  # a local instance is already that size
        self.max_retries = max_retries
        self._remote = ray.remote(run_attempt)
        self._refs: dict[Any, tuple[RunTask, float, float]] = {}  # ref → task, cpus, gpus
        self._last_need = (1.0, 0.0)
        self._cluster_cache: tuple[float, dict[str, float]] = (-1e9, {})
        self._driver: tuple[str, int, str | None] | None = None
        with contextlib.suppress(Exception):  # e.g. Ray client mode: no local node
            self._driver = (_current_node(), os.getpid(), _start_time(os.getpid()))

    def _cluster(self) -> dict[str, float]:
        t, res = self._cluster_cache
        if time.monotonic() - t > _RESOURCE_TTL_S:
            res = {k: float(v) for k, v in self._ray.cluster_resources().items()}
            self._cluster_cache = (time.monotonic(), res)
        return res

    def has_gpu(self) -> bool:
        return self._cluster().get("GPU", 0.0) > 0

    @property  # type: ignore[override]
    def capacity(self) -> int:
        """Runs in flight + 1 while the cluster has room for one more run like the last one.

        Keeps the store's ``running`` honest (queued runs stay ``pending``) and follows an
        autoscaling cluster as nodes join or leave.
        """
        res = self._cluster()
        cpus = sum(c for _, c, _ in self._refs.values())
        gpus = sum(g for _, _, g in self._refs.values())
        need_c, need_g = self._last_need
        fits = (cpus + need_c <= res.get("CPU", 0.0) + 1e-9
                and gpus + need_g <= res.get("GPU", 0.0) + 1e-9)
        n = len(self._refs) + (1 if fits else 0)
        if self.limit:
            n = min(n, self.limit)
        return max(1, n)

    def submit(self, task: RunTask) -> None:
        request = task.resources.request()
        cpus, gpus = request["cpus"], request["gpus"]
        if gpus > 0 and not self.has_gpu():
            raise LnlabError(f"run {task.key} asks for {gpus:g} GPU but the Ray cluster has none "
                             "(run with --device cpu, or add GPU nodes)")
        ref = self._remote.options(
            num_cpus=cpus, num_gpus=gpus, max_retries=self.max_retries, retry_exceptions=False,
            name=f"lnlab:{task.experiment}:{task.key}",
        ).remote(task, uuid.uuid4().hex, self._driver)
        self._refs[ref] = (task, cpus, gpus)
        self._last_need = (cpus, gpus)

    def completed(self) -> Iterator[RunOutcome]:
        ray = self._ray
        while self._refs:
            done, _ = ray.wait(list(self._refs), num_returns=1)
            for ref in done:
                task, _, _ = self._refs.pop(ref)
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as e:  # worker died more than max_retries times
                    yield RunOutcome(task.key, "failed", retries=self.max_retries,
                                     error=f"Ray task failed after {self.max_retries + 1} "
                                     f"attempts: {error_summary(e)}")

    def close(self) -> None:
        """Kill runs still in flight (so none keeps writing its run dir), then leave Ray."""
        for ref in list(self._refs):
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)
        self._refs.clear()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False
