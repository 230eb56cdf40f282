"""``lnlab audit MODEL``: which parameters can weight decay constrain in this model?

MODEL is a built-in model spec (``mlp:depth=4,width=64,norm=layernorm,residual=pre``) or
``hf:NAME``, a tiny randomly initialised Hugging Face model of that architecture built from a
config (no download). See :mod:`lnlab.analysis.scale_invariance`.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import typer
from torch import nn

from lnlab.errors import LnlabError


def tiny_hf_model(source: str, *, layers: int = 2, batch: int = 2, seq_len: int = 8,
                  seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A seeded tiny random HF base model (``lnlab.models.hf.build_hf``: an architecture name
    or a local config directory) and an example input dict for it."""
    from lnlab.models.hf import build_hf, hf_example_input

    if not source:
        raise LnlabError("hf: needs an architecture name or a local config directory")
    torch.manual_seed(seed)
    model = build_hf(source, layers=layers).eval()
    return model, hf_example_input(model, batch=batch, seq=seq_len, seed=seed)


def _parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise LnlabError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not vals:
        raise LnlabError(f"{what} is empty")
    return vals


def build_target(model: str, *, input_shape: str = "40", classes: int = 10,
                 vocab_size: int | None = None, batch: int = 8, layers: int = 2,
                 seed: int = 0) -> tuple[nn.Module, Any]:
    """The model named on the command line and a seeded example input for it."""
    if model.startswith("hf:"):
        return tiny_hf_model(model[3:], layers=layers, seed=seed)
    from lnlab.limits import array_bytes, build_within_memory, require_memory
    from lnlab.models import build_model

    shape = tuple(int(v) for v in _parse_floats(input_shape, "--input-shape"))
    require_memory(array_bytes((batch, *shape), 8), f"an example input of shape {shape}")
    torch.manual_seed(seed)  # the memory check's meta build draws no random numbers
    net = build_within_memory(lambda: build_model(model, input_shape=shape, num_classes=classes,
                                                  vocab_size=vocab_size), f"model {model!r}")
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
                                    "hf:NAME (tiny config, e.g. hf:bert, hf:gpt2; no download) "
                                    "or hf:PATH (a local config directory)"),
        input_shape: str = typer.Option("40", "--input-shape",
                                        help="one example's shape, e.g. 40 or 8,8"),
        classes: int = typer.Option(10, "--classes", help="number of output classes"),
        vocab_size: int = typer.Option(0, "--vocab-size",
                                       help="token ids in [0, N) (transformer); 0 = real input"),
        batch: int = typer.Option(8, "--batch", help="example batch size"),
        layers: int = typer.Option(2, "--layers", help="blocks of an hf:NAME tiny config"),
        seed: int = typer.Option(0, "--seed", help="seed for the weights and the input"),
        factors: str = typer.Option("0.1,0.5,2,10", "--factors",
                                    help="positive scale factors to try"),
        rtol: float = typer.Option(1e-10, "--rtol",
                                   help="'invariant' tolerance at eps=0 (1e-6 for models that "
                                   "compute norms in float32, e.g. hf:llama)"),
        as_json: bool = typer.Option(False, "--json", help="print machine-readable JSON"),
    ) -> None:
        """Which parameter groups are scale-invariant, so that weight decay cannot constrain
        them (float64, eps = 0 and real eps), and the penalty's infimum."""
        from lnlab.analysis.scale_invariance import VERDICTS, audit

        if batch < 1 or layers < 1:
            raise LnlabError(f"--batch and --layers must be positive, got {batch}, {layers}")
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
