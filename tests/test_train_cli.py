"""``lnlab train`` and ``lnlab bench train`` on the command line."""

from __future__ import annotations

import json

import pytest

from lnlab.cli import main

SMALL = ["--model", "mlp:depth=1,width=16", "--data", "clusters:n=200,dim=4,classes=3",
         "--epochs", "2", "--batch-size", "50", "--threads", "1"]


def test_train_cli_runs_and_writes_run_dir(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", *SMALL, "--norm", "rmsnorm", "--noise", "0.2", "--optimizer", "adamw",
               "--wd", "0.01", "--wd-exclude", "norm,bias", "--seed", "1", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "final_test_acc" in text and "final_mem" in text
    res = json.loads((out / "result.json").read_text())
    assert res["status"] == "finished" and len(res["epochs"]) == 2
    cfg = res["config"]
    assert cfg["norm"] == "rmsnorm" and cfg["noise"] == 0.2 and cfg["wd_exclude"] == [
        "norm", "bias"]
    assert (out / "labels.safetensors").is_file() and (out / "model.safetensors").is_file()


def test_train_cli_json(capsys):
    assert main(["train", *SMALL, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["summary"]["epochs_run"] == 2 and res["info"]["num_classes"] == 3


@pytest.mark.parametrize("args, msg", [
    (["--data", "nosuch"], "unknown dataset 'nosuch'"),
    (["--model", "nosuch"], "unknown model"),
    (["--norm", "nosuch"], "unknown norm"),
    (["--noise", "1.0"], "noise rate must be in [0, 1)"),
    (["--noise", "-0.5"], "noise rate must be in [0, 1)"),
    (["--optimizer", "lion"], "optimizer 'lion'"),
    (["--data", "{csv}:label=nope"], "no label column 'nope'"),
    (["--data", "{bad}"], "could not read"),
])
def test_train_cli_bad_input_exit_2_nothing_written(tmp_path, capsys, args, msg):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00garbage")
    args = [a.format(csv=csv, bad=bad) for a in args]
    out = tmp_path / "out"
    rc = main(["train", *SMALL, *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert msg in err and err.startswith("lnlab: error:") and err.count("\n") == 1
    assert not out.exists()


def test_bench_train_cli(tmp_path, capsys):
    path = tmp_path / "b.json"
    rc = main(["bench", "train", "--epochs", "1", "--repeats", "1", "--data",
               "clusters:n=400,dim=8,classes=4", "--threads", "1", "--json-out", str(path)])
    assert rc == 0
    assert "ratio" in capsys.readouterr().out
    res = json.loads(path.read_text())
    assert res["steps_per_run"] == 4
    for k in ("hand_steps_per_s", "trainer_steps_per_s", "trainer_eval_steps_per_s"):
        name = k.removesuffix("_steps_per_s")
        assert res[k] > 0 and len(res["samples"][name]) == 1
        assert len(res["samples"][f"{name}_cpu_s"]) == 1
    assert res["ratio"] == pytest.approx(res["hand_steps_per_s"] / res["trainer_steps_per_s"])
