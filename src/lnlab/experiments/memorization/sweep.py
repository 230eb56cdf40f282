"""The memorization settings: one table per scale, or the user's models and data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lnlab.errors import LnlabError
from lnlab.experiments.memorization.removal import FOLDED

__all__ = ["EXTRA_SCALES", "FINETUNE", "GROUP_ARMS", "OWN_PRETRAINED", "PRETRAIN", "RECIPE",
           "SETTINGS", "sweep"]

_LNLAB = "transformer:layers={layers},dim={dim},heads=4,ln={ln},patch=8,mlp_ratio=2"
_HF = {"pre": "hf:gpt2:layers={layers},dim={dim}", "post": "hf:bert:layers={layers},dim={dim}"}
RECIPE: dict[str, Any] = {"optimizer": "adam", "lr": 3e-3, "batch_size": 100,
                          "checkpoint_every": 0, "threads": 1}
GROUP_ARMS = ("early", "middle", "later")
# Own pretraining (``mnist1d-pt``): the lnlab transformers are pretrained on clean labels of a
# larger, disjoint MNIST-1D sample (generator seed 7) with AdamW and weight decay (not on norms
# and biases, as for BERT), then get a fresh head and are fine-tuned on the noisy task with the
# fine-tuning recipe of the real-pretrained setting (AdamW without decay, constant lr, the same
# number of epochs for every arm) at a learning rate for a model this small (a third of the
# pretraining lr; the paper's 2e-5 is ~1/5 of BERT's pretraining peak). The only Pre-LN
# pretrained regime available here (no Pre-LN checkpoint is installable offline), so it also
# carries the ``folded`` control arm (Pre-LN only: Post-LN LN outputs feed the residual
# stream, so no exact fold exists).
PRETRAIN: dict[str, Any] = {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05,
                            "wd_exclude": ["norm", "bias"], "betas": [0.9, 0.999]}
FINETUNE: dict[str, Any] = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0,
                            "betas": [0.9, 0.999]}
# paper: the pretrained regimes (a real checkpoint, ``pretrained``, and own pretraining,
# ``mnist1d-pt``, sized like quick); tiny: a seconds-long smoke sweep
EXTRA_SCALES = ("paper", "tiny")


def _lnlab(layers: int, dim: int) -> dict[str, str]:
    return {ln: _LNLAB.format(layers=layers, dim=dim, ln=ln) for ln in ("pre", "post")}


def _hf(layers: int, dim: int) -> dict[str, str]:
    return {k: v.format(layers=layers, dim=dim) for k, v in _HF.items()}


_TINY_LNLAB = {ln: "transformer:layers=3,dim=16,heads=2,ln=" + ln + ",patch=8,mlp_ratio=1"
               for ln in ("pre", "post")}
_ALL_ARMS = ("all", *GROUP_ARMS)

OWN_PRETRAINED: dict[str, Any] = {
    "name": "mnist1d-pt", "regime": "own-pretrained", "data": "mnist1d:size=1250",
    "models": _lnlab(3, 32), "arms": ("all", FOLDED), "epochs": 200, "recipe": FINETUNE,
    "pretrain": {"data": "mnist1d:size=5000,seed=7", "epochs": 10, **PRETRAIN}}
"""The own-pretraining setting of ``--scale paper`` (beside the real checkpoint): quick-sized
lnlab transformers, 3 blocks, dim 32, pretrained on 4,000 disjoint MNIST-1D samples."""

# Per scale: the noise rates (one sweep of the rows per rate; ``-o noise=`` replaces them), and
# the rows: setting name, regime, data, models (family → spec), removal arms, the epoch cap
# (``-o epochs=`` replaces it), pretraining and how often gradients are measured. Quick runs
# the HF models first: they are the longest, so two workers finish together.
SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": {"noise": (0.2,), "rows": (
        {"name": "mnist1d", "regime": "scratch", "data": "mnist1d:size=300",
         "models": _TINY_LNLAB, "arms": _ALL_ARMS, "epochs": 3},
        {"name": "tokens-hf", "regime": "scratch", "data": "tokens:n=200,length=8",
         "models": _hf(3, 16), "arms": ("all",), "epochs": 2},
        {"name": "mnist1d-pt", "regime": "own-pretrained", "data": "mnist1d:size=300",
         "models": _TINY_LNLAB, "arms": ("all", FOLDED), "epochs": 2, "recipe": FINETUNE,
         "pretrain": {"data": "mnist1d:size=400,seed=7", "epochs": 1, **PRETRAIN}},
    )},
    "quick": {"noise": (0.1,), "rows": (
        {"name": "mnist1d", "regime": "scratch", "data": "mnist1d:size=1250",
         "models": _lnlab(3, 32), "arms": ("all",), "epochs": 200, "grad_every": 20,
         "grad_samples": 256},
    )},
    "full": {"noise": (0.01, 0.02, 0.05), "rows": (
        {"name": "mnist1d", "regime": "scratch", "data": "mnist1d:size=20000",
         "models": _lnlab(6, 128), "arms": _ALL_ARMS, "epochs": 300, "grad_every": 10},
        {"name": "tokens", "regime": "scratch", "data": "tokens:n=20000,length=32",
         "models": _lnlab(6, 128), "arms": _ALL_ARMS, "epochs": 300, "grad_every": 10},
        {"name": "tokens-hf", "regime": "scratch", "data": "tokens:n=20000,length=32",
         "models": _hf(6, 128), "arms": _ALL_ARMS, "epochs": 300, "grad_every": 10},
        {"name": "tokens-neo", "regime": "scratch", "data": "tokens:n=20000,length=32",
         "models": {"pre": "hf:gpt_neo:layers=6,dim=128"}, "arms": _ALL_ARMS, "epochs": 300,
         "grad_every": 10},
        {"name": "mnist1d-pt", "regime": "own-pretrained", "data": "mnist1d:size=20000",
         "models": _lnlab(6, 128), "arms": (*_ALL_ARMS, FOLDED), "epochs": 300,
         "recipe": FINETUNE,
         "pretrain": {"data": "mnist1d:size=60000,seed=7", "epochs": 30, **PRETRAIN}},
    )},
}


def _setting(name: str, regime: str, data: str, models: dict[str, str], arms: list[str],
             *, noise: float, epochs: int, pretrain: dict[str, Any] | None = None,
             init: str | None = None, lr: float | None = None, grad_every: int = 0,
             recipe: dict[str, Any] | None = None) -> list[dict]:
    """One config per model family; the ``folded`` arm only where it exists (Pre-LN)."""
    rec = {**RECIPE, **(recipe or {})}
    if lr is not None:
        rec["lr"] = lr
    out = []
    for fam, spec in models.items():
        c = {"setting": name, "regime": regime, "family": fam, "model": spec, "noise": noise,
             "arms": [a for a in arms if a != FOLDED or fam == "pre"], "max_epochs": epochs,
             "stop_at": 1.0, "pretrain": pretrain, "init": init, "grad_every": grad_every,
             "train": {**rec, "model": spec, "data": data, "noise": noise, "epochs": epochs}}
        if pretrain is not None:
            c["new_head"] = True
        out.append(c)
    return out


def _family(spec: str, init: str | None) -> str:
    from lnlab.models.hf_classifier import hf_placement, parse_hf_model

    if spec.startswith("hf:"):
        return hf_placement(init) if init else hf_placement(parse_hf_model(spec)[0])
    return "post" if "ln=post" in spec.replace(" ", "") else "pre"


def _user_sweep(model: str | None, data: str | None, init: str | None, noise: float | None,
                arms: str | None, epochs: int | None, lr: float | None) -> list[dict]:
    from lnlab.data import load_dataset
    from lnlab.experiments.memorization.removal import ARMS
    from lnlab.models import parse_model_spec
    from lnlab.models.hf import tiny_config
    from lnlab.models.hf_classifier import parse_hf_model

    data = data or "tokens:n=2500,length=16"
    info = load_dataset(data).info  # bad data fails here, before anything runs
    specs = [s.strip() for s in (model or "").split(",") if s.strip()] or [
        _LNLAB.format(layers=3, dim=32, ln=ln) for ln in ("pre", "post")]
    if init is not None and not all(s.startswith("hf:") for s in specs):
        raise LnlabError("--init needs a Hugging Face model (--model hf:ARCH)")
    if init is not None and not (Path(init) / "config.json").is_file():
        raise LnlabError(f"--init {init}: not a Hugging Face checkpoint directory "
                         "(no config.json)")
    for s in specs:
        if s.startswith("hf:"):
            source, _ = parse_hf_model(s)
            if init is None and not parse_model_spec(s).path:
                tiny_config(source)  # an unknown architecture fails here, not in every run
            if info.kind != "tokens":
                raise LnlabError(f"{s} needs token data; {data} holds {info.kind} inputs")
    arm_list = [a.strip() for a in (arms or "all").split(",") if a.strip()]
    bad = [a for a in arm_list if a not in ARMS]
    if bad:
        raise LnlabError(f"unknown arm {bad[0]!r}; valid: {', '.join(ARMS)}")
    out: list[dict] = []
    for s in specs:
        fam = _family(s, init)
        out += [{**c, "family": fam} for c in _setting(
            "user", "finetune" if init else "scratch", data, {fam: s}, arm_list,
            noise=0.05 if noise is None else noise, epochs=epochs or 200, init=init,
            lr=lr or (2e-5 if init else 3e-3))]
    return out


def _num(v: str | None, kind: type, name: str) -> Any:
    if v is None:
        return None
    try:
        x = kind(v)
    except ValueError:
        raise LnlabError(f"option {name} must be a number, got {v!r}") from None
    if not x > 0:
        raise LnlabError(f"option {name} must be positive, got {v}")
    return x


def _from_table(scale: str, noise: float | None, epochs: int | None) -> list[dict]:
    table = SETTINGS[scale]
    configs: list[dict] = []
    for rate in ([noise] if noise else table["noise"]):
        for row in table["rows"]:
            rows = _setting(row["name"], row["regime"], row["data"], row["models"],
                            list(row["arms"]), noise=rate, epochs=epochs or row["epochs"],
                            pretrain=row.get("pretrain"), recipe=row.get("recipe"),
                            grad_every=row.get("grad_every", 0))
            if "grad_samples" in row:  # samples per gradient measurement (default 512)
                rows = [{**c, "grad_samples": row["grad_samples"]} for c in rows]
            configs += rows
    return configs


def sweep(scale: str, seeds: list[int], *, model: str | None = None, data: str | None = None,
          init: str | None = None, noise: str | None = None, arms: str | None = None,
          epochs: str | None = None, lr: str | None = None, tiny: str | None = None
          ) -> list[dict[str, Any]]:
    """Quick: from scratch, Pre/Post × seeds, intact and ``all`` removed (the layer-group arms
    and the HF token settings are left to full: the whole quick reproduction has 10 minutes).
    Paper: the pretrained regimes — a real pretrained checkpoint (``pretrained``) and own
    pretraining (``mnist1d-pt``, with the ``folded`` control). Full: paper-like size (6 blocks,
    dim 128, 16,000 training samples) at 1%, 2% and 5% noise, every arm, plus lnlab
    transformers, HF BERT/GPT-2 and GPT-Neo on the token task and own pretraining. ``tiny=1``
    is the tiny scale (older spelling)."""
    nz = _num(noise, float, "noise")
    if nz is not None and nz >= 1:
        raise LnlabError(f"option noise must be below 1, got {noise}")
    ep, lrv = _num(epochs, int, "epochs"), _num(lr, float, "lr")
    small = scale == "tiny" or (bool(tiny) and tiny not in ("0", "false"))
    if scale == "paper" or (init and not model):  # fine-tune a real pretrained checkpoint
        from lnlab.experiments.memorization.pretrained import pretrained_configs

        if model:
            raise LnlabError("--scale paper fine-tunes a checkpoint: use --init, not --model")
        configs = pretrained_configs(seeds, checkpoint=init, data=data, noise=nz, arms=arms,
                                     epochs=ep, lr=lrv, tiny=small)
        if scale == "paper" and not (init or data or arms or nz or ep or lrv):
            # the built-in paper sweep also runs own pretraining (the Pre-LN pretrained regime)
            row = next(r for r in SETTINGS["tiny"]["rows"] if r["name"] == "mnist1d-pt") \
                if small else OWN_PRETRAINED
            own = _setting(row["name"], row["regime"], row["data"], row["models"],
                           list(row["arms"]), noise=0.1, epochs=row["epochs"],
                           pretrain=row["pretrain"], recipe=row["recipe"])
            configs += [{**c, "train": {**c["train"], "seed": seed}}
                        for seed in seeds for c in own]
        return configs
    if model or data or init:
        configs = _user_sweep(model, data, init, nz, arms, ep, lrv)
    else:
        configs = _from_table("tiny" if small else scale, nz, ep)
    return [{**c, "train": {**c["train"], "seed": seed}} for seed in seeds for c in configs]
