"""The kernel cache is checked before a library is loaded (loading a library runs its code).

The compiler is replaced by a stand-in that writes a file per output, so these tests exercise
the cache logic (hash record, ownership, permissions, rebuild, refusal) in milliseconds.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lnlab.norms import _kernels as K

pytestmark = pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")


@pytest.fixture
def fake_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A cache under tmp_path and a 'compiler' that records how often it was run."""
    monkeypatch.setenv("LNLAB_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[list[str]] = []

    def run(cmd: list[str]) -> subprocess.CompletedProcess:
        calls.append(cmd)
        if "-o" in cmd:
            Path(cmd[cmd.index("-o") + 1]).write_bytes(f"built {len(calls)}".encode())
        return subprocess.CompletedProcess(cmd, 0, stdout="fake 1.0", stderr="")

    monkeypatch.setattr(K, "_run", run)
    monkeypatch.setattr(K, "_torch_flags", lambda: [])
    srcdir = Path(__file__).parents[2] / "src" / "lnlab" / "norms" / "csrc"

    def build() -> tuple[Path | None, str]:
        return K._build(srcdir, "cc", "c++")

    build.calls = calls
    return build


def test_built_then_cached(fake_build) -> None:
    path, how = fake_build()
    assert how == "compiled" and K.verify_cached(path) is None
    n = len(fake_build.calls)
    assert fake_build() == (path, "cached")
    assert len(fake_build.calls) == n + 2  # only the two --version probes


@pytest.mark.parametrize("tamper", ["content", "group-writable", "other-writable",
                                    "record-missing", "symlink"])
def test_tampered_library_is_rebuilt(fake_build, tamper: str, tmp_path: Path) -> None:
    path, _ = fake_build()
    if tamper == "content":
        path.write_bytes(b"something else")
    elif tamper == "group-writable":
        os.chmod(path, 0o775)
    elif tamper == "other-writable":
        os.chmod(path, 0o757)
    elif tamper == "record-missing":
        path.with_suffix(".sha256").unlink()
    else:
        other = tmp_path / "elsewhere.so"
        other.write_bytes(path.read_bytes())
        os.chmod(other, 0o755)
        path.unlink()
        path.symlink_to(other)
    reason = K.verify_cached(path)
    assert reason and "\n" not in reason
    assert path.name in reason or "cannot" in reason
    path2, how = fake_build()
    assert (path2, how) == (path, "compiled")
    assert K.verify_cached(path) is None and not path.is_symlink()


def test_other_writable_cache_directory_is_refused(fake_build) -> None:
    path, _ = fake_build()
    os.chmod(path.parent, 0o777)
    try:
        assert fake_build() == (None, f"kernel cache not used: {path.parent} is writable by "
                                      "group or others")
    finally:
        os.chmod(path.parent, 0o755)


def test_owned_by_someone_else_is_refused(fake_build, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = fake_build()
    monkeypatch.setattr(os, "getuid", lambda: os.stat(path).st_uid + 1)
    assert "not by this user" in K.verify_cached(path)
    assert fake_build()[0] is None  # the directory is not ours either: refused, no build
