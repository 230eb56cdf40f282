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

import contextlib
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
from lnlab.io import atomic_path, json_safe
from lnlab.runner.config import canonical_json, flatten

__all__ = ["DB_NAME", "DONE", "STATUSES", "RunRow", "Store", "SweepRow", "sanitize"]

sanitize = json_safe  # the name older callers import

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


_TABLES = {"meta", "runs", "metrics", "artifacts", "sweeps"}
_MOVE = "move it aside (do not delete it: it may hold results) and re-run"


def _db_error(db: Path, e: sqlite3.Error) -> LnlabError:
    """A SQLite failure as a one-line user error naming the store and what to do."""
    msg = str(e)
    if "readonly" in msg or "unable to open" in msg or "disk I/O" in msg:
        return LnlabError(f"cannot write results store {db}: {msg} (is the directory "
                          f"writable?)")
    if "locked" in msg or "busy" in msg:
        return LnlabError(f"results store {db} is locked by another process: {msg}")
    return LnlabError(f"results store {db} is damaged ({msg}); {_MOVE}")


def _check_header(db: Path) -> bool:
    """Refuse a file that is not SQLite before SQLite touches it (an empty file included:
    SQLite would happily write a new database into it). Returns whether it is in WAL mode."""
    try:
        with open(db, "rb") as f:
            head = f.read(20)
    except OSError as e:
        raise LnlabError(f"cannot read results store {db}: {e.strerror}") from None
    if head[:16] != b"SQLite format 3\x00":
        what = "is empty" if not head else "is not an SQLite file"
        raise LnlabError(f"{db} {what}, so it is not an lnlab results store; {_MOVE}")
    return len(head) == 20 and head[18] == 2  # file format version 2 = WAL


def _check_store(conn: sqlite3.Connection, db: Path) -> None:
    """The file is intact and has lnlab's tables and schema version."""
    row = conn.execute("PRAGMA quick_check").fetchone()
    if row is None or row[0] != "ok":
        raise LnlabError(f"results store {db} is damaged (integrity check: "
                         f"{row[0] if row else 'no answer'}); {_MOVE}")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables >= _TABLES:
        raise LnlabError(f"{db} is an SQLite file but not an lnlab results store (missing "
                         f"tables: {', '.join(sorted(_TABLES - tables))}); {_MOVE}")
    row = conn.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
    if row is None or str(row[0]) != str(SCHEMA_VERSION):
        raise LnlabError(f"{db} has schema version {row[0] if row else 'none'}, this lnlab "
                         f"reads version {SCHEMA_VERSION}")


