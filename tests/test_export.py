"""``lnlab export``: every format is read back with its own library (or the csv module)."""

from __future__ import annotations

import csv
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnlab.cli import main
from lnlab.errors import LnlabError
from lnlab.export import FORMATS, export_runs, run_rows
from lnlab.runner.store import RunRow, Store

CONFIGS = {
    "k1": {"arm": "ln", "train": {"lr": 0.1, "seed": 0, "wd_exclude": ["norm"]}},
    "k2": {"arm": "rms", "train": {"lr": 0.01, "seed": 1, "wd_exclude": []}},
    "k3": {"arm": "none", "train": {"lr": 1, "seed": 2, "wd_exclude": []}},
}
# per-epoch histories: k2 has a missing (non-finite) value at epoch 2, k3 failed without any
HISTORY = {
    "k1": [{"epoch": 1, "train_acc": 0.5, "test_acc": 0.4, "grads": {"g2": 1.5}},
           {"epoch": 2, "train_acc": 0.75, "test_acc": 0.5, "grads": {"g2": 0.25}}],
    "k2": [{"epoch": 1, "train_acc": 0.25, "test_acc": 0.2},
           {"epoch": 2, "train_acc": math.nan, "test_acc": 0.3}],
}


@pytest.fixture
def store_dir(tmp_path):
    d = tmp_path / "results"
    with Store.open(d, create=True) as s:
        s.add_runs("demo", list(CONFIGS.items()))
        s.add_runs("other", [("o1", {"arm": "x"})])
        for key, status in (("k1", "finished"), ("k2", "diverged"), ("k3", "failed")):
            s.mark_running(key)
            s.record(key, status=status, epochs=HISTORY.get(key, ()), wall_time=1.5,
                     error="boom" if status == "failed" else None,
                     summary={"final_test_acc": HISTORY[key][-1]["test_acc"]}
                     if key in HISTORY else {})
    return d


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def expected_values(key):
    """(epoch, metric) → value, as the store flattens nested metrics; None where missing."""
    out = {}
    for ep in HISTORY.get(key, []):
        for name, v in ep.items():
            if isinstance(v, dict):
                out.update({(ep["epoch"], f"{name}.{k}"): w for k, w in v.items()})
            elif name != "epoch":
                out[(ep["epoch"], name)] = None if math.isnan(v) else v
    return out


def test_csv_round_trip(store_dir, tmp_path):
    res = export_runs(store_dir, tmp_path / "csv", "csv", experiment="demo")
    assert res.runs == 3 and res.values == sum(len(expected_values(k)) for k in HISTORY)
    runs = read_csv(tmp_path / "csv" / "runs.csv")
    assert [r["key"] for r in runs] == ["k1", "k2", "k3"]
    assert [r["status"] for r in runs] == ["finished", "diverged", "failed"]
    assert runs[0]["config.train.lr"] == "0.1" and runs[2]["error"] == "boom"
    assert json.loads(runs[0]["config.train.wd_exclude"]) == ["norm"]
    got = {(r["key"], int(r["epoch"]), r["metric"]): r["value"]
           for r in read_csv(tmp_path / "csv" / "metrics.csv")}
    want = {(k, e, n): "" if v is None else repr(v)
            for k in HISTORY for (e, n), v in expected_values(k).items()}
    assert got == want


