import math
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnlab.errors import LnlabError
from lnlab.runner.config import canonical_json, expand_grid, flatten, run_key
from lnlab.runner.store import DB_NAME, Store, sanitize

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_data = st.recursive(json_leaf, lambda c: st.one_of(
    st.lists(c, max_size=3), st.dictionaries(st.text(max_size=5), c, max_size=3)), max_leaves=10)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_data, max_size=5))
def test_run_key_ignores_key_order_and_sees_every_change(cfg):
    reordered = dict(reversed(list(cfg.items())))
    assert run_key("e", cfg) == run_key("e", reordered)
    assert run_key("e", cfg) != run_key("f", cfg)
    assert run_key("e", cfg) != run_key("e", {**cfg, "__extra": 1})


def test_run_key_is_stable_across_versions():
    # a literal: if this changes, every existing results store would re-run everything
    assert canonical_json({"b": [1, 2.5], "a": None}) == '{"a":null,"b":[1,2.5]}'
    assert run_key("baselines", {"seed": 0}) == run_key("baselines", {"seed": 0})
    assert len(run_key("baselines", {"seed": 0})) == 16


def test_non_json_configs_are_refused():
    for bad in ({"x": (1, 2)}, {"x": math.nan}, {1: 2}, {"x": object()}):
        with pytest.raises(LnlabError):
            run_key("e", bad)


def test_expand_grid_order_paths_and_merged_axes():
    cfgs = expand_grid({"train": {"lr": 0.1}},
                       {"train.weight_decay": [0.0, 1e-4],
                        "arm": [{"arm": "ln", "train.norm": "layernorm"}]},
                       seeds=[0, 1], seed_path="train.seed")
    assert len(cfgs) == 4
    assert [c["train"]["seed"] for c in cfgs] == [0, 1, 0, 1]  # seeds vary fastest
    assert cfgs[2]["train"] == {"lr": 0.1, "weight_decay": 1e-4, "norm": "layernorm", "seed": 0}
    assert cfgs[0]["arm"] == "ln"
    with pytest.raises(LnlabError, match="non-empty list"):
        expand_grid({}, {"x": []})
    with pytest.raises(LnlabError, match="at least one seed"):
        expand_grid({}, {}, seeds=[])


def test_store_round_trip(tmp_path):
    cfg = {"arm": "a", "train": {"lr": 0.1, "seed": 3}}
    with Store.open(tmp_path, create=True) as s:
        s.add_runs("exp", [("k1", cfg), ("k2", {"arm": "b"})])
        s.add_runs("exp", [("k1", {"ignored": True})])  # existing keys are kept as they are
        s.mark_running("k1")
        (tmp_path / "a.bin").write_bytes(b"12345")
        s.record("k1", status="finished", summary={"acc": 0.5, "bad": math.inf},
                 epochs=[{"epoch": 1, "acc": 0.25, "norms": {"w": 2.0}, "note": "x"},
                         {"epoch": 2, "acc": 0.5, "loss": math.nan}],
                 artifacts={"a": tmp_path / "a.bin"}, wall_time=1.5, host="h")
    with Store.open(tmp_path) as s:  # reopened from disk
        (r1, r2) = s.runs()
        assert (r1.key, r1.config, r1.status, r1.attempts) == ("k1", cfg, "finished", 1)
        assert r1.summary == {"acc": 0.5, "bad": None}  # non-finite → null, valid JSON
        assert (r1.wall_time, r1.host) == (1.5, "h")
        assert r2.status == "pending"
        assert s.epochs("k1") == [{"epoch": 1, "acc": 0.25, "norms.w": 2.0},
                                  {"epoch": 2, "acc": 0.5, "loss": None}]
        assert s.metric("k1", "acc") == [(1, 0.25), (2, 0.5)]
        assert s.artifacts("k1") == {"a": str(tmp_path / "a.bin")}
        assert [r.key for r in s.runs(status=["pending"])] == ["k2"]
        assert [r.key for r in s.runs(keys=["k2", "k1", "zz"])] == ["k2", "k1"]
        with pytest.raises(LnlabError, match="unknown status"):
            s.runs(status=["done"])
    # plain SQL works too: the store is meant to be queried
    con = sqlite3.connect(tmp_path / DB_NAME)
    # WAL while the driver writes; rollback journal once closed, so read-only readers
    # (lnlab report / runs) need no -wal/-shm files and leave none behind
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    with Store.open(tmp_path, create=True) as s:
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM metrics WHERE key='k1' AND name='norms.w'"
                       ).fetchall() == [(2.0,)]


def test_record_is_all_or_nothing(tmp_path):
    with Store.open(tmp_path, create=True) as s:
        s.add_runs("exp", [("k1", {})])
        s.mark_running("k1")
        # make the last statement of the transaction fail, after the run row was updated
        s._conn.execute("CREATE TRIGGER boom BEFORE INSERT ON artifacts WHEN NEW.name='boom' "
                        "BEGIN SELECT RAISE(ABORT, 'boom'); END")
        with pytest.raises(sqlite3.IntegrityError):
            s.record("k1", status="finished", summary={"a": 1},
                     epochs=[{"epoch": 1, "x": 1.0}], artifacts={"boom": tmp_path})
        assert s.runs()[0].status == "running"
        assert s.epochs("k1") == []
        with pytest.raises(KeyError):
            s.record("nope", status="finished")


