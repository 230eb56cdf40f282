"""Resource limits checked before allocating: a size that cannot fit is refused up front.

Why: an allocation that cannot succeed either dies with an allocator traceback or, worse,
drives the machine into swap. Sizes from the command line (dataset sizes, shapes, model
widths) are therefore compared with the memory available *before* anything is allocated,
and the refusal says how much would be needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from lnlab.errors import LnlabError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["available_memory", "build_within_memory", "fmt_bytes", "require_memory"]

M = TypeVar("M", bound="nn.Module")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def require_memory(nbytes: float, what: str, *, available: int | None = None) -> None:
    """Refuse ``what`` if it needs more than the available memory (or an absurd amount)."""
    avail = available_memory() if available is None else available
    if not math.isfinite(nbytes) or (avail is not None and nbytes > avail):
        have = f"only {fmt_bytes(avail)} is available" if avail is not None else "too much"
        raise LnlabError(f"{what} needs about {fmt_bytes(nbytes)} of memory; {have}: "
                         f"choose smaller sizes")


def array_bytes(shape: tuple[int, ...] | list[int], itemsize: int = 4) -> float:
    """Bytes of a dense array of ``shape`` (a float, so absurd shapes do not overflow)."""
    return float(math.prod(float(s) for s in shape)) * itemsize


def build_within_memory(build: Callable[[], M], what: str) -> M:
    """Build a model after checking its parameters fit in memory.

    The model is first built on PyTorch's ``meta`` device, which records shapes but
    allocates nothing, so the check costs no memory. A model that cannot be built there
    (code that reads tensor values in ``__init__``) is built directly.
    """
    import torch

    try:
        with torch.device("meta"):
            meta = build()
    except (OverflowError, RuntimeError, TypeError, ValueError) as e:
        # torch reports a size beyond int64 as an OverflowError, or a TypeError/RuntimeError
        # whose message says so; anything else is left to the real build to report
        if isinstance(e, OverflowError) or "overflow" in str(e).lower():
            raise LnlabError(f"{what} is too large to build (a size overflows)") from None
        return build()
    nbytes = sum(float(t.numel()) * t.element_size()
                 for t in (*meta.parameters(), *meta.buffers()))
    require_memory(nbytes, what)
    del meta
    return build()