def test_parquet_round_trip(store_dir, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    export_runs(store_dir, tmp_path / "pq", "parquet")
    runs = pd.read_parquet(tmp_path / "pq" / "runs.parquet")
    assert sorted(runs["key"]) == ["k1", "k2", "k3", "o1"]
    # lr 0.1 / 0.01 / 1 (an int) share one float column; "o1" has none
    lrs = dict(zip(runs["key"], runs["config.train.lr"], strict=True))
    assert lrs["k3"] == 1.0 and lrs["k2"] == 0.01 and pd.isna(lrs["o1"])
    m = pd.read_parquet(tmp_path / "pq" / "metrics.parquet")
    got = {(r.key, int(r.epoch), r.metric): (None if pd.isna(r.value) else r.value)
           for r in m.itertuples()}
    assert got == {(k, e, n): v for k in HISTORY for (e, n), v in expected_values(k).items()}


def test_tensorboard_round_trip(store_dir, tmp_path):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    pytest.importorskip("torch.utils.tensorboard")
    dest = tmp_path / "tb"
    res = export_runs(store_dir, dest, "tensorboard", experiment="demo")
    n_values = sum(v is not None for k in HISTORY for v in expected_values(k).values())
    assert res.runs == 3 and res.values == n_values  # the missing value is not written
    for key in HISTORY:
        acc = ea_mod.EventAccumulator(str(dest / "demo" / key),
                                      size_guidance={ea_mod.TENSORS: 0, ea_mod.SCALARS: 0})
        acc.Reload()
        got = {(ev.step, tag): ev.value for tag in acc.Tags()["scalars"]
               for ev in acc.Scalars(tag)}
        want = {k: v for k, v in expected_values(key).items() if v is not None}
        # the hyper-parameter view's metrics: the run's numeric summary
        want[(0, "summary/final_test_acc")] = HISTORY[key][-1]["test_acc"]
        assert set(got) == set(want)
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-6)  # event files store float32
        texts = {t: acc.Tensors(t) for t in acc.Tags()["tensors"]}
        config = [t for t in texts if t.startswith("config")]
        assert config, acc.Tags()
        raw = texts[config[0]][0].tensor_proto.string_val[0].decode()
        assert json.loads(raw.strip("`\n")) == CONFIGS[key]
    with pytest.raises(LnlabError, match="not an empty directory"):
        export_runs(store_dir, dest, "tensorboard")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside MLflow's SQLAlchemy store
def test_mlflow_round_trip(store_dir, tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    from mlflow.tracking import MlflowClient

    dest = tmp_path / "ml"
    res = export_runs(store_dir, dest, "mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{res.paths[0]}")
    exp = client.get_experiment_by_name("demo")
    runs = {r.data.tags["lnlab.key"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == set(CONFIGS)
    assert runs["k1"].data.params["train.lr"] == "0.1"
    assert runs["k1"].data.params["arm"] == "ln"
    assert runs["k3"].info.status == "FAILED" and runs["k2"].info.status == "FINISHED"
    assert runs["k2"].data.metrics["summary.final_test_acc"] == 0.3
    for key in HISTORY:
        rid = runs[key].info.run_id
        for (epoch, name), v in expected_values(key).items():
            hist = {m.step: m.value for m in client.get_metric_history(rid, name)}
            if v is None:
                assert epoch not in hist
            else:
                assert hist[epoch] == v
    assert client.get_experiment_by_name("other") is not None
    with pytest.raises(LnlabError, match="not an empty directory"):
        export_runs(store_dir, dest, "mlflow")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.booleans(), st.integers(-5, 5),
                          st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3),
                          st.lists(st.integers(), max_size=2)), min_size=1, max_size=5))
def test_run_rows_give_each_column_one_type(values):
    rows = run_rows([RunRow(key=str(i), experiment="e", config={"x": v}, status="finished")
                     for i, v in enumerate(values)])
    kinds = {type(r["config.x"]) for r in rows if r["config.x"] is not None}
    assert len(kinds) <= 1
    for r, v in zip(rows, values, strict=True):  # nothing is lost: the value or its text
        x = r["config.x"]
        if v is None:
            assert x is None
        elif isinstance(v, list):
            assert json.loads(x) == v
        elif isinstance(x, str) and not isinstance(v, str):
            assert x == str(v)
        else:
            assert x == v


def test_bad_input_is_a_user_error(store_dir, tmp_path, capsys):
    with pytest.raises(LnlabError, match="use one of"):
        export_runs(store_dir, tmp_path / "x", "wandb")
    with pytest.raises(LnlabError, match="it has: demo, other"):
        export_runs(store_dir, tmp_path / "x", "csv", experiment="nope")
    with pytest.raises(LnlabError, match="no results store"):
        export_runs(tmp_path / "missing", tmp_path / "x", "csv")
    assert main(["export", str(store_dir), "--to", "excel"]) == 2
    assert ", ".join(FORMATS) in capsys.readouterr().err


def test_cli_writes_default_destination(store_dir, capsys):
    assert main(["export", str(store_dir), "--to", "CSV", "--status", "failed"]) == 0
    assert "exported 1 runs (0 metric values) as csv" in capsys.readouterr().out
    rows = read_csv(store_dir / "export-csv" / "runs.csv")
    assert [r["key"] for r in rows] == ["k3"]
