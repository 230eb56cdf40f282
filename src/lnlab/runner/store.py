"""The results store: one SQLite file (WAL mode) per output directory.

Why SQLite: a sweep must never lose or half-write a result, even when the driver is killed,
and results must be queryable afterwards (by status, config field, metric). Every write here is
one transaction, so after a crash a run is either fully recorded or still pending/running —
and a run found "running" when a driver starts was left by a dead driver and is run again.
Only the driver process writes; workers return their results to it (this is what lets a
remote backend such as Ray reuse the store unchanged).

Tables: ``runs`` (one row per run key, with the environment it ran in: library versions,
CPU instruction set, threads), ``metrics`` (per-epoch values in long format: key, epoch,
name, value), ``artifacts`` (files a run produced), ``sweeps`` (each invocation: which keys
it asked for, at which scale and seeds, and whether it is a replication on a second seed set
— the report is built from these).
"""

from __future__ import annotations

import json
import math
import socket
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lnlab.errors import LnlabError
from lnlab.runner.config import canonical_json, flatten

__all__ = ["DB_NAME", "DONE", "STATUSES", "RunRow", "Store", "SweepRow", "sanitize"]

DB_NAME = "results.sqlite"
STATUSES = ("pending", "running", "finished", "diverged", "failed")
DONE = ("finished", "diverged")  # results: a re-run skips these
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    key        TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    config     TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN
                   ('pending', 'running', 'finished', 'diverged', 'failed')),
    summary    TEXT,
    error      TEXT,
    created    TEXT NOT NULL,
    started    TEXT,
    finished   TEXT,
    wall_time  REAL,
    host       TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    environment TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs (experiment, status);
