"""Shared set-up for the fuzz suite: an isolated home, cache and working directory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with its content hash and mode: a command that
    fails on bad input must leave this unchanged."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath, d)
            out[str(p.relative_to(root)) + "/"] = oct(p.stat().st_mode)
        for f in filenames:
            p = Path(dirpath, f)
            if p.is_symlink():
                out[str(p.relative_to(root))] = "-> " + os.readlink(p)
                continue
            st = p.stat()
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest()
                                             + oct(st.st_mode))
    return out


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """``tmp_path`` as the working directory, home and lnlab cache; no kernel builds and no
    benchmark re-exec, so every file a command could write lands where it is checked."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("LNLAB_CACHE_DIR", str(home / ".cache" / "lnlab"))
    monkeypatch.setenv("LNLAB_DISABLE_KERNELS", "1")
    monkeypatch.setenv("LNLAB_BENCH_NO_REEXEC", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path
