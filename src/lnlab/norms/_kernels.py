"""Build, verify and load the fused CPU kernels of ``lnlab::norm_fwd`` / ``lnlab::norm_bwd``.

What is built: ``csrc/lnkernels.c`` (the kernels, plain C with OpenMP) compiled with the C
compiler, linked with ``csrc/lnops.cpp`` (their CPU and autograd registrations for the
dispatcher) into one shared library, loaded with ``torch.ops.load_library``. Why not
``torch.utils.cpp_extension``: the C file needs the C compiler (``restrict``, OpenMP simd
pragmas), and the cache below must be checked before anything is loaded.

The library is cached per source / compiler / CPU / torch build and written atomically, so
parallel workers can race to build it safely. Loading a shared library runs its code, so a
cached file is used only when it and its directory are owned by this user and not writable
by group or others, and its SHA-256 equals the one recorded beside it when it was built;
otherwise it is rebuilt, or (directory not safe) not loaded at all. Without a compiler the ops
fall back to composite PyTorch code (same results, slower) and ``kernel_status()`` says why.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

_SOURCES = ("lnkernels.c", "lnops.cpp")
_C_FLAG_SETS = (
    ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-fPIC", "-std=gnu11"],
    ["-O3", "-fno-math-errno", "-fopenmp", "-fPIC", "-std=gnu11"],
)


@dataclass(frozen=True)
class KernelStatus:
    available: bool
    path: str | None
    reason: str


def _cache_dir() -> Path:
    env = os.environ.get("LNLAB_CACHE_DIR")
    if env:
        return Path(env) / "kernels"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lnlab" / "kernels"


def _cpu_fingerprint() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unsafe(path: Path, st: os.stat_result | None = None) -> str | None:
    """Why ``path`` cannot be trusted (owner, permissions), or None when it can."""
    st = st or os.lstat(path)
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"{path} is owned by uid {st.st_uid}, not by this user"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by group or others"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    return None


def verify_cached(target: Path) -> str | None:
    """Check a cached library before loading it: None if it may be loaded, else the reason.

    The file and its recorded hash (``<name>.sha256``) must be regular files owned by this
    user, not writable by group/others, and the file's SHA-256 must equal the record.
    """
    record = target.with_suffix(".sha256")
    for p in (target, record):
        try:
            why = _unsafe(p)
        except OSError as e:
            return f"cannot check {p}: {e.strerror}"
        if why:
            return why
    try:
        expected = record.read_text().strip()
        actual = _sha256(target)
    except OSError as e:
        return f"cannot read {target}: {e.strerror}"
    if actual != expected:
        return f"{target} does not match the hash recorded when it was built"
    return None


def _unsafe_dir(d: Path) -> str | None:
    """A cache directory another user can write to could swap the library: do not use it."""
    try:
        st = os.stat(d)
    except OSError as e:
        return f"cannot check the kernel cache directory {d}: {e.strerror}"
    why = _unsafe(d, st)
    return f"kernel cache not used: {why}" if why else None


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _version(compiler: str) -> str:
    return _run([compiler, "--version"]).stdout


def _torch_flags() -> list[str]:
    from torch.utils.cpp_extension import include_paths, library_paths

    lib = library_paths()[0]
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [*(f"-I{p}" for p in include_paths()), f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            f"-L{lib}", f"-Wl,-rpath,{lib}", "-lc10", "-ltorch_cpu", "-ltorch"]


def _build(srcdir: Path, cc: str, cxx: str) -> tuple[Path | None, str]:
    texts = b"".join((srcdir / s).read_bytes() for s in _SOURCES)
    try:
        versions = _version(cc) + _version(cxx)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"compiler not usable: {e}"
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True, mode=0o755)
    why = _unsafe_dir(cache)
    if why:
        return None, why
    errors = []
    for cflags in _C_FLAG_SETS:
        key = hashlib.sha256(
            texts + " ".join(cflags).encode() + versions.encode() + _cpu_fingerprint().encode()
            + torch.__version__.encode() + sys.version.encode()
        ).hexdigest()[:16]
        target = cache / f"lnkernels-{key}.so"
        if target.exists() and verify_cached(target) is None:
            return target, "cached"
        with tempfile.TemporaryDirectory(dir=cache) as tmpd:
            obj, so = Path(tmpd) / "k.o", Path(tmpd) / "lib.so"
            proc = _run([cc, *cflags, "-c", "-o", str(obj), str(srcdir / _SOURCES[0])])
            if proc.returncode == 0:
                proc = _run([cxx, "-O2", "-std=c++20", "-fPIC", "-shared", "-w", "-o", str(so),
                             str(srcdir / _SOURCES[1]), str(obj), "-fopenmp", "-lm",
                             *_torch_flags()])
            if proc.returncode != 0:
                errors.append(proc.stderr.strip().splitlines()[-1:] or ["?"])
                continue
            os.chmod(so, 0o755)
            rec = Path(tmpd) / "lib.sha256"
            rec.write_text(_sha256(so) + "\n")
            os.chmod(rec, 0o644)
            # record first, library second: a reader that sees the new library sees its hash
            os.replace(rec, target.with_suffix(".sha256"))
            os.replace(so, target)  # atomic: a racing worker sees all or nothing
        return target, "compiled"
    return None, f"compilation failed: {errors}"


@functools.cache
def _load() -> KernelStatus:
    if os.environ.get("LNLAB_DISABLE_KERNELS", "") not in ("", "0"):
        return KernelStatus(False, None, "disabled by LNLAB_DISABLE_KERNELS")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cc or not cxx:
        return KernelStatus(False, None, "no C and C++ compiler found (set CC and CXX)")
    import lnlab.norms.ops  # noqa: F401  (the op schemas must exist before their kernels)

    with resources.as_file(resources.files("lnlab.norms") / "csrc") as srcdir:
        try:
            path, how = _build(Path(srcdir), cc, cxx)
        except OSError as e:
            path, how = None, f"kernel cache not usable: {e}"
    if path is None:
        if how.startswith("kernel cache not used"):
            warnings.warn(f"lnlab: {how}; using the composite code", stacklevel=2)
        return KernelStatus(False, None, how)
    why = verify_cached(path)  # re-check right before loading (another process may race)
    if why:
        return KernelStatus(False, None, f"not loaded: {why}")
    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError) as e:
        return KernelStatus(False, str(path), f"could not load: {e}")
    return KernelStatus(True, str(path), how)


@torch.compiler.assume_constant_result
def kernels_available() -> bool:
    """Whether the fused kernels are loaded; a constant to ``torch.compile`` (no file lookups
    are traced)."""
    return _load().available


def kernel_status() -> KernelStatus:
    """Whether the fused kernels are in use, where from, and why not if they are not."""
    return _load()
