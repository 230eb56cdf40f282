"""``lnlab inspect MODEL``: the norm sites of a model and whether it is Pre-LN or Post-LN."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from lnlab.commands.options import HF_LAYERS_HELP, deprecated_alias, json_flag
from lnlab.errors import LnlabError

if TYPE_CHECKING:
    from torch import nn


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise LnlabError(f"--input-shape must look like 40 or 8,8 or 3x8x8, got {text!r}"
                         ) from None
    if not shape or any(s < 1 for s in shape):
        raise LnlabError(f"--input-shape must be positive sizes, got {text!r}")
    return shape


def load_for_inspect(model: str, *, input_shape: tuple[int, ...] = (40,), num_classes: int = 10,
                     vocab_size: int | None = None, layers: int | None = None
                     ) -> tuple[nn.Module, Any, str]:
    """(model, example input, description) for any spec :func:`lnlab.models.build_model`
    takes; an ``hf:`` model is shown as its Hugging Face backbone (transformers' own names).
    ``layers`` overrides the block count of an ``hf:ARCH`` tiny config."""
    import torch

    from lnlab.limits import array_bytes, build_within_memory, require_memory
    from lnlab.models import build_model

    if vocab_size is not None and vocab_size < 2:
        raise LnlabError(f"--vocab-size must be at least 2, got {vocab_size}")
    def build() -> nn.Module:
        return build_model(with_hf_layers(model, layers), input_shape=input_shape,
                           num_classes=num_classes, vocab_size=vocab_size)

    if model.strip().lower().startswith("hf:"):  # tiny configs or checkpoints on disk
        m = build()
    else:
        require_memory(array_bytes((2, *input_shape), 8),
                       f"an example input of shape {input_shape}")
        m = build_within_memory(build, f"model {model!r}")
    if m.spec.name == "hf":
        from lnlab.models.hf import hf_example_input

        base = m.hf.base_model
        return (base, hf_example_input(base),
                f"{type(base).__name__} ({base.config.model_type}, "
                f"{'from ' + str(m.spec.source) if m.spec.path else str(m.spec)})")
    gen = torch.Generator().manual_seed(0)
    if vocab_size is not None:
        ex = torch.randint(0, vocab_size, (2, *input_shape), generator=gen)
    else:
        ex = torch.randn((2, *input_shape), generator=gen)
    return m, ex, m.spec.full()


def with_hf_layers(model: str, layers: int | None) -> str:
    """``model`` with ``layers=N`` added when it is an ``hf:ARCH`` spec and ``layers`` is set
    (the ``--layers`` flag of inspect and audit); other specs are returned unchanged."""
    if layers is None:
        return model
    if layers < 1:
        raise LnlabError(f"--layers must be positive, got {layers}")
    from lnlab.models import ModelSpec, parse_model_spec

    ms = parse_model_spec(model)
    if ms.name != "hf" or ms.path:
        return model
    return str(ModelSpec("hf", {**ms.options, "layers": layers}, ms.source))


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect_cmd(
        model: str = typer.Argument(..., help="a model spec (mlp:..., transformer:...), "
                                    "hf:ARCH (tiny config, e.g. hf:bert:layers=6) or hf:PATH"),
        as_json: bool = json_flag(),
        input_shape: str = typer.Option("40", "--input-shape",
                                        help="one example's shape for built-in specs"),
        num_classes: int = typer.Option(10, "--num-classes",
                                        help="number of output classes (built-in specs)"),
        _classes: int | None = deprecated_alias("--classes", "--num-classes", "num_classes"),
        vocab_size: int | None = typer.Option(None, "--vocab-size",
                                              help="token ids in [0, N) (transformer only); "
                                              "default: real-valued input"),
        layers: int | None = typer.Option(None, "--layers", help=HF_LAYERS_HELP),
    ) -> None:
        """List a model's norm sites (forward order, block, group) and its LN placement."""
        from lnlab.surgery import find_norms, norm_placement

        m, example, desc = load_for_inspect(
            model, input_shape=_parse_shape(input_shape), num_classes=num_classes,
            vocab_size=vocab_size, layers=layers)
        sites = find_norms(m, example)
        placement = norm_placement(m, example)
        n_params = sum(p.numel() for p in m.parameters())
        n_affine = sum(s.module._parameters[p].numel() for s in sites
                       for p in ("weight", "bias") if (s.has_gain, s.has_bias)[p == "bias"])
        groups = Counter(s.group for s in sites)
        if as_json:
            typer.echo(json.dumps({
                "model": model, "description": desc,
                "placement": {"kind": placement.kind, "label": placement.label,
                              "evidence": placement.evidence},
                "n_sites": len(sites), "groups": dict(groups),
                "parameters": n_params, "norm_affine_parameters": n_affine,
                "sites": [s.to_dict() for s in sites],
            }, indent=2))
            return
        cols = ("#", "name", "class", "shape", "eps", "gain", "bias", "block", "group")
        rows = [(str(s.order), s.name or "(root)", s.cls, "x".join(map(str, s.shape)),
                 "-" if s.eps is None else f"{s.eps:g}", "yes" if s.has_gain else "no",
                 "yes" if s.has_bias else "no",
                 "-" if s.block is None else f"{s.block}/{s.n_blocks}", s.group)
                for s in sites]
        table = Table(title=f"norm sites of {model}")
        for col in cols:
            table.add_column(col, justify="right" if col in ("#", "eps") else "left",
                             no_wrap=True)
        for row in rows:
            table.add_row(*row)
        # Never truncate names: widen the console to fit the table.
        need = sum(max(len(c), *(len(r[i]) for r in rows)) + 3
                   for i, c in enumerate(cols)) + 1 if rows else 0
        console = Console()
        console = Console(width=max(console.width, need))
        console.print(desc, style="dim")
        console.print(table)
        summary = ", ".join(f"{g} {groups[g]}" for g in
                            ("embedding", "early", "middle", "later", "final") if groups[g])
        console.print(f"{len(sites)} norm sites ({summary or 'none'}); "
                      f"{n_affine} of {n_params} parameters are norm gains/biases")
        console.print(f"placement: {placement}")
