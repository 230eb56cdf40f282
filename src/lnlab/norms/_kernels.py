"""Build and load the fused C kernels (``csrc/lnkernels.c``) on first use.

Why JIT with a C compiler rather than a torch C++ extension: the kernels work on raw
pointers, so they need no torch headers and compile in about a second; the shared library
is cached per source/compiler/CPU and written atomically, so parallel workers can race to
build it safely. Without a compiler every op falls back to composite PyTorch code (same
results, slower) and ``kernel_status()`` says why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch  # noqa: F401  (must be loaded first: its libgomp then serves our kernels too)

_SOURCE = "lnkernels.c"
_FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11"],
    ["-O3", "-fopenmp", "-shared", "-fPIC", "-std=gnu11"],
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


def _compile(src: Path, compiler: str) -> tuple[Path | None, str]:
    text = src.read_bytes()
    try:
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"C compiler {compiler!r} not usable: {e}"
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(
            text + " ".join(flags).encode() + version.encode() + _cpu_fingerprint().encode()
        ).hexdigest()[:16]
        target = _cache_dir() / f"lnkernels-{key}.so"
        if target.exists():
            return target, "cached"
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        proc = subprocess.run(
            [compiler, *flags, "-o", tmp, str(src), "-lm"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode == 0:
            os.replace(tmp, target)  # atomic: a racing worker sees all or nothing
            return target, "compiled"
        os.unlink(tmp)
        errors.append(proc.stderr.strip().splitlines()[-1:] or ["?"])
    return None, f"compilation failed: {errors}"


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, KernelStatus]:
    if os.environ.get("LNLAB_DISABLE_KERNELS", "") not in ("", "0"):
        return None, KernelStatus(False, None, "disabled by LNLAB_DISABLE_KERNELS")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None, KernelStatus(False, None, "no C compiler found (set CC)")
    with resources.as_file(resources.files("lnlab.norms") / "csrc" / _SOURCE) as src:
        path, how = _compile(Path(src), compiler)
    if path is None:
        return None, KernelStatus(False, None, how)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        return None, KernelStatus(False, str(path), f"could not load: {e}")
    i64, dbl, cint, ptr = ctypes.c_int64, ctypes.c_double, ctypes.c_int, ctypes.c_void_p
    for sfx in ("f32", "f64"):
        fwd = getattr(lib, f"lnk_forward_{sfx}")
        fwd.restype = None
        fwd.argtypes = [ptr] * 6 + [i64, i64, i64, dbl, cint, cint, dbl, dbl, cint]
        bwd = getattr(lib, f"lnk_backward_{sfx}")
        bwd.restype = None
        bwd.argtypes = [ptr] * 9 + [i64, i64, i64, cint, cint, cint, cint, dbl, dbl, cint]
    return lib, KernelStatus(True, str(path), how)


def kernel_lib() -> ctypes.CDLL | None:
    """The loaded kernel library, or None when the composite fallback must be used."""
    return _load()[0]


def kernel_status() -> KernelStatus:
    """Whether the fused kernels are in use, where from, and why not if they are not."""
    return _load()[1]
