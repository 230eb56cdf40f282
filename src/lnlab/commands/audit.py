"""``lnlab audit MODEL``: which parameters can weight decay constrain in this model?

MODEL is any spec :func:`lnlab.models.build_model` takes: a built-in model
(``mlp:depth=4,width=64,norm=layernorm,residual=pre``), ``hf:ARCH`` (a tiny randomly initialised
Hugging Face model built from a config, no download) or ``hf:PATH``; a Hugging Face model is
audited as its backbone. See :mod:`lnlab.analysis.scale_invariance`.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import typer
from torch import nn

from lnlab.commands.options import HF_LAYERS_HELP, deprecated_alias, json_flag
from lnlab.errors import LnlabError


def _parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise LnlabError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not vals:
        raise LnlabError(f"{what} is empty")
    return vals


def build_target(model: str, *, input_shape: str = "40", classes: int = 10,
                 vocab_size: int | None = None, batch: int = 8, layers: int | None = None,
                 seed: int = 0) -> tuple[nn.Module, Any]:
    """The model named on the command line and a seeded example input for it (an ``hf:``
    model's backbone and an input dict for it)."""
    from lnlab.commands.inspect import with_hf_layers
    from lnlab.limits import array_bytes, build_within_memory, require_memory
    from lnlab.models import build_model

    shape = tuple(int(v) for v in _parse_floats(input_shape, "--input-shape"))
    require_memory(array_bytes((batch, *shape), 8), f"an example input of shape {shape}")
    spec = with_hf_layers(model, layers)

    def build() -> nn.Module:
        torch.manual_seed(seed)
        return build_model(spec, input_shape=shape, num_classes=classes, vocab_size=vocab_size)

    # a built-in spec is sized on the meta device first; hf: models are tiny configs or
    # checkpoints that exist on disk already
    hf = model.strip().lower().startswith("hf:")
    net = build() if hf else build_within_memory(build, f"model {model!r}")
    if net.spec.name == "hf":
        from lnlab.models.hf import hf_example_input

        base = net.hf.base_model.eval()
        return base, hf_example_input(base, batch=2, seq=8, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    if vocab_size is not None:
        x = torch.randint(0, vocab_size, (batch, *shape), generator=g)
    else:
        x = torch.randn(batch, *shape, generator=g)
    return net, x


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit_cmd(
        model: str = typer.Argument(..., help="model spec, e.g. mlp:depth=4,residual=pre, "
                                    "hf:ARCH (tiny config, e.g. hf:bert, hf:gpt2:layers=6; no "
                                    "download) or hf:PATH (a local checkpoint directory)"),
        input_shape: str = typer.Option("40", "--input-shape",
                                        help="one example's shape, e.g. 40 or 8,8"),
        classes: int = typer.Option(10, "--num-classes", help="number of output classes"),
        _classes: int | None = deprecated_alias("--classes", "--num-classes", "classes"),
        vocab_size: int | None = typer.Option(None, "--vocab-size",
                                              help="token ids in [0, N) (transformer only); "
                                              "default: real-valued input"),
        batch: int = typer.Option(8, "--batch-size", help="example batch size"),
        _batch: int | None = deprecated_alias("--batch", "--batch-size", "batch"),
        layers: int | None = typer.Option(None, "--layers", help=HF_LAYERS_HELP),
        seed: int = typer.Option(0, "--seed", help="seed for the weights and the input"),
        factors: str = typer.Option("0.1,0.5,2,10", "--factors",
                                    help="positive scale factors to try"),
        rtol: float = typer.Option(1e-10, "--rtol",
                                   help="'invariant' tolerance at eps=0 (1e-6 for models that "
                                   "compute norms in float32, e.g. hf:llama)"),
        as_json: bool = json_flag(),
    ) -> None:
        """Which parameter groups are scale-invariant, so that weight decay cannot constrain
        them (float64, eps = 0 and real eps), and the penalty's infimum."""
        from lnlab.analysis.scale_invariance import VERDICTS, audit

        if batch < 1:
            raise LnlabError(f"--batch-size must be positive, got {batch}")
        net, x = build_target(model, input_shape=input_shape, classes=classes,
                              vocab_size=vocab_size or None, batch=batch, layers=layers,
                              seed=seed)
        if not 0 < rtol < 1:
            raise LnlabError(f"--rtol must be in (0, 1), got {rtol}")
        report = audit(net, x, factors=_parse_floats(factors, "--factors"), rtol=rtol,
                       model_name=model)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
            return
        from rich.console import Console

        console = Console()
        if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
            console = Console(width=140)
        console.print(report)
        used = {g.verdict for g in (*report.groups, *report.joint)}
        for v, meaning in VERDICTS.items():
            if v in used:
                console.print(f"  {v}: {meaning}", style="dim", highlight=False)