CREATE TABLE IF NOT EXISTS metrics (
    key   TEXT NOT NULL REFERENCES runs (key),
    epoch INTEGER NOT NULL,
    name  TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (key, epoch, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifacts (
    key   TEXT NOT NULL REFERENCES runs (key),
    name  TEXT NOT NULL,
    path  TEXT NOT NULL,
    bytes INTEGER,
    PRIMARY KEY (key, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sweeps (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment TEXT NOT NULL,
    scale      TEXT NOT NULL,
    seeds      TEXT NOT NULL,
    options    TEXT NOT NULL,
    keys       TEXT NOT NULL,
    versions   TEXT NOT NULL,
    claims     TEXT NOT NULL DEFAULT '[]',
    started    TEXT NOT NULL,
    finished   TEXT,
    replicate  INTEGER NOT NULL DEFAULT 0
);
"""

# Columns added after schema version 1 was released: an older store gains them on open.
_ADDED_COLUMNS = (
    ("sweeps", "claims", "TEXT NOT NULL DEFAULT '[]'"),
    ("sweeps", "replicate", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "environment", "TEXT NOT NULL DEFAULT '{}'"),
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sanitize(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats → None, tuples → lists, numpy/torch scalars → Python."""
    if isinstance(obj, Mapping):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [sanitize(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalar
        try:
            return sanitize(obj.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


@dataclass(frozen=True)
class RunRow:
    """One run as stored."""

    key: str
    experiment: str
    config: dict[str, Any]
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    created: str = ""
    started: str | None = None
    finished: str | None = None
    wall_time: float | None = None
    host: str | None = None
    attempts: int = 0
    environment: dict[str, Any] = field(default_factory=dict)  # as recorded by the worker


@dataclass(frozen=True)
class SweepRow:
    """One invocation of ``lnlab run`` for one experiment."""

    id: int
    experiment: str
    scale: str
    seeds: list[int]
    options: dict[str, Any]
    keys: list[str]
    versions: dict[str, str]
    started: str
    finished: str | None
    claims: list[dict[str, Any]] = field(default_factory=list)
    replicate: bool = False  # the replication sweep on the second seed set


class Store:
    """Access to ``DIR/results.sqlite``. Use as a context manager; writes are transactions.

    ``Store.open(dir, create=False)`` refuses a directory without a store (for ``lnlab
    report``/``runs``), so a typo in a path never creates an empty results file.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, out_dir: str | Path, *, create: bool = False) -> Store:
        out = Path(out_dir)
        db = out / DB_NAME
        if not db.exists():
            if not create:
                raise LnlabError(f"no results store in {out} (expected {db})")
            out.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        store = cls(db, conn)
        conn.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS)
        for table, col, decl in _ADDED_COLUMNS:  # stores written by an older lnlab
            if col not in {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")
        with store._tx() as c:
            row = c.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
            if row is None:
                c.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row["v"]) != SCHEMA_VERSION:
                raise LnlabError(f"{db} has schema version {row['v']}, this lnlab reads "
                                 f"version {SCHEMA_VERSION}")
        return store

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: all of it is written, or none of it."""
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    # ---------------------------------------------------------------- writes (driver only)
    def add_runs(self, experiment: str, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Register runs as pending (existing keys keep their status and results)."""
        now = _now()
        with self._tx() as c:
            c.executemany(
                "INSERT OR IGNORE INTO runs (key, experiment, config, status, created) "
                "VALUES (?, ?, ?, 'pending', ?)",
                [(k, experiment, canonical_json(cfg), now) for k, cfg in items],
            )

    def reset_stale(self, keys: Sequence[str] | None = None) -> int:
        """Runs left ``running`` by a dead driver (or ``failed`` before) go back to pending."""
        with self._tx() as c:
            if keys is None:
                cur = c.execute("UPDATE runs SET status='pending' WHERE status='running'")
            else:
                cur = c.executemany(
                    "UPDATE runs SET status='pending' WHERE key=? AND status IN "
                    "('running', 'failed')", [(k,) for k in keys])
            return cur.rowcount

    def mark_running(self, key: str, host: str | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET status='running', started=?, host=?, error=NULL, "
                "attempts=attempts+1 WHERE key=?",
                (_now(), host or socket.gethostname(), key),
            )

    def mark_pending(self, keys: Iterable[str]) -> None:
        with self._tx() as c:
            c.executemany("UPDATE runs SET status='pending' WHERE key=? AND status='running'",
                          [(k,) for k in keys])

    def record(
        self,
        key: str,
        *,
        status: str,
        summary: Mapping[str, Any] | None = None,
        epochs: Sequence[Mapping[str, Any]] = (),
        artifacts: Mapping[str, str | Path] | None = None,
        error: str | None = None,
        wall_time: float | None = None,
        host: str | None = None,
        retries: int = 0,
        environment: Mapping[str, Any] | None = None,
    ) -> None:
        """Store a finished/diverged/failed run with its epochs and artifacts, atomically.

        ``retries`` are attempts a backend made on its own (Ray re-running a task whose
        worker died); they are added to ``attempts``, which counts the driver's submissions.
        ``environment`` is what the worker ran with (versions, CPU instruction set, threads).
        """
        if status not in ("finished", "diverged", "failed"):
            raise ValueError(f"cannot record a run as {status!r}")
        rows = []
        for i, ep in enumerate(epochs):
            e = ep.get("epoch", i + 1)
            epoch = int(e) if isinstance(e, int | float) and math.isfinite(e) else i + 1
            for name, value in flatten(ep).items():
                if name == "epoch" or isinstance(value, bool | str) or value is None:
                    continue
                if isinstance(value, int | float):
                    v = float(value)
                    rows.append((key, epoch, name, v if math.isfinite(v) else None))
        arts = []
        for name, p in (artifacts or {}).items():
            path = Path(p)
            arts.append((key, str(name), str(path),
                         path.stat().st_size if path.is_file() else None))
        with self._tx() as c:
            cur = c.execute(
                "UPDATE runs SET status=?, summary=?, error=?, finished=?, wall_time=?, "
                "host=COALESCE(?, host), attempts=attempts+?, environment=? WHERE key=?",
                (status, json.dumps(sanitize(dict(summary or {})), sort_keys=True), error,
                 _now(), wall_time, host, max(0, int(retries)),
                 json.dumps(sanitize(dict(environment or {})), sort_keys=True), key),
            )
            if cur.rowcount != 1:
                raise KeyError(f"unknown run {key}")
            c.execute("DELETE FROM metrics WHERE key=?", (key,))
            c.execute("DELETE FROM artifacts WHERE key=?", (key,))
            c.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)", rows)
            c.executemany("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?)", arts)

    def begin_sweep(self, experiment: str, *, scale: str, seeds: Sequence[int],
                    options: Mapping[str, Any], keys: Sequence[str],
                    versions: Mapping[str, str],
                    claims: Sequence[Mapping[str, Any]] = (), replicate: bool = False) -> int:
        """Record an invocation; ``claims`` are the claim definitions as they were at the
        start, so the report can flag a claim edited after its results existed.
        ``replicate`` marks the replication sweep (second seed set) of the experiment."""
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO sweeps (experiment, scale, seeds, options, keys, versions, claims, "
                "started, replicate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (experiment, scale, json.dumps(list(seeds)), json.dumps(dict(options)),
                 json.dumps(list(keys)), json.dumps(dict(versions)),
                 json.dumps(sanitize(list(claims))), _now(), int(bool(replicate))),
            )
            return int(cur.lastrowid or 0)

    def end_sweep(self, sweep_id: int) -> None:
        with self._tx() as c:
            c.execute("UPDATE sweeps SET finished=? WHERE id=?", (_now(), sweep_id))

    # ---------------------------------------------------------------- reads
    @staticmethod
    def _run(row: sqlite3.Row) -> RunRow:
        return RunRow(
            key=row["key"], experiment=row["experiment"], config=json.loads(row["config"]),
            status=row["status"], summary=json.loads(row["summary"] or "{}"),
            error=row["error"], created=row["created"], started=row["started"],
            finished=row["finished"], wall_time=row["wall_time"], host=row["host"],
            attempts=row["attempts"], environment=json.loads(row["environment"] or "{}"),
        )

    def runs(self, *, experiment: str | None = None, status: Sequence[str] | None = None,
             keys: Sequence[str] | None = None) -> list[RunRow]:
        """Runs in creation order, filtered by experiment, status and/or key list."""
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        if experiment:
            sql += " AND experiment=?"
            args.append(experiment)
        if status:
            bad = sorted(set(status) - set(STATUSES))
            if bad:
                raise LnlabError(f"unknown status {bad[0]!r}: use one of {', '.join(STATUSES)}")
            sql += f" AND status IN ({','.join('?' * len(status))})"
            args.extend(status)
        rows = [self._run(r) for r in self._conn.execute(sql + " ORDER BY rowid", args)]
        if keys is not None:
            by = {r.key: r for r in rows}
            rows = [by[k] for k in dict.fromkeys(keys) if k in by]
        return rows

    def statuses(self, keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i:i + 500])
            q = f"SELECT key, status FROM runs WHERE key IN ({','.join('?' * len(chunk))})"
            out.update({r["key"]: r["status"] for r in self._conn.execute(q, chunk)})
        return out

    def epochs(self, key: str) -> list[dict[str, float | None]]:
        """Per-epoch metrics of one run as a list of ``{"epoch": e, name: value, ...}``."""
        rows: dict[int, dict[str, float | None]] = {}
        for r in self._conn.execute(
                "SELECT epoch, name, value FROM metrics WHERE key=? ORDER BY epoch", (key,)):
            rows.setdefault(r["epoch"], {"epoch": r["epoch"]})[r["name"]] = r["value"]
        return [rows[e] for e in sorted(rows)]

    def metric(self, key: str, name: str) -> list[tuple[int, float | None]]:
        """One metric's curve: ``[(epoch, value), ...]``."""
        return [(r[0], r[1]) for r in self._conn.execute(
            "SELECT epoch, value FROM metrics WHERE key=? AND name=? ORDER BY epoch",
            (key, name))]

    def artifacts(self, key: str) -> dict[str, str]:
        return {r["name"]: r["path"] for r in self._conn.execute(
            "SELECT name, path FROM artifacts WHERE key=?", (key,))}

    def sweeps(self, experiment: str | None = None, *,
               replicate: bool | None = None) -> list[SweepRow]:
        """Sweeps in order; ``replicate`` True/False keeps only replication/primary ones."""
        sql, args = "SELECT * FROM sweeps WHERE 1=1", []
        if experiment:
            sql += " AND experiment=?"
            args.append(experiment)
        if replicate is not None:
            sql += " AND replicate=?"
            args.append(int(replicate))
        return [
            SweepRow(id=r["id"], experiment=r["experiment"], scale=r["scale"],
                     seeds=json.loads(r["seeds"]), options=json.loads(r["options"]),
                     keys=json.loads(r["keys"]), versions=json.loads(r["versions"]),
                     started=r["started"], finished=r["finished"],
                     claims=json.loads(r["claims"]), replicate=bool(r["replicate"]))
            for r in self._conn.execute(sql + " ORDER BY id", args)
        ]

    def latest_sweeps(self, *, replicate: bool = False) -> list[SweepRow]:
        """The most recent primary sweep of each experiment (``replicate=True``: the most
        recent replication sweep), in order of first appearance."""
        latest: dict[str, SweepRow] = {}
        for s in self.sweeps(replicate=replicate):
            latest[s.experiment] = s
        return list(latest.values())

