"""``lnlab lnnet``: explicit width-3 LN-Nets (construction, VC demo), SSR/LSSR, LN-G curvature."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from lnlab.commands.options import deprecated_alias, json_flag
from lnlab.errors import LnlabError
from lnlab.io import json_safe
from lnlab.limits import array_bytes, require_memory


def _strict(obj: object) -> object:
    """JSON-safe copy for printing: non-finite floats become "inf" / "-inf" / "nan"."""
    return json_safe(obj, nonfinite="str")


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        help="LayerNorm's nonlinearity (Ni et al. 2024): explicit LN-Nets, SSR/LSSR, LN-G.",
        no_args_is_help=True,
    )

    @sub.command("construct")
    def construct_cmd(
        points: int = typer.Option(40, "--points", "-m", help="number of random points"),
        classes: int = typer.Option(2, "--num-classes", "-k", help="number of label classes"),
        _classes: int | None = deprecated_alias("--classes", "--num-classes", "classes"),
        dim: int = typer.Option(2, "--dim", "-d", help="input dimension"),
        seed: int = typer.Option(0, "--seed", help="seed of the points and labels"),
        strategy: str = typer.Option("project", "--strategy",
                                     help="merge step: project (default) or fold (notes)"),
        plot: Annotated[Path | None, typer.Option(
            "--plot-out", help="draw the construction layer by layer (2-D) to this image "
            "file")] = None,
        _plot: str | None = deprecated_alias("--plot", "--plot-out", "plot"),
        as_json: bool = json_flag(),
    ) -> None:
        """Build a width-3 LN-Net for random points and labels; report layers and accuracy."""
        import torch

        from lnlab.analysis.lnnet import (
            construct,
            evaluate_accuracy,
            plot_construction,
            random_problem,
        )

        if classes < 2:
            raise LnlabError(f"--num-classes must be >= 2, got {classes}")
        if plot is not None and dim != 2:
            raise LnlabError("--plot-out needs --dim 2")
        if plot is not None and (plot.is_dir() or not plot.parent.is_dir()):
            why = "it is a directory" if plot.is_dir() else f"{plot.parent} is not a directory"
            raise LnlabError(f"cannot write --plot-out {plot}: {why}")
        # one LN layer (a small module, a few KiB with its tensors) per point
        require_memory(4096.0 * points + array_bytes((points, dim), 8),
                       f"an LN-Net for {points} points")
        X, y = random_problem(points, dim, classes, seed)
        t0 = time.perf_counter()
        c = construct(X, y, strategy=strategy)
        secs = time.perf_counter() - t0
        acc, margin = evaluate_accuracy(c.model, X, y)
        acc32, _ = evaluate_accuracy(c.model, X, y, dtype=torch.float32)
        expected = points - classes + (1 if dim == 1 else 0)
        row = {
            "points": points, "classes": classes, "dim": dim, "seed": seed,
            "strategy": strategy, "ln_layers": c.num_ln_layers, "expected_layers": expected,
            "width": c.width, "train_accuracy": acc, "train_accuracy_float32": acc32,
            "min_margin": margin, "min_gap": c.min_gap, "seconds": round(secs, 3),
        }
        if plot is not None:
            row["plot"] = str(plot_construction(X, y, plot, strategy=strategy))
        if as_json:
            typer.echo(json.dumps(_strict(row), indent=2))
            return
        typer.echo(
            f"LN-Net for {points} points in R^{dim}, {classes} classes (seed {seed}, "
            f"{strategy}):\n"
            f"  LN layers        {c.num_ln_layers} (m - K{' + 1' if dim == 1 else ''} = "
            f"{expected})\n"
            f"  width            {c.width} (+ input map R^{dim}->R^3, readout R^3->R^{classes})\n"
            f"  train accuracy   {acc:.4f} float64, {acc32:.4f} float32\n"
            f"  smallest margin  {margin:.3e} (true logit - best other)\n"
            f"  smallest gap     {c.min_gap:.3e} rad between representatives\n"
            f"  built in         {secs:.2f} s"
        )
        if plot is not None:
            typer.echo(f"  drawing          {row['plot']}")

    @sub.command("vc")
    def vc_cmd(
        layers: int = typer.Option(4, "--layers", "-L", help="number of LN layers L"),
        seed: int = typer.Option(0, "--seed", help="seed of the L+2 points"),
        as_json: bool = json_flag(),
    ) -> None:
        """Fit all 2^(L+2) labellings of L+2 random points with L LN layers of width 3."""
        from lnlab.analysis.lnnet import vc_demo

        t0 = time.perf_counter()
        r = vc_demo(layers, seed=seed)
        row = {"layers": r.layers, "points": r.points, "labellings": r.labellings,
               "fitted": r.fitted, "max_layers_used": r.max_layers_used,
               "min_margin": r.min_margin, "shattered": r.shattered,
               "seconds": round(time.perf_counter() - t0, 2)}
        if as_json:
            typer.echo(json.dumps(_strict(row), indent=2))
            return
        typer.echo(
            f"L = {r.layers} LN layers, width 3: {r.fitted}/{r.labellings} labellings of "
            f"{r.points} points fitted (at most {r.max_layers_used} layers used, smallest "
            f"margin {r.min_margin:.2e}) -> VC dimension >= {r.points}"
            + ("" if r.shattered else "  [NOT shattered]")
        )

    @sub.command("ssr")
    def ssr_cmd(
        points: int = typer.Option(40, "--points", "-m", help="points of the random checks"),
        seed: int = typer.Option(0, "--seed", help="seed"),
        trials: int = typer.Option(200, "--trials", help="random maps per check"),
        as_json: bool = json_flag(),
    ) -> None:
        """LSSR: affine maps never lower it; Linear+LN layers can (XOR, random, constructed)."""
        import numpy as np

        from lnlab.analysis.lnnet import construct, random_problem
        from lnlab.analysis.ssr import (
            lssr_per_layer,
            random_linear_check,
            random_ln_layer_check,
            xor_example,
        )

        if points < 4:
            raise LnlabError(f"--points must be >= 4, got {points}")
        if trials < 1:
            raise LnlabError(f"--trials must be >= 1, got {trials}")
        rng = np.random.default_rng(seed)
        X6 = rng.standard_normal((points, 6))
        y3 = rng.integers(0, 3, points)
        lin = random_linear_check(X6, y3, trials=trials, seed=seed)
        X3 = rng.standard_normal((points, 3))
        ln = random_ln_layer_check(X3, y3, trials=trials, seed=seed)
        Xc, yc = random_problem(min(points, 30), 2, 2, seed)
        per_layer = lssr_per_layer(construct(Xc, yc).model, Xc, yc)
        row = {"xor": xor_example(),
               "linear_maps": {"trials": lin.trials, "violations": lin.violations,
                               "min_ratio": lin.min_ratio},
               "random_ln_layers": {"trials": ln.trials, "below_input": ln.below,
                                    "input_lssr": ln.input_lssr, "min_lssr": ln.min_lssr},
               "constructed_net": {"input": per_layer[0], "output": per_layer[-1]}}
        if as_json:
            typer.echo(json.dumps(_strict(row), indent=2))
            return
        x = row["xor"]
        typer.echo(f"XOR: LSSR input {x['input']}, affine image {x['linear_image']}, "
                   f"after Linear(2->3)+LN {x['after_ln']:.4g}")
        typer.echo(f"random affine maps (d=6, {points} points, 3 classes): "
                   f"{lin.violations}/{lin.trials} lowered LSSR (min ratio {lin.min_ratio:.6f})")
        typer.echo(f"random Linear(3->3)+LN layers: {ln.below}/{ln.trials} went below the "
                   f"input LSSR {ln.input_lssr:.4g} (lowest {ln.min_lssr:.4g})")
        typer.echo(f"constructed LN-Net ({len(Xc)} points): LSSR {per_layer[0]:.4g} -> "
                   f"{per_layer[-1]:.3g} after {len(per_layer) - 1} layers")

    @sub.command("curvature")
    def curvature_cmd(
        dim: int = typer.Option(64, "--dim", "-d", help="feature size"),
        groups: str = typer.Option("1,2,4,8,16", "--groups", help="comma-separated g values"),
        samples: int = typer.Option(4000, "--samples", help="Gaussian inputs"),
        seed: int = typer.Option(0, "--seed", help="seed"),
        as_json: bool = json_flag(),
    ) -> None:
        """Hessian nonlinearity H of LN-G vs the group number (closed form, Gaussian x)."""
        from lnlab.analysis.nonlinearity import group_curve

        try:
            if not groups.isascii():  # int() would read full-width and other Unicode digits
                raise ValueError(groups)
            gs = tuple(int(v) for v in groups.split(","))
        except ValueError:
            raise LnlabError(f"--groups must be integers like 1,2,4: {groups!r}") from None
        if dim < 1 or samples < 2:
            raise LnlabError(f"--dim must be >= 1 and --samples >= 2, got {dim}, {samples}")
        require_memory(2 * array_bytes((samples, dim), 8), f"{samples} samples of size {dim}")
        pts = group_curve(dim, gs, samples, seed)
        if as_json:
            typer.echo(json.dumps(_strict([p.__dict__ for p in pts]), indent=2))
            return
        typer.echo(f"{'g':>4} {'size':>5} {'median H':>11} {'H/H(LN)':>8} "
                   f"{'equal-var H':>11} {'median |J|^2':>12}")
        for p in pts:
            typer.echo(f"{p.groups:>4} {p.group_size:>5} {p.median_h:>11.4g} "
                       f"{p.ratio_to_ln:>8.3g} {p.equal_variance_h:>11.4g} "
                       f"{p.median_jac:>12.4g}")

    app.add_typer(sub, name="lnnet")
