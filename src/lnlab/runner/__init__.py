"""Sweeps: run configs keyed by content, a results store, backends and the driver.

``expand_grid`` builds configs, ``run_sweep`` runs them through a ``Backend`` into a
``Store`` (SQLite in the output directory). See ``lnlab.experiments`` for the layer above.
"""

from lnlab.runner.backends import (
    Backend,
    InProcessBackend,
    LocalBackend,
    Resources,
    RunOutcome,
    RunTask,
    execute,
    make_backend,
)
from lnlab.runner.config import canonical_json, expand_grid, flatten, get_path, run_key, set_path
from lnlab.runner.driver import SweepResult, run_dir_for, run_sweep
from lnlab.runner.store import DB_NAME, STATUSES, RunRow, Store, SweepRow

__all__ = [
    "DB_NAME",
    "STATUSES",
    "Backend",
    "InProcessBackend",
    "LocalBackend",
    "Resources",
    "RunOutcome",
    "RunRow",
    "RunTask",
    "Store",
    "SweepResult",
    "SweepRow",
    "canonical_json",
    "execute",
    "expand_grid",
    "flatten",
    "get_path",
    "make_backend",
    "run_dir_for",
    "run_key",
    "run_sweep",
    "set_path",
]
