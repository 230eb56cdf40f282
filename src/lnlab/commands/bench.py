"""``lnlab bench norms``: time every norm variant against native LayerNorm."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lnlab.commands.options import flag
from lnlab.errors import LnlabError
from lnlab.limits import array_bytes, require_memory


def _parse_shapes(text: str | None, quick: bool) -> list[tuple[int, int]]:
    from lnlab.bench.norms import DEFAULT_SHAPES, QUICK_SHAPES

    if not text:
        return list(QUICK_SHAPES if quick else DEFAULT_SHAPES)
    shapes = []
    for part in text.split(","):
        try:
            if not part.isascii():  # int() would read full-width and other Unicode digits
                raise ValueError(part)
            m, n = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise LnlabError(f"bad --shapes {part!r}: expected ROWSxCOLS, e.g. 4096x768"
                             ) from None
        if m < 1 or n < 1:
            raise LnlabError(f"bad --shapes {part!r}: sizes must be positive")
        # input, output, gradients and saved statistics of the largest case, 8-byte floats
        require_memory(6 * array_bytes((m, n), 8), f"--shapes {part}")
        shapes.append((m, n))
    return shapes


def _check_output(path: str | None) -> None:
    """A --json path that cannot be written fails before minutes of benchmarking."""
    from pathlib import Path

    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise LnlabError(f"cannot write --json-out {p}: it is a directory")
    if p.parent.exists() and not p.parent.is_dir():
        raise LnlabError(f"cannot write --json-out {p}: {p.parent} is not a directory")


def _check_threads(threads: int | None) -> None:
    if threads is not None and threads < 0:
        raise LnlabError(f"--threads must be >= 1 (or omitted: leave as is), got {threads}")


def _maybe_reexec_with_malloc_env() -> None:
    """glibc only reads MALLOC_* at start-up, so re-run the process once with them set."""
    from lnlab.bench.norms import MALLOC_ENV

    if sys.platform != "linux" or os.environ.get("LNLAB_BENCH_NO_REEXEC"):
        return
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return
    env = {**os.environ, **MALLOC_ENV, "LNLAB_BENCH_NO_REEXEC": "1"}
    os.execve(sys.executable, [sys.executable, "-m", "lnlab", *sys.argv[1:]], env)


def register(app: typer.Typer) -> None:
    bench = typer.Typer(help="Benchmarks.", no_args_is_help=True)
    app.add_typer(bench, name="bench")

    @bench.command("norms")
    def bench_norms(
        shapes: str = typer.Option(None, help="comma-separated ROWSxCOLS (any sizes), default "
                                   "64x256,128x128,4096x768,16384x1024"),
        dtype: str = typer.Option("float32", help="float32 | float64 | bfloat16 | float16"),
        device: str = typer.Option("cpu", help="cpu | cuda"),
        repeats: int = typer.Option(15, min=1, help="timed repeats (median is reported)"),
        threads: int | None = typer.Option(None, help="torch CPU threads (default: leave as is)"),
        json_path: Annotated[Path | None, typer.Option(
            "--json-out", help="also write the results as JSON to this file")] = None,
        quick: bool = flag("--quick", "two shapes, 5 repeats"),
        compile: bool = flag("--compile", "also time every variant under torch.compile "
                             "(beside eager and native)"),
        clock: str = typer.Option("wall", help="wall | cpu (process CPU time: steadier on a "
                                  "machine shared with other jobs)"),
    ) -> None:
        """Forward and forward+backward time of every variant vs F.layer_norm."""
        import torch

        from lnlab.bench.norms import run_bench, write_json

        shape_list = _parse_shapes(shapes, quick)
        dt = getattr(torch, dtype, None)
        if not isinstance(dt, torch.dtype) or dtype not in (
            "float32", "float64", "bfloat16", "float16"
        ):
            raise LnlabError(f"unknown --dtype {dtype!r}: use float32, float64, bfloat16 or "
                             f"float16")
        if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
            raise LnlabError(f"--device {device!r} is not available here")
        _check_threads(threads)
        if clock not in ("wall", "cpu"):
            raise LnlabError(f"unknown --clock {clock!r}: use wall or cpu")
        _check_output(json_path)
        _maybe_reexec_with_malloc_env()
        if threads:
            torch.set_num_threads(threads)
        console = Console(width=max(Console().width, 132))
        with console.status("benchmarking") as status:
            rows = run_bench(shape_list, dt, device, repeats=5 if quick else repeats,
                             progress=lambda s: status.update(f"benchmarking {s}"),
                             compile=compile, clock=clock)
        for m, n in shape_list:
            table = Table(title=f"{m}x{n} {dtype} {device}, {torch.get_num_threads()} threads, "
                                f"{clock} clock")
            table.add_column("variant", no_wrap=True)
            table.add_column("baseline", no_wrap=True)
            for col in ("fwd ms", "fwd ratio", "fwd+bwd ms", "fwd+bwd GB/s", "fwd+bwd ratio",
                        "vs best"):
                table.add_column(col, justify="right", no_wrap=True)
            by: dict = {}
            for r in rows:
                if r.shape == (m, n):
                    by.setdefault(r.variant, {})[r.mode] = r
            for variant, d in by.items():
                f, fb = d["fwd"], d["fwd+bwd"]
                native = variant.startswith("native")
                ratio = f"{fb.ratio_to_native:.2f}x"
                if fb.ratio_to_native > 1.15:
                    ratio = f"[red]{ratio}[/]"
                base = "" if native else escape(f.baseline)
                table.add_row(escape(variant), base, f"{f.median_ms:.3f}",
                              f"{f.ratio_to_native:.2f}x", f"{fb.median_ms:.3f}",
                              f"{fb.gbps:.1f}", ratio, f"{fb.ratio_to_best_native:.2f}x")
            console.print(table)
        if json_path:
            write_json(rows, json_path)
            console.print(f"wrote {json_path}")
        console.print("GB/s = modelled bytes / median time; bytes: fwd 2*M*N*s, fwd+bwd 5*M*N*s "
                      "(s = bytes per element). ratio = time / native F.layer_norm with the same "
                      "affine setting, same run; 'vs best' = fwd+bwd time / the fastest "
                      "native setting.", style="dim")

    @bench.command("train")
    def bench_train(
        model: str = typer.Option("sequential-mlp", help="model spec, or sequential-mlp (the "
                                  "MNIST-1D MLP 40-100-100-10 as nn.Sequential)"),
        data: str = typer.Option("mnist1d", help="dataset spec"),
        epochs: int = typer.Option(20, min=1, help="epochs per timed run"),
        batch_size: int = typer.Option(100, min=1, help="batch size"),
        repeats: int = typer.Option(5, min=1, help="timed repeats (median is reported)"),
        threads: int | None = typer.Option(None, help="torch CPU threads (default: leave as is)"),
        json_path: Annotated[Path | None, typer.Option(
            "--json-out", help="also write the results as JSON to this file")] = None,
    ) -> None:
        """Steps/s of the lnlab trainer vs a hand-written PyTorch loop, same model and batch."""
        import torch

        from lnlab.bench.train import run_train_bench
        from lnlab.bench.train import write_json as write_train_json

        _check_threads(threads)
        _check_output(json_path)
        if model != "sequential-mlp":  # a bad spec fails before any data is generated
            from lnlab.models import parse_model_spec

            parse_model_spec(model)

        if threads:
            torch.set_num_threads(threads)
        console = Console(width=max(Console().width, 100))
        with console.status("benchmarking") as status:
            res = run_train_bench(model=model, data=data, epochs=epochs,
                                  batch_size=batch_size, repeats=repeats,
                                  progress=lambda s: status.update(f"benchmarking {s}"))
        table = Table(title=f"{escape(model)} on {escape(data)}, batch {batch_size}, "
                            f"{res.steps_per_run} steps/run, {res.threads} threads")
        table.add_column("loop")
        table.add_column("steps/s (median)", justify="right")
        table.add_column("hand / this", justify="right")
        table.add_column("CPU-time ratio", justify="right")
        for name, v, c in (
                ("hand-written PyTorch", res.hand_steps_per_s, 1.0),
                ("lnlab trainer (eval at end)", res.trainer_steps_per_s, res.ratio_cpu),
                ("lnlab trainer (eval every epoch)", res.trainer_eval_steps_per_s,
                 res.ratio_cpu_eval)):
            r = res.hand_steps_per_s / v
            table.add_row(name, f"{v:,.0f}", f"[red]{r:.2f}x[/]" if r > 1.2 else f"{r:.2f}x",
                          f"{c:.2f}x")
        console.print(table)
        console.print(f"ratio (step overhead) = {res.ratio:.3f} wall, {res.ratio_cpu:.3f} CPU "
                      f"time; with per-epoch evaluation = {res.ratio_eval:.3f} wall, "
                      f"{res.ratio_cpu_eval:.3f} CPU time", style="dim")
        if json_path:
            write_train_json(res, json_path)
            console.print(f"wrote {json_path}")
