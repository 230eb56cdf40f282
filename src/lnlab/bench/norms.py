"""Benchmark of every norm variant against native ``F.layer_norm`` in the same process.

Byte model (state it, so GB/s means something): a norm is memory-bound, so the minimum
traffic per element is 2 accesses forward (read x, write y) and 3 backward (read x and dy,
write dx); forward+backward is therefore 5 * M * N * bytes_per_element (parameters and
per-row statistics are O(M + N) and ignored). Effective GB/s = modelled bytes / median time.

Timing: median over interleaved repeats (variants take turns within each repeat, so slow
drift of the machine affects all of them alike); ratios are against the native baseline
with the same affine setting measured in the same run. ``clock="cpu"`` measures the process's
CPU time instead of wall time: on a machine shared with other jobs, time spent waiting for
a core then does not count (with several threads, OpenMP spin-waits do).

``compile=True`` adds each variant under ``torch.compile`` beside its eager form, so users see
what they get in both modes (the compile time itself is not timed).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from lnlab.io import write_atomic
from lnlab.norms import kernel_status, make_norm

DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((64, 256), (128, 128), (4096, 768), (16384, 1024))
QUICK_SHAPES: tuple[tuple[int, int], ...] = ((64, 256), (4096, 768))

# (label, spec, affine setting of the native baseline it is compared with)
VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("layernorm", "layernorm", "weight+bias"),
    ("layernorm_simple", "layernorm_simple", "none"),
    ("detachnorm", "detachnorm:detach=both", "none"),
    ("detachnorm:mean", "detachnorm:detach=mean", "none"),
    ("detachnorm:std", "detachnorm:detach=std", "none"),
    ("adanorm", "adanorm", "none"),
    ("groupln", "groupln:groups=8", "weight+bias"),  # groups: see _spec_for
    ("rmsnorm", "rmsnorm", "weight"),
    ("none", "none", "-"),
)

MALLOC_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "MALLOC_TOP_PAD_": "1073741824",
}
"""glibc settings that stop outputs >= 32 MiB from being mmap'ed afresh on every call (page
faults would otherwise dominate the large shape; see the perf anchors note)."""


@dataclass
class BenchRow:
    variant: str
    spec: str
    baseline: str
    shape: tuple[int, int]
    dtype: str
    device: str
    mode: str  # "fwd" or "fwd+bwd"
    median_ms: float
    gbps: float
    ratio_to_native: float | None
    ratio_to_best_native: float | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _native(affine: str, n: int, device, dtype):
    w = torch.ones(n, device=device, dtype=dtype, requires_grad=True) if affine != "none" else None
    b = (torch.zeros(n, device=device, dtype=dtype, requires_grad=True)
         if affine == "weight+bias" else None)
    params = [p for p in (w, b) if p is not None]
    return (lambda x: F.layer_norm(x, (n,), w, b)), params


def _spec_for(spec: str, n: int) -> str:
    """LN-G needs groups dividing the feature size: the largest divisor of n up to the one
    asked for (so ``--shapes 100x100`` runs groupln:groups=5)."""
    if not spec.startswith("groupln:groups="):
        return spec
    want = int(spec.split("=", 1)[1])
    return f"groupln:groups={max(g for g in range(1, want + 1) if n % g == 0)}"


def _make_case(spec: str, n: int, device, dtype):
    mod = make_norm(spec, n).to(device=device, dtype=dtype)
    return mod, list(mod.parameters())


def _compiled(mod: torch.nn.Module, backend: str) -> Callable:
    # dynamic=False: each shape gets its own graph, as a user's fixed-shape model would
    return torch.compile(mod, dynamic=False, backend=backend)


def run_bench(
    shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    repeats: int = 15,
    inner: int | None = None,
    variants: Iterable[tuple[str, str, str]] = VARIANTS,
    progress: Callable[[str], None] | None = None,
    compile: bool = False,
    clock: str = "wall",
    compile_backend: str = "inductor",
) -> list[BenchRow]:
    """Time fwd and fwd+bwd of each variant and of the native baselines; return rows."""
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    now = time.perf_counter if clock == "wall" else time.process_time
    device = torch.device(device)
    variants = list(variants)
    rows: list[BenchRow] = []
    esize = torch.empty((), dtype=dtype).element_size()
    for m, n in shapes:
        gen = torch.Generator(device="cpu").manual_seed(0)
        x0 = torch.randn(m, n, generator=gen).to(device=device, dtype=dtype)
        dy = torch.randn(m, n, generator=gen).to(device=device, dtype=dtype)
        cases: dict[str, tuple[Callable, list]] = {}
        for aff in ("weight+bias", "weight", "none"):
            cases[f"native[{aff}]"] = _native(aff, n, device, dtype)
        if compile:
            # variants share module code (DetachNorm's three settings, fwd under no_grad and
            # fwd+bwd): a fresh start per shape keeps them under dynamo's recompile limit, past
            # which it would silently run eager
            torch._dynamo.reset()
        specs = {}
        for label, spec, _ in variants:
            specs[label] = _spec_for(spec, n)
            cases[label] = _make_case(specs[label], n, device, dtype)
            if compile and spec != "none":
                mod, params = cases[label]
                specs[f"{label} [compiled]"] = specs[label]
                cases[f"{label} [compiled]"] = (_compiled(mod, compile_backend), params)
        reps_in = inner or max(1, min(50, int(2e6 // (m * n)) + 1))
        for mode in ("fwd", "fwd+bwd"):
            if progress:
                progress(f"{m}x{n} {mode}")
            x = x0.clone().requires_grad_(mode == "fwd+bwd")

            def call(fn, params, mode=mode, x=x, dy=dy):
                if mode == "fwd":
                    with torch.no_grad():
                        fn(x)
                else:
                    y = fn(x)
                    if y.requires_grad:
                        y.backward(dy)
                    x.grad = None
                    for p in params:
                        p.grad = None

            times: dict[str, list[float]] = {k: [] for k in cases}
            for _ in range(2):  # warm-up: also builds the kernel library on first use
                for fn, params in cases.values():
                    call(fn, params)
            for _ in range(repeats):
                for key, (fn, params) in cases.items():
                    _sync(device)
                    t0 = now()
                    for _ in range(reps_in):
                        call(fn, params)
                    _sync(device)
                    times[key].append((now() - t0) / reps_in)
            med = {k: statistics.median(v) for k, v in times.items()}
            nbytes = (2 if mode == "fwd" else 5) * m * n * esize
            best = min(t for k, t in med.items() if k.startswith("native["))
            for key, t in med.items():
                if key.startswith("native["):
                    base, spec, ratio = key, "F.layer_norm", 1.0
                else:
                    aff = next(a for lab, _, a in variants if key.split(" [")[0] == lab)
                    spec = specs[key]
                    base = f"native[{aff}]" if aff != "-" else "native[none]"
                    ratio = t / med[base]
                rows.append(BenchRow(key, spec, base, (m, n), str(dtype).replace("torch.", ""),
                                     str(device), mode, t * 1e3, nbytes / t / 1e9, ratio,
                                     t / best))
    return rows


def environment() -> dict:
    """Metadata stored next to the numbers: enough to tell two runs apart."""
    st = kernel_status()
    info = {
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "threads": torch.get_num_threads(),
        "kernels": {"available": st.available, "reason": st.reason},
        "malloc_env": {k: os.environ.get(k) for k in MALLOC_ENV},
        "byte_model": "fwd: 2*M*N*s, fwd+bwd: 5*M*N*s bytes (s = bytes per element)",
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_json(rows: list[BenchRow], path: str | os.PathLike) -> None:
    """Write rows + environment as JSON, atomically (temp file then rename)."""
    payload = {"environment": environment(), "rows": [asdict(r) for r in rows]}
    write_atomic(path, json.dumps(payload, indent=2))
