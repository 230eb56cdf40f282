"""The memorization settings: one table per scale, or the user's models and data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lnlab.errors import LnlabError

__all__ = ["EXTRA_SCALES", "GROUP_ARMS", "RECIPE", "SETTINGS", "sweep"]

_LNLAB = "transformer:layers={layers},dim={dim},heads=4,ln={ln},patch=8,mlp_ratio=2"
_HF = {"pre": "hf:gpt2:layers={layers},dim={dim}", "post": "hf:bert:layers={layers},dim={dim}"}
RECIPE: dict[str, Any] = {"optimizer": "adam", "lr": 3e-3, "batch_size": 100,
                          "checkpoint_every": 0, "threads": 1}
GROUP_ARMS = ("early", "middle", "later")
# paper: a real pretrained checkpoint (``pretrained``); tiny: a seconds-long smoke sweep
EXTRA_SCALES = ("paper", "tiny")


def _lnlab(layers: int, dim: int) -> dict[str, str]:
    return {ln: _LNLAB.format(layers=layers, dim=dim, ln=ln) for ln in ("pre", "post")}


def _hf(layers: int, dim: int) -> dict[str, str]:
    return {k: v.format(layers=layers, dim=dim) for k, v in _HF.items()}


_TINY_LNLAB = {ln: "transformer:layers=3,dim=16,heads=2,ln=" + ln + ",patch=8,mlp_ratio=1"
               for ln in ("pre", "post")}
_ALL_ARMS = ("all", *GROUP_ARMS)

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
        {"name": "mnist1d-ft", "regime": "finetune", "data": "mnist1d:size=300",
         "models": _TINY_LNLAB, "arms": ("all",), "epochs": 2,
         "pretrain": {"data": "mnist1d:size=300,seed=7", "epochs": 1}},
    )},
    "quick": {"noise": (0.1,), "rows": (
        {"name": "tokens-hf", "regime": "scratch", "data": "tokens:n=1250,length=8,distractors=0",
         "models": _hf(3, 32), "arms": ("all",), "epochs": 200},
        {"name": "mnist1d", "regime": "scratch", "data": "mnist1d:size=1250",
         "models": _lnlab(3, 32), "arms": _ALL_ARMS, "epochs": 200, "grad_every": 10},
        {"name": "mnist1d-ft", "regime": "finetune", "data": "mnist1d:size=1250",
         "models": _lnlab(3, 32), "arms": ("all",), "epochs": 200,
         "pretrain": {"data": "mnist1d:size=1250,seed=7", "epochs": 20}},
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
        {"name": "mnist1d-ft", "regime": "finetune", "data": "mnist1d:size=20000",
         "models": _lnlab(6, 128), "arms": _ALL_ARMS, "epochs": 300,
         "pretrain": {"data": "mnist1d:size=20000,seed=7", "epochs": 50}},
    )},
}


def _setting(name: str, regime: str, data: str, models: dict[str, str], arms: list[str],
             *, noise: float, epochs: int, pretrain: dict[str, Any] | None = None,
             init: str | None = None, lr: float = 3e-3, grad_every: int = 0) -> list[dict]:
    return [{"setting": name, "regime": regime, "family": fam, "model": spec,
             "noise": noise, "arms": list(arms), "max_epochs": epochs, "stop_at": 1.0,
             "pretrain": pretrain, "init": init, "grad_every": grad_every,
             "train": {**RECIPE, "lr": lr, "model": spec, "data": data, "noise": noise,
                       "epochs": epochs}}
            for fam, spec in models.items()]


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
            configs += _setting(row["name"], row["regime"], row["data"], row["models"],
                                list(row["arms"]), noise=rate, epochs=epochs or row["epochs"],
                                pretrain=row.get("pretrain"),
                                grad_every=row.get("grad_every", 0))
    return configs


def sweep(scale: str, seeds: list[int], *, model: str | None = None, data: str | None = None,
          init: str | None = None, noise: str | None = None, arms: str | None = None,
          epochs: str | None = None, lr: str | None = None, tiny: str | None = None
          ) -> list[dict[str, Any]]:
    """Quick: three settings × Pre/Post × seeds (18 runs, each training intact + its arms).
    Full: the same at paper-like size (6 blocks, dim 128, 16,000 training samples) at 1%, 2%
    and 5% noise, plus lnlab transformers and GPT-Neo on the token task (…× 3 seeds).
    ``tiny=1`` is the tiny scale (older spelling)."""
    nz = _num(noise, float, "noise")
    if nz is not None and nz >= 1:
        raise LnlabError(f"option noise must be below 1, got {noise}")
    ep, lrv = _num(epochs, int, "epochs"), _num(lr, float, "lr")
    small = scale == "tiny" or (bool(tiny) and tiny not in ("0", "false"))
    if scale == "paper" or (init and not model):  # fine-tune a real pretrained checkpoint
        from lnlab.experiments.memorization.pretrained import pretrained_configs

        if model:
            raise LnlabError("--scale paper fine-tunes a checkpoint: use --init, not --model")
        return pretrained_configs(seeds, checkpoint=init, data=data, noise=nz, arms=arms,
                                  epochs=ep, lr=lrv, tiny=small)
    if model or data or init:
        configs = _user_sweep(model, data, init, nz, arms, ep, lrv)
    else:
        configs = _from_table("tiny" if small else scale, nz, ep)
    return [{**c, "train": {**c["train"], "seed": seed}} for seed in seeds for c in configs]
