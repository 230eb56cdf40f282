"""lnlab.io (atomic writes, JSON-safe values, schema validation, directory lock) and
lnlab.limits (memory checked before allocating)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lnlab.errors import LnlabError, one_line
from lnlab.io import atomic_path, dir_lock, json_safe, read_json, validated, write_atomic
from lnlab.limits import array_bytes, build_within_memory, fmt_bytes, require_memory


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    p = tmp_path / "a.txt"
    write_atomic(p, "old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        Path(tmp).write_text("half")
        raise RuntimeError("killed")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]  # no temp file left
    write_atomic(p, "new")
    assert p.read_text() == "new" and oct(p.stat().st_mode)[-3:] == "644"


def test_atomic_write_to_a_directory_or_under_a_file_is_a_user_error(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(LnlabError, match="it is a directory"):
        write_atomic(tmp_path / "d", "x")
    with pytest.raises(LnlabError, match="cannot write"):
        write_atomic(tmp_path / "f" / "x.csv", "x")
    assert (tmp_path / "f").read_text() == "x"


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3)
    | st.tuples(c, c), max_leaves=10))
def test_json_safe_output_is_strict_json(obj):
    text = json.dumps(json_safe(obj), allow_nan=False)
    assert json.loads(text) == json_safe(obj)


def test_json_safe_conversions():
    assert json_safe({"a": (1, np.float32(0.5)), 2: float("nan"), "t": torch.tensor(3)}) == {
        "a": [1, 0.5], "2": None, "t": 3}
    assert json_safe([math.inf, -math.inf, math.nan], nonfinite="str") == ["inf", "-inf", "nan"]


@dataclass
class _Schema:
    step: int
    lr: float
    history: list[dict[str, Any]]
    note: str | None = None


def test_validated_names_the_file_and_field(tmp_path):
    where = tmp_path / "s.json"
    ok = validated(_Schema, {"step": 1, "lr": 1, "history": [{}], "extra": 0}, where)
    assert ok == _Schema(1, 1, [{}])
    for bad, field in (({"step": "1", "lr": 1.0, "history": []}, "step"),
                       ({"step": True, "lr": 1.0, "history": []}, "step"),
                       ({"step": 1, "lr": "x", "history": []}, "lr"),
                       ({"step": 1, "lr": 1.0, "history": 3}, "history"),
                       ({"step": 1, "lr": 1.0, "history": [1]}, "history"),
                       ({"step": 1, "lr": 1.0, "history": [], "note": 5}, "note"),
                       ({"lr": 1.0, "history": []}, "step")):
        with pytest.raises(LnlabError, match=rf"s\.json is damaged: field '{field}'"):
            validated(_Schema, bad, where)
    with pytest.raises(LnlabError, match="expected a JSON object, found list"):
        validated(_Schema, [1], where)


def test_read_json_names_the_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{bad")
    with pytest.raises(LnlabError, match=r"could not read state .*x\.json"):
        read_json(p, "state")
    assert p.read_text() == "{bad"


def test_dir_lock_refuses_a_second_holder_and_cleans_up(tmp_path):
    with dir_lock(tmp_path, "testing"):
        with pytest.raises(LnlabError, match="another lnlab process is testing"), \
                dir_lock(tmp_path, "testing"):
            pass
        assert (tmp_path / ".lnlab.lock").exists()
    assert not (tmp_path / ".lnlab.lock").exists()
    with dir_lock(tmp_path, "testing"):  # free again
        pass
    (tmp_path / "f").write_text("x")
    with pytest.raises(LnlabError, match="is not a directory"), dir_lock(tmp_path / "f", "t"):
        pass


def test_one_line():
    assert one_line(ValueError("a\n\n  b  \n")) == "a; b"
    assert one_line(KeyError()) == "KeyError"


def test_require_memory_refuses_with_the_size_needed():
    require_memory(1000, "x", available=2000)
    with pytest.raises(LnlabError, match=r"x needs about 2\.0 GiB of memory; only 1\.0 GiB"):
        require_memory(2 * 1024**3, "x", available=1024**3)
    with pytest.raises(LnlabError, match="needs about"):
        require_memory(math.inf, "x", available=None)
    assert array_bytes((10**20, 10**20)) == 4e40  # no integer overflow
    assert fmt_bytes(512) == "512 B" and fmt_bytes(1536) == "1.5 KiB"


def test_build_within_memory_checks_on_the_meta_device():
    torch.manual_seed(0)
    a = build_within_memory(lambda: torch.nn.Linear(4, 3), "small")
    torch.manual_seed(0)
    b = torch.nn.Linear(4, 3)
    assert torch.equal(a.weight, b.weight)  # the meta build draws no random numbers
    assert a.weight.device.type == "cpu"
    with pytest.raises(LnlabError, match="big needs about"):
        build_within_memory(lambda: torch.nn.Linear(10**7, 10**7), "big")
    with pytest.raises(LnlabError, match="too large to build"):
        build_within_memory(lambda: torch.nn.Linear(4, 10**20), "absurd")


def test_a_permission_error_is_a_user_error_naming_the_file(tmp_path, monkeypatch):
    """What a read-only directory gives a non-root user (root ignores permissions)."""
    import tempfile

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(LnlabError, match=r"cannot write .*x\.csv: Permission denied"):
        write_atomic(tmp_path / "x.csv", "a")
    monkeypatch.setattr("os.open", denied)
    with pytest.raises(LnlabError, match=r"cannot write .*\.lnlab\.lock: Permission denied"), \
            dir_lock(tmp_path, "t"):
        pass


def test_a_store_that_cannot_be_written_is_a_user_error(tmp_path, monkeypatch):
    import sqlite3

    from lnlab.runner.store import Store

    with Store.open(tmp_path, create=True):
        pass
    real = sqlite3.connect

    def read_only(db, *a, **k):  # what a read-only directory or file gives the driver
        return real(f"{Path(db).resolve().as_uri()}?mode=ro", *a, uri=True, **k)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    with pytest.raises(LnlabError, match=r"cannot write results store .*results\.sqlite"):
        Store.open(tmp_path, create=True).add_runs("e", [("k", {})])