def test_stale_running_and_failed_runs_go_back_to_pending(tmp_path):
    with Store.open(tmp_path, create=True) as s:
        s.add_runs("exp", [("a", {}), ("b", {}), ("c", {})])
        s.mark_running("a")
        s.mark_running("b")
        s.record("b", status="failed", error="x")
        s.mark_running("c")
        s.record("c", status="diverged")
        assert s.reset_stale(["a", "b", "c"]) == 2
        assert s.statuses(["a", "b", "c"]) == {"a": "pending", "b": "pending", "c": "diverged"}


def test_open_without_store_does_not_create_one(tmp_path):
    with pytest.raises(LnlabError, match="no results store"):
        Store.open(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_sweeps_table_keeps_the_latest_per_experiment_and_scale(tmp_path):
    with Store.open(tmp_path, create=True) as s:
        s.begin_sweep("a", scale="quick", seeds=[0], options={}, keys=["0"], versions={})
        s.begin_sweep("a", scale="quick", seeds=[0], options={}, keys=["1"], versions={})
        i = s.begin_sweep("b", scale="quick", seeds=[0], options={}, keys=["2"], versions={})
        s.begin_sweep("a", scale="full", seeds=[0, 1], options={"o": "1"}, keys=["3"],
                      versions={"torch": "x"})
        s.end_sweep(i)
        latest = s.latest_sweeps()
        # one experiment at two scales (memorization's quick and paper runs) keeps both
        assert [(w.experiment, w.scale, w.keys) for w in latest] == [
            ("a", "quick", ["1"]), ("b", "quick", ["2"]), ("a", "full", ["3"])]
        assert latest[1].finished is not None and latest[2].options == {"o": "1"}


def test_runs_keep_their_environment_and_sweeps_their_role(tmp_path):
    env = {"torch": "2.0", "cpu_capability": "AVX2", "threads": 1}
    with Store.open(tmp_path, create=True) as s:
        s.add_runs("e", [("k", {}), ("j", {})])
        s.record("k", status="finished", environment=env)
        s.begin_sweep("e", scale="quick", seeds=[0], options={}, keys=["k"], versions={})
        s.begin_sweep("e", scale="quick", seeds=[1000], options={}, keys=["j"], versions={},
                      replicate=True)
    with Store.open(tmp_path) as s:
        assert s.runs(keys=["k"])[0].environment == env
        assert s.runs(keys=["j"])[0].environment == {}  # not run yet
        assert [(w.seeds, w.replicate) for w in s.latest_sweeps()] == [([0], False)]
        assert [w.seeds for w in s.latest_sweeps(replicate=True)] == [[1000]]
        assert [w.replicate for w in s.sweeps("e")] == [False, True]


def test_a_store_from_before_the_added_columns_is_upgraded_on_open(tmp_path):
    con = sqlite3.connect(tmp_path / DB_NAME)
    con.executescript("""
        CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE runs (key TEXT PRIMARY KEY, experiment TEXT NOT NULL,
            config TEXT NOT NULL, status TEXT NOT NULL, summary TEXT, error TEXT,
            created TEXT NOT NULL, started TEXT, finished TEXT, wall_time REAL, host TEXT,
            attempts INTEGER NOT NULL DEFAULT 0);
        INSERT INTO runs (key, experiment, config, status, summary, created)
            VALUES ('k', 'e', '{}', 'finished', '{"a": 1}', 'then');
        CREATE TABLE sweeps (id INTEGER PRIMARY KEY AUTOINCREMENT, experiment TEXT NOT NULL,
            scale TEXT NOT NULL, seeds TEXT NOT NULL, options TEXT NOT NULL,
            keys TEXT NOT NULL, versions TEXT NOT NULL, started TEXT NOT NULL, finished TEXT);
        INSERT INTO sweeps (experiment, scale, seeds, options, keys, versions, started)
            VALUES ('e', 'quick', '[0]', '{}', '["k"]', '{}', 'then');
        CREATE TABLE metrics (key TEXT NOT NULL, epoch INTEGER NOT NULL, name TEXT NOT NULL,
            value REAL);
        CREATE TABLE artifacts (key TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,
            bytes INTEGER);
    """)
    con.close()
    for create in (False, True):  # read-only: read with defaults; writable: upgraded
        with Store.open(tmp_path, create=create) as s:
            (run,) = s.runs()
            assert (run.summary, run.environment) == ({"a": 1}, {})
            (sw,) = s.latest_sweeps()
            assert (sw.claims, sw.replicate) == ([], False)
    with Store.open(tmp_path, create=True) as s:
        s.record("k", status="finished", environment={"threads": 1})
        assert s.runs()[0].environment == {"threads": 1}


def test_sanitize_and_flatten():
    import numpy as np

    assert sanitize({"a": (1, np.float32(0.5)), "b": float("nan")}) == {"a": [1, 0.5],
                                                                        "b": None}
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {"a.b": 1, "a.c": {}, "d": [1]}