def _create(db: Path) -> None:
    """Create an empty store atomically: built beside its final name, then renamed, so a
    killed process never leaves a half-initialised (or empty) results file."""
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(db) as tmp:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.executescript(_SCHEMA)
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            finally:
                conn.close()
    except OSError as e:
        raise LnlabError(f"cannot create results store {db}: {e.strerror}") from None
    except sqlite3.Error as e:
        raise _db_error(db, e) from None


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

    def __init__(self, path: Path, conn: sqlite3.Connection, *, writable: bool = True) -> None:
        self.path = path
        self._conn = conn
        self._writable = writable

    @classmethod
    def open(cls, out_dir: str | Path, *, create: bool = False) -> Store:
        """Open ``out_dir``'s store: read-only unless ``create`` (the sweep driver).

        A read-only open (``lnlab report``/``runs``) never writes to the file, so it cannot
        turn a file that is not an lnlab store into one. Any existing file is checked first
        (SQLite header, integrity, lnlab's tables and schema version); a damaged or foreign
        file is an :class:`LnlabError` naming it, and is left exactly as it was.
        """
        out = Path(out_dir)
        db = out / DB_NAME
        if not db.exists():
            if not create:
                raise LnlabError(f"no results store in {out} (expected {db})")
            _create(db)
        if not db.is_file():
            raise LnlabError(f"{db} is not a file; move it aside")
        wal = _check_header(db)
        try:
            if create:
                conn = sqlite3.connect(db, timeout=30.0, isolation_level=None)
            else:
                # A closed store is in rollback-journal mode, which a read-only connection
                # reads without creating any file. A WAL-mode file without its -wal file has
                # no writer (a writer keeps -wal open): read it as immutable, as SQLite would
                # otherwise leave new -wal/-shm files beside it.
                q = "mode=ro"
                if wal and not Path(f"{db}-wal").exists():
                    q += "&immutable=1"
                conn = sqlite3.connect(f"{db.resolve().as_uri()}?{q}", uri=True,
                                       timeout=30.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            _check_store(conn, db)
            store = cls(db, conn, writable=create)
            if create:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                for table, col, decl in _ADDED_COLUMNS:  # stores written by an older lnlab
                    if col not in {r["name"] for r in conn.execute(
                            f"PRAGMA table_info({table})")}:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")
        except sqlite3.DatabaseError as e:
            raise _db_error(db, e) from None
        return store
    def close(self) -> None:
        """Close; the writer leaves the file in rollback-journal mode so that read-only
        readers need no -wal/-shm files (if a reader still has it open, it stays WAL)."""
        if self._writable:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA journal_mode=DELETE")
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: all of it is written, or none of it."""
        c = self._conn
        try:
            c.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise _db_error(self.path, e) from None
        try:
            yield c
        except sqlite3.OperationalError as e:
            c.execute("ROLLBACK")
            if "syntax error" in str(e) or "no such column" in str(e):
                raise  # a bug in this module, not the user's file
            raise _db_error(self.path, e) from None
        except sqlite3.DatabaseError as e:
            c.execute("ROLLBACK")
            if type(e) is not sqlite3.DatabaseError:  # constraint violations etc. are bugs
                raise
            raise _db_error(self.path, e) from None
        except BaseException:
            c.execute("ROLLBACK")
            raise
        try:
            c.execute("COMMIT")
        except sqlite3.OperationalError as e:
            raise _db_error(self.path, e) from None

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a query; a file damaged after it was opened is a one-line error naming it."""
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "syntax error" in str(e) or "no such column" in str(e):
                raise
            raise _db_error(self.path, e) from None
        except sqlite3.DatabaseError as e:
            if type(e) is not sqlite3.DatabaseError:
                raise
            raise _db_error(self.path, e) from None

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
                (status, json.dumps(json_safe(dict(summary or {})), sort_keys=True), error,
                 _now(), wall_time, host, max(0, int(retries)),
                 json.dumps(json_safe(dict(environment or {})), sort_keys=True), key),
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
                 json.dumps(json_safe(list(claims))), _now(), int(bool(replicate))),
            )
            return int(cur.lastrowid or 0)

    def end_sweep(self, sweep_id: int) -> None:
        with self._tx() as c:
            c.execute("UPDATE sweeps SET finished=? WHERE id=?", (_now(), sweep_id))

    # ---------------------------------------------------------------- reads
    def _loads(self, text: str | None, where: str) -> Any:
        try:
            return json.loads(text or "null")
        except (TypeError, ValueError) as e:
            raise LnlabError(f"results store {self.path} is damaged ({where} holds invalid "
                             f"JSON: {e}); {_MOVE}") from None

    def _run(self, row: sqlite3.Row) -> RunRow:
        where = f"run {row['key']}"
        return RunRow(
            key=row["key"], experiment=row["experiment"],
            config=self._loads(row["config"], where),
            status=row["status"], summary=self._loads(row["summary"] or "{}", where),
            error=row["error"], created=row["created"], started=row["started"],
            finished=row["finished"], wall_time=row["wall_time"], host=row["host"],
            attempts=row["attempts"],
            environment=self._loads(row["environment"] if "environment" in row.keys()  # noqa: SIM118
                                    else "{}", where) or {},
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
        rows = [self._run(r) for r in self._read(sql + " ORDER BY rowid", args)]
        if keys is not None:
            by = {r.key: r for r in rows}
            rows = [by[k] for k in dict.fromkeys(keys) if k in by]
        return rows

    def statuses(self, keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i:i + 500])
            q = f"SELECT key, status FROM runs WHERE key IN ({','.join('?' * len(chunk))})"
            out.update({r["key"]: r["status"] for r in self._read(q, chunk)})
        return out

    def epochs(self, key: str) -> list[dict[str, float | None]]:
        """Per-epoch metrics of one run as a list of ``{"epoch": e, name: value, ...}``."""
        rows: dict[int, dict[str, float | None]] = {}
        for r in self._read(
                "SELECT epoch, name, value FROM metrics WHERE key=? ORDER BY epoch", (key,)):
            rows.setdefault(r["epoch"], {"epoch": r["epoch"]})[r["name"]] = r["value"]
        return [rows[e] for e in sorted(rows)]

    def metric(self, key: str, name: str) -> list[tuple[int, float | None]]:
        """One metric's curve: ``[(epoch, value), ...]``."""
        return [(r[0], r[1]) for r in self._read(
            "SELECT epoch, value FROM metrics WHERE key=? AND name=? ORDER BY epoch",
            (key, name))]

    def artifacts(self, key: str) -> dict[str, str]:
        return {r["name"]: r["path"] for r in self._read(
            "SELECT name, path FROM artifacts WHERE key=?", (key,))}

    def sweeps(self, experiment: str | None = None, *,
               replicate: bool | None = None) -> list[SweepRow]:
        """Sweeps in order; ``replicate`` True/False keeps only replication/primary ones."""
        sql, args = "SELECT * FROM sweeps WHERE 1=1", []
        if experiment:
            sql += " AND experiment=?"
            args.append(experiment)
        out = []
        for r in self._read(sql + " ORDER BY id", args):
            j = self._loads
            where = f"sweep {r['id']}"
            cols = r.keys()
            out.append(SweepRow(
                id=r["id"], experiment=r["experiment"], scale=r["scale"],
                seeds=j(r["seeds"], where), options=j(r["options"], where),
                keys=j(r["keys"], where), versions=j(r["versions"], where),
                started=r["started"], finished=r["finished"],
                claims=j(r["claims"] if "claims" in cols else "[]", where),
                replicate=bool(r["replicate"]) if "replicate" in cols else False))
        # Filtered here, not in SQL: a store from an older lnlab, opened read-only, has no
        # replicate column (it holds primary sweeps only).
        return [s for s in out if replicate is None or s.replicate == replicate]

    def latest_sweeps(self, *, replicate: bool = False) -> list[SweepRow]:
        """The most recent primary sweep of each experiment and scale (``replicate=True``: the
        most recent replication sweeps), in order of first appearance: a store may hold one
        experiment at several scales (memorization's quick and paper runs)."""
        latest: dict[tuple[str, str], SweepRow] = {}
        for s in self.sweeps(replicate=replicate):
            latest[(s.experiment, s.scale)] = s
        return list(latest.values())

