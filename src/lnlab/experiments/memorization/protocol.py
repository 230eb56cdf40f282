"""One memorization run: one seed of one (setting, family), the intact model then each arm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lnlab.errors import LnlabError

__all__ = ["run"]


def _factory(config: dict[str, Any], cfg: Any) -> Any:
    from lnlab.data import load_dataset
    from lnlab.models import build_model
    from lnlab.train import make_model

    info = load_dataset(cfg.data, seed=cfg.data_seed).info
    spec = config["model"]
    if spec.startswith("hf:"):
        if info.kind != "tokens" or info.vocab_size is None:
            raise LnlabError(f"{spec} needs token data; {cfg.data} holds {info.kind} inputs")
        # Fine-tuning loads the checkpoint: hf:PATH (the spec's size options do not apply).
        source = f"hf:{config['init']}" if config.get("init") else spec
        return lambda: build_model(source, input_shape=info.input_shape,
                                   num_classes=info.num_classes,
                                   vocab_size=int(info.vocab_size))
    return lambda: make_model(cfg, info)


def run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """One seed of one (setting, family): the intact model, then each removal arm."""
    from dataclasses import replace

    if config.get("regime") == "pretrained":
        from lnlab.experiments.memorization.pretrained import run_pretrained

        return run_pretrained(config, run_dir)

    from lnlab.experiments.memorization.removal import run_protocol
    from lnlab.train import TrainConfig

    cfg = TrainConfig.from_dict(config["train"])
    pre = None
    if config.get("pretrain"):
        # the pretraining stage: clean labels, its own recipe (optimizer, lr, weight decay)
        # where the setting gives one; evaluated once, at the end (its curve is not reported)
        p = dict(config["pretrain"])
        epochs = int(p.pop("epochs"))
        pre = replace(TrainConfig.from_dict({**config["train"], **p}), noise=0.0,
                      epochs=epochs, stop_at_train_acc=None, eval_every=epochs)
    res = run_protocol(_factory(config, cfg), cfg, run_dir, arms=config["arms"],
                       max_epochs=int(config["max_epochs"]), stop_at=float(config["stop_at"]),
                       pretrain=pre, new_head=bool(config.get("new_head")),
                       grad_every=int(config.get("grad_every") or 0),
                       grad_samples=int(config.get("grad_samples") or 512))
    intact = res.arms["intact"]
    summary = res.summary()
    summary["removed_sites"] = {a: r.removed for a, r in res.arms.items() if r.removed}
    return {"status": "finished" if intact.status == "finished" else "diverged",
            "summary": summary, "epochs": res.epochs(), "artifacts": {}}
