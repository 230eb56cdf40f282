"""``lnlab train``: one training run from the command line, with a progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from lnlab.commands.config_file import CONFIG_OPTION
from lnlab.commands.options import flag, json_flag, with_label


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "-" if v is None else str(v)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        config: Path | None = CONFIG_OPTION,
        model: str = typer.Option("mlp", help="model spec, e.g. mlp:depth=2,width=100 "
                                  "(see lnlab inspect)"),
        norm: str = typer.Option(None, help="norm spec replacing the model's, e.g. "
                                 "layernorm, rmsnorm, none"),
        data: str = typer.Option("mnist1d", help="dataset spec or file path (.npz, .csv, "
                                 ".parquet, a saved Hugging Face dataset folder)"),
        label: str = typer.Option(None, help="label column of a table or Hugging Face dataset "
                                  "file (same as --data FILE:label=COLUMN)"),
        data_seed: int = typer.Option(0, help="seed for synthetic data / random file splits"),
        noise: float = typer.Option(0.0, help="share of training labels flipped, in [0, 1)"),
        random_labels: bool = flag("--random-labels", "redraw every training label"),
        optimizer: str = typer.Option("adam", help="sgd | adam | adamw"),
        lr: float = typer.Option(1e-3, help="learning rate"),
        momentum: float = typer.Option(0.9, help="SGD momentum"),
        wd: float = typer.Option(0.0, "--wd", help="weight decay"),
        wd_exclude: str = typer.Option("", help="comma-separated groups (norm, bias, "
                                       "embedding, readout) or name globs without decay"),
        schedule: str = typer.Option("constant", help="constant | step | cosine"),
        warmup: float = typer.Option(0.0, help="linear warm-up epochs"),
        epochs: int = typer.Option(10, help="epochs"),
        batch_size: int = typer.Option(100, help="batch size"),
        stop_at_train_acc: float = typer.Option(None, help="stop at this train accuracy"),
        clip: float = typer.Option(None, help="clip the gradient norm at this value"),
        seed: int = typer.Option(0, help="seed (init, data order, noise)"),
        eval_every: int = typer.Option(1, help="epochs between evaluations"),
        checkpoint_every: int = typer.Option(10, help="epochs between checkpoints (with --out)"),
        device: str = typer.Option("cpu", help="cpu | auto | cuda"),
        threads: int = typer.Option(None, help="torch CPU threads"),
        out: Annotated[Path | None, typer.Option(
            "--out", help="run directory: config, noisy labels, checkpoints (resumed if "
            "present), result.json, final model")] = None,
        as_json: bool = json_flag("print the result as JSON to stdout"),
    ) -> None:
        """Train one model; with --out the run is checkpointed and resumes after a crash."""
        from lnlab.train import TrainConfig, train

        cfg = TrainConfig(
            model=model, norm=norm, data=with_label(data, label), data_seed=data_seed, noise=noise,
            random_labels=random_labels, optimizer=optimizer.lower(), lr=lr,
            momentum=momentum, weight_decay=wd,
            wd_exclude=[s.strip() for s in wd_exclude.split(",") if s.strip()],
            schedule=schedule.lower(), warmup_epochs=warmup, epochs=epochs,
            batch_size=batch_size, stop_at_train_acc=stop_at_train_acc, clip_grad_norm=clip,
            seed=seed, eval_every=eval_every, checkpoint_every=checkpoint_every,
            device=device.lower(), threads=threads,
        ).validate()
        console = Console(stderr=as_json)
        columns = (TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                   TextColumn("{task.fields[metrics]}"))
        # The bar starts with the first finished epoch, so bad input (found while the data
        # and model are prepared) prints only its one-line error.
        bar = Progress(*columns, console=console, transient=False)
        task = bar.add_task("train", total=cfg.epochs, metrics="")

        def progress(rec: dict[str, Any]) -> None:
            if not bar.live.is_started:
                bar.start()
            m = f"train {rec['train_acc']:.3f}  test {rec['test_acc']:.3f}"
            if "mem" in rec:
                m += f"  mem {rec['mem']:.2f} rec {rec['rec']:.2f}"
            bar.update(task, completed=rec["epoch"], metrics=m)

        try:
            result = train(cfg, out, progress=progress)
            if bar.live.is_started:
                bar.update(task, completed=result.summary.get("epochs_run", 0))
        finally:
            if bar.live.is_started:
                bar.stop()
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=1))
            return
        s = result.summary
        console.print(f"[bold]{escape(cfg.model)}[/] on [bold]{escape(cfg.data)}[/]: "
                      f"{result.status}")
        table = Table()
        table.add_column("metric")
        table.add_column("value", justify="right")
        rows = ["epochs_run", "steps", "final_train_loss", "final_train_acc",
                "final_test_loss", "final_test_acc", "best_test_acc", "best_test_acc_epoch",
                "final_mem", "final_rec", "final_rand", "stopped", "diverged_epoch", "wall_s"]
        for k in rows:
            if k in s and (s[k] is not None or k in ("stopped",)):
                table.add_row(k, _fmt(s[k]))
        console.print(table)
        if out:
            console.print(f"run directory: {escape(str(out))}")
