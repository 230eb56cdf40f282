"""What a run's numbers depend on besides its config: library versions and the CPU.

On one machine a run is bitwise reproducible from its config (the worker pins the thread
count the experiment asks for, and every random stream is seeded from the config). Across
machines or installs the same config can still give other floating-point results: a new
torch or numpy changes kernels, and torch dispatches its CPU kernels on the instruction set
(AVX2 vs AVX-512 vectorize reductions differently), and lnlab's fused norm kernels are
compiled for the CPU at hand (or replaced by composite torch code without a compiler). So the
worker records all of that with each run, and a reader comparing two stores can see whether a
difference is expected.
"""

from __future__ import annotations

import contextlib
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["NUMERIC_LIBRARIES", "cpu_capability", "norm_kernels", "run_environment",
           "versions"]

# Distributions whose version can change a number lnlab computes (kernels, data generation,
# reference implementations, statistics). Missing ones are left out, never guessed.
NUMERIC_LIBRARIES = ("torch", "numpy", "scipy", "scikit-learn", "transformers", "mnist1d")


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """``{"python": ..., "lnlab": ..., "torch": ..., ...}`` for the installed libraries."""
    import lnlab

    out = {"python": platform.python_version(), "lnlab": lnlab.__version__}
    for dist in (*NUMERIC_LIBRARIES, *extra):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def cpu_capability() -> str:
    """The instruction set torch's CPU kernels dispatch on (``AVX2``, ``AVX512``, ``DEFAULT``…)."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # very old torch: unknown rather than wrong
        return "unknown"


def norm_kernels() -> str | None:
    """``fused (<library>)`` or ``composite (<why>)`` if this process loaded lnlab's norms
    (the library's name hashes its compiler, flags and CPU), else None."""
    norms = sys.modules.get("lnlab.norms")
    if norms is None:
        return None
    try:
        st = norms.kernel_status()
    except Exception as e:  # e.g. a compiler that hangs: the run's record must not fail
        return f"unknown ({type(e).__name__})"
    return f"fused ({Path(st.path).name})" if st.available and st.path else \
        f"composite ({st.reason})"


def run_environment() -> dict[str, Any]:
    """Everything recorded with one run, read in the process that ran it, at its end.

    Read in the worker, not the driver: on a cluster the two can be different machines.
    ``threads`` / ``interop_threads`` are torch's settings while the run executes.
    """
    import torch

    out = {**versions(), "machine": platform.machine(), "cpu_capability": cpu_capability(),
           "threads": torch.get_num_threads(),
           "interop_threads": torch.get_num_interop_threads()}
    kernels = norm_kernels()
    if kernels is not None:
        out["norm_kernels"] = kernels
    return out
