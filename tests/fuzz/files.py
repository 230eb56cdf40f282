"""Bad (and a few good) input files for the fuzz suite, written into a sandbox."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

GOOD_NPZ = "good.npz"


def good_npz(d: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(d / GOOD_NPZ, x=rng.normal(size=(40, 4)), y=np.arange(40) % 2)


def truncated_npz(d: Path) -> None:
    good_npz(d)
    raw = (d / GOOD_NPZ).read_bytes()
    (d / "trunc.npz").write_bytes(raw[: len(raw) // 2])


def pickled_npz(d: Path) -> None:
    np.savez(d / "pickled.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4))


def csv_single_class(d: Path) -> None:
    rows = "\n".join(f"{i},{i * 0.5},1" for i in range(30))
    (d / "one.csv").write_text("a,b,label\n" + rows + "\n")


def csv_text_feature(d: Path) -> None:
    (d / "text.csv").write_text("a,label\nx,0\ny,1\nz,0\nw,1\n")


def csv_empty(d: Path) -> None:
    (d / "empty.csv").write_text("")


def store(d: Path, name: str = "res") -> Path:
    from lnlab.runner.store import Store

    out = d / name
    with Store.open(out, create=True) as s:
        s.add_runs("toy", [("k1", {"a": 1})])
        s.begin_sweep("toy", scale="quick", seeds=[0], options={}, keys=["k1"], versions={})
    return out


def store_truncated(d: Path) -> None:
    out = store(d)
    db = out / "results.sqlite"
    raw = db.read_bytes()
    db.write_bytes(raw[: len(raw) // 3])


def store_garbage(d: Path) -> None:
    (d / "res").mkdir()
    (d / "res" / "results.sqlite").write_bytes(b"this is not a database\n" * 40)


def store_empty(d: Path) -> None:
    (d / "res").mkdir()
    (d / "res" / "results.sqlite").write_bytes(b"")


def store_foreign(d: Path) -> None:
    (d / "res").mkdir()
    con = sqlite3.connect(d / "res" / "results.sqlite")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()


def store_bad_json(d: Path) -> None:
    out = store(d)
    con = sqlite3.connect(out / "results.sqlite")
    con.execute("UPDATE runs SET config='{not json'")
    con.commit()
    con.close()


def store_dir(d: Path) -> None:
    (d / "res" / "results.sqlite").mkdir(parents=True)


def _ckpt(d: Path, **over: object) -> None:
    run = d / "run"
    (run / "ckpt").mkdir(parents=True)
    state = {"config": {}, "epoch": 1, "step": 4, "history": [], "optimizer": {},
             "store": {}, "wall_s": 1.0, "loop_s": 1.0,
             "tensors": "ckpt/epoch-000001.safetensors"}
    state.update(over)
    (run / "checkpoint.json").write_text(json.dumps(state))
    good_npz(d)


def ckpt_string_step(d: Path) -> None:
    _ckpt(d, step="four")


def ckpt_int_history(d: Path) -> None:
    _ckpt(d, history=3)


def ckpt_list(d: Path) -> None:
    _ckpt(d)
    (d / "run" / "checkpoint.json").write_text("[1, 2, 3]")


def ckpt_missing_field(d: Path) -> None:
    _ckpt(d)
    (d / "run" / "checkpoint.json").write_text(json.dumps({"epoch": 1}))


def ckpt_not_json(d: Path) -> None:
    _ckpt(d)
    (d / "run" / "checkpoint.json").write_text('{"epoch": 1, "ste')


def ckpt_escape(d: Path) -> None:
    (d / "other").mkdir()
    (d / "other" / "w.safetensors").write_bytes(b"x")
    _ckpt(d, tensors="../other/w.safetensors")


def ckpt_absolute(d: Path) -> None:
    _ckpt(d, tensors="/etc/passwd")


def ckpt_damaged_tensors(d: Path) -> None:
    _ckpt(d)
    (d / "run" / "ckpt" / "epoch-000001.safetensors").write_bytes(b"\x10\x00garbage")


def result_wrong_types(d: Path) -> None:
    (d / "run").mkdir()
    (d / "run" / "result.json").write_text(json.dumps({"status": 1, "epochs": {}}))
    good_npz(d)


def existing_file(d: Path) -> None:
    (d / "taken").write_text("mine\n")


def existing_dir(d: Path) -> None:
    (d / "adir").mkdir()


def readonly_dir(d: Path) -> None:
    (d / "ro").mkdir()
    (d / "ro").chmod(0o555)


def hf_auto_map(d: Path) -> None:
    m = d / "remote"
    m.mkdir()
    (m / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["Evil"], "vocab_size": 30, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
        "auto_map": {"AutoModel": "evil.EvilModel"}}))
    (m / "evil.py").write_text("raise SystemExit('custom code ran')\n")


def hf_pickle_only(d: Path) -> None:
    m = d / "pkl"
    m.mkdir()
    (m / "config.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16}))
    (m / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")


SETUPS: dict[str, Callable[[Path], None]] = {
    f.__name__: f for f in (
        good_npz, truncated_npz, pickled_npz, csv_single_class, csv_text_feature, csv_empty,
        store, store_truncated, store_garbage, store_empty, store_foreign, store_bad_json,
        store_dir, ckpt_string_step, ckpt_int_history, ckpt_list, ckpt_missing_field,
        ckpt_not_json, ckpt_escape, ckpt_absolute, ckpt_damaged_tensors, result_wrong_types,
        existing_file, existing_dir, readonly_dir, hf_auto_map, hf_pickle_only)
}
