"""The weight-decay runs: training with group tracking, the norm-matched control, Li–Arora."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lnlab.experiments.weight_decay.sweep import (
    DECAY_STEP,
    LI_ARORA,
    STATIC_INPUTS,
    model_spec,
)

__all__ = ["GroupTracker", "PredRecorder", "disagreement", "encode_preds", "hidden_groups",
           "run", "run_control", "run_li_arora", "static_checks", "tracked_groups"]


def hidden_groups(model: Any) -> dict[str, list[str]]:
    """Every Linear except the readout, weight and bias as one group (execution order)."""
    from torch import nn

    out: dict[str, list[str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and name != "readout":
            out[name] = [f"{name}.{p}" for p, _ in m.named_parameters(recurse=False)]
    return out


def tracked_groups(model: Any) -> dict[str, list[str]]:
    """Hidden groups, the readout, and the residual stream writers (input_proj + every fc2)."""
    groups = hidden_groups(model)
    if "input_proj" in groups:
        groups["stream"] = [n for g, ns in groups.items()
                            if g == "input_proj" or g.endswith(".fc2") for n in ns]
    groups["readout"] = [n for n, _ in model.named_parameters() if n.startswith("readout.")]
    return groups


class GroupTracker:
    """Per-step angular update, norm and effective learning rate of parameter groups.

    A trainer step hook (``step``) plus an epoch hook (``epoch``). Everything is kept as
    float64 tensors and reduced with one ``index_add_`` per step (no host sync until the
    epoch's end). ``lr_scale`` (a tensor per group) is the control's learning-rate multiplier,
    so η_eff = lr·scale/‖w‖². ``record_norms`` keeps ‖w‖² after every step (the control's
    target trajectory). Not checkpointed: runs that use it train without checkpoints.
    """

    def __init__(self, model: Any, groups: Mapping[str, Sequence[str]], lr: float, *,
                 lr_scale: Any = None, record_norms: bool = False) -> None:
        import torch

        params = dict(model.named_parameters())
        self.names = list(groups)
        self.tensors = [params[n] for g in groups.values() for n in g]
        self.gid = torch.cat([torch.full((params[n].numel(),), i, dtype=torch.long)
                              for i, g in enumerate(groups.values()) for n in g])
        self.lr = float(lr)
        self.lr_scale = lr_scale
        self.prev = self._flat()
        n = len(self.names)
        self.sum_angle = torch.zeros(n, dtype=torch.float64)
        self.count = 0
        self.norms2: list[Any] | None = [self._sq(self.prev)] if record_norms else None

    def _flat(self) -> Any:
        import torch

        return torch.cat([p.detach().reshape(-1) for p in self.tensors]).double()

    def _sq(self, v: Any) -> Any:
        import torch

        return torch.zeros(len(self.names), dtype=torch.float64).index_add_(0, self.gid, v * v)

    def step(self, state: Any = None) -> None:
        import torch

        cur = self._flat()
        d = cur - self.prev
        n = len(self.names)
        s = torch.zeros(n, 2, dtype=torch.float64).index_add_(
            0, self.gid, torch.stack([d * self.prev, self.prev * self.prev], 1))
        dp, pp = s[:, 0], s[:, 1].clamp_min(1e-300)
        # the component of d orthogonal to prev, computed directly (no cancellation)
        e = d - (dp / pp)[self.gid] * self.prev
        perp = torch.zeros(n, dtype=torch.float64).index_add_(0, self.gid, e * e).sqrt()
        # angle between prev and cur = prev + d: atan2(|d⊥|, |prev| + d·prev/|prev|)
        self.sum_angle += torch.atan2(perp, pp.sqrt() + dp / pp.sqrt())
        self.count += 1
        self.prev = cur
        if self.norms2 is not None:
            self.norms2.append(self._sq(cur))

    def epoch(self, state: Any = None) -> dict[str, float]:
        sq = self._sq(self.prev)
        scale = self.lr_scale if self.lr_scale is not None else 1.0
        eta = (self.lr * scale / sq).tolist()
        ang = (self.sum_angle / max(1, self.count)).tolist()
        norms = sq.sqrt().tolist()
        out: dict[str, float] = {}
        hidden = [i for i, g in enumerate(self.names) if g not in ("readout", "stream")]
        for i, g in enumerate(self.names):
            out[f"angle/{g}"] = ang[i] if self.count else math.nan
            out[f"norm/{g}"] = norms[i]
            out[f"eta_eff/{g}"] = eta[i]
        if hidden:
            out["hidden_norm"] = math.sqrt(sum(norms[i] ** 2 for i in hidden))
            out["eta_eff_hidden"] = sum(eta[i] for i in hidden) / len(hidden)
            out["angle_hidden"] = sum(out[f"angle/{self.names[i]}"] for i in hidden) / len(
                hidden)
        self.sum_angle.zero_()
        self.count = 0
        return out


def encode_preds(preds: Any) -> str:
    """Argmax predictions as one character per example (classes < 36): compact in the store."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(alphabet[int(p)] for p in preds.tolist())


def disagreement(a: str, b: str) -> float:
    """Share of examples on which two encoded prediction strings differ."""
    if len(a) != len(b) or not a:
        raise ValueError("prediction strings of different lengths")
    return sum(x != y for x, y in zip(a, b, strict=True)) / len(a)


def _build(cfg: Any, exact: bool = False) -> Any:
    """The model the trainer would build for ``cfg`` (same init seed), built here so hooks
    can be attached before training. ``exact``: float64 with every norm's eps = 0 (lnlab
    MLPs cast their input to the readout's dtype, so the trainer needs no change)."""
    import torch

    from lnlab.data import load_dataset
    from lnlab.train import derive_seed, make_model

    info = load_dataset(cfg.data, seed=cfg.data_seed).info
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = make_model(cfg, info)
    if exact:
        from lnlab.analysis.scale_invariance import set_norm_eps

        model = model.double()
        set_norm_eps(model, 0.0)
    return model


def _test_preds(model: Any, cfg: Any) -> str:
    from lnlab.data import load_dataset
    from lnlab.train import evaluate

    data = load_dataset(cfg.data, seed=cfg.data_seed)
    return encode_preds(evaluate(model, data.x_test, data.y_test).preds)


def static_checks(model: Any, x: Any) -> dict[str, Any]:
    """Audit numbers of one model (float64): per-group max change at eps = 0, the joint
    stream, the unconstrained share, a pure hidden decay step and the eps breakdown."""
    from lnlab.analysis.scale_invariance import audit, function_change

    rep = audit(model, x)
    out: dict[str, Any] = {
        "static/unconstrained_share": rep.unconstrained_share,
        "static/invariant_share": rep.invariant_share,
        "static/infimum_ratio": rep.infimum_ratio,
        "static/verdicts": "; ".join(f"{g.name}={g.verdict}" for g in rep.groups),
    }
    for g in rep.groups:
        out[f"static/change/{g.name}"] = max(g.change_eps0.values())
    for j in rep.joint:
        out["static/change/stream"] = max(j.change_eps0.values())
        out["static/stream_verdict"] = j.verdict
    hidden = [n for n, _ in model.named_parameters() if not n.startswith("readout.")]
    out["static/decay_step"] = function_change(model, x, dict.fromkeys(hidden, DECAY_STEP))
    # the blocks only (no input projection), with and without their fc2 biases: the audit's
    # correction for h + LN(F(h)) is about a decay step on the blocks
    blocks = [n for n in hidden if n.startswith("blocks.")]
    out["static/decay_step_blocks"] = function_change(model, x, dict.fromkeys(blocks, DECAY_STEP))
    keep = [n for n in blocks if not n.endswith("fc2.bias")]
    out["static/decay_step_keep_b2"] = function_change(model, x, dict.fromkeys(keep, DECAY_STEP))
    first = next(iter(hidden_groups(model).values()))
    for c in (1e-1, 1e-2, 1e-3):
        out[f"static/eps_change/{c:g}"] = function_change(model, x, dict.fromkeys(first, c),
                                                          eps=None)
    return out


def run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """One run: a tracked training run, a norm-matched control, or the Li–Arora check."""
    kind = config["kind"]
    if kind == "li-arora":
        return run_li_arora(config)
    from lnlab.experiments.framework import train_output
    from lnlab.train import TrainConfig, train

    cfg = TrainConfig.from_dict(config["train"])
    if kind == "control":
        return run_control(cfg, run_dir, exact=bool(config.get("exact", True)))
    if kind != "train":
        raise ValueError(f"unknown run kind {kind!r}")
    model = _build(cfg)
    tracker = GroupTracker(model, tracked_groups(model), cfg.lr)
    result = train(cfg, run_dir, model=model, hooks=[tracker.epoch],
                   step_hooks=[tracker.step])
    out = train_output(result, run_dir)
    if result.model is not None:
        out["summary"]["test_pred"] = _test_preds(result.model, cfg)
        if config.get("static") and result.status == "finished":
            n = int(config.get("static_inputs", STATIC_INPUTS))
            out["summary"].update(_static_for(result.model, cfg, n))
    return out


def _static_for(model: Any, cfg: Any, n: int) -> dict[str, Any]:
    from lnlab.data import load_dataset

    data = load_dataset(cfg.data, seed=cfg.data_seed)
    return static_checks(model, data.x_test[:n])


def run_control(cfg: Any, run_dir: Path, *, exact: bool = True) -> dict[str, Any]:
    """Norm-matched control: retrain the decayed twin recording its per-step hidden norms, then
    train without decay with each hidden group's gradient scaled by
    k_t = ‖w_c,t‖² / ((1 − ηλ)‖w_twin,t‖²), i.e. the twin's η_eff at every step.

    ``exact`` (the default): twin, control and a λ = 0 reference all in float64 with eps = 0,
    where the invariance is exact, so the control reproduces a scale-invariant twin's
    function exactly (tested) and any remaining distance measures non-invariance. With the
    real eps in float32, eps breaks the invariance slightly and training at these learning
    rates amplifies it: the functions then drift apart even in (i) (see the docs)."""
    import torch

    from lnlab.experiments.framework import train_output
    from lnlab.train import train

    lam, eta = float(cfg.weight_decay), float(cfg.lr)
    x_test = _test_inputs(cfg)
    twin = _build(cfg, exact)
    groups = hidden_groups(twin)
    rec = GroupTracker(twin, groups, eta, record_norms=True)
    twin_preds = PredRecorder(x_test)
    twin_res = train(cfg, None, hooks=[twin_preds], step_hooks=[rec.step], model=twin)
    assert rec.norms2 is not None
    target = torch.stack(rec.norms2)  # (steps + 1, groups): ‖w_twin,t‖²

    ctrl_cfg = copy.deepcopy(cfg)
    ctrl_cfg.weight_decay, ctrl_cfg.wd_exclude = 0.0, []
    model = _build(ctrl_cfg, exact)
    scale = torch.full((len(groups),), 1.0 / (1.0 - eta * lam), dtype=torch.float64)
    params = dict(model.named_parameters())
    for i, names in enumerate(groups.values()):
        for n in names:
            params[n].register_hook(lambda g, i=i: g * scale[i].to(g.dtype))
    tracker = GroupTracker(model, {**tracked_groups(model)}, eta)
    own = GroupTracker(model, groups, eta, lr_scale=scale)  # η_eff of the control's groups
    ctrl_preds = PredRecorder(x_test)

    def match(state: Any) -> None:
        own.step()
        t = min(state.step, target.shape[0] - 1)
        scale.copy_(own._sq(own.prev) / ((1.0 - eta * lam) * target[t]))

    def epoch(state: Any) -> dict[str, float]:
        out = tracker.epoch()
        mine = own.epoch()
        out.update({k: v for k, v in mine.items() if k.startswith("eta_eff")})
        out["lr_scale_max"] = float(scale.max())
        ctrl_preds(state)
        return out

    result = train(ctrl_cfg, run_dir, model=model, hooks=[epoch],
                   step_hooks=[tracker.step, match])
    out = train_output(result, run_dir)
    s = out["summary"]
    s["twin_status"] = twin_res.status
    s["twin_final_test_acc"] = twin_res.summary.get("final_test_acc")
    s["exact"] = exact
    recs = [ctrl_preds, twin_preds]
    if exact:  # the λ = 0 reference in the same arithmetic
        zero_preds = PredRecorder(x_test)
        train(ctrl_cfg, None, hooks=[zero_preds], model=_build(ctrl_cfg, exact))
        recs.append(zero_preds)
    # compare at the control's last finite epoch (its final one unless it diverged)
    common = set.intersection(*(set(r.preds) for r in recs))
    if common:
        e = max(common)
        s["compare_epoch"] = e
        s["test_pred"], s["cmp_test_acc"] = ctrl_preds.preds[e], ctrl_preds.acc[e]
        s["twin_test_pred"], s["twin_test_acc"] = twin_preds.preds[e], twin_preds.acc[e]
        if exact:
            s["zero_test_pred"], s["zero_test_acc"] = zero_preds.preds[e], zero_preds.acc[e]
    return out


class PredRecorder:
    """Epoch hook: test-set argmax predictions and accuracy per epoch, kept only while every
    logit is finite (so a diverging run can still be compared at its last sound epoch)."""

    def __init__(self, x_test: Any) -> None:
        self.x = x_test
        self.preds: dict[int, str] = {}
        self.acc: dict[int, float] = {}

    def __call__(self, state: Any) -> None:
        import torch

        with torch.no_grad():
            state.model.eval()
            logits = state.model(self.x.to(state.device))
        if bool(torch.isfinite(logits).all()):
            self.preds[state.epoch] = encode_preds(logits.argmax(-1))
            self.acc[state.epoch] = float(state.metrics.get("test_acc", math.nan))


def _test_inputs(cfg: Any) -> Any:
    from lnlab.data import load_dataset

    return load_dataset(cfg.data, seed=cfg.data_seed).x_test


def run_li_arora(config: Mapping[str, Any]) -> dict[str, Any]:
    """B4/B5: deterministic float64 SGD runs on fixed minibatches (no trainer, no data order
    randomness): decay vs the Li–Arora learning rate vs constant lr."""
    import torch
    import torch.nn.functional as F

    from lnlab.analysis.scale_invariance import li_arora_lr, set_norm_eps
    from lnlab.data import load_dataset
    from lnlab.models import build_model
    from lnlab.train import derive_seed

    p = {**LI_ARORA, **{k: config[k] for k in ("steps",) if k in config}}
    eta, lam, steps, bs = float(p["eta"]), float(p["wd"]), int(p["steps"]), int(p["batch"])
    seed = int(config["seed"])
    data = load_dataset("mnist1d")
    n = len(data.y_train)
    g = torch.Generator().manual_seed(derive_seed(seed, "li-arora-order"))
    order = torch.randperm(n, generator=g)
    x_all, y_all = data.x_train.double(), data.y_train

    def batch(t: int) -> tuple[Any, Any]:
        idx = order[(t * bs) % n:(t * bs) % n + bs]
        return x_all[idx], y_all[idx]

    def make(arch: str) -> Any:
        with torch.random.fork_rng():
            torch.manual_seed(derive_seed(seed, "li-arora-init", arch))
            m = build_model(model_spec(arch, int(p["depth"]), int(p["width"])),
                            input_shape=data.info.input_shape,
                            num_classes=data.info.num_classes).double()
        set_norm_eps(m, 0.0)
        return m

    def trial(arch: str, train_readout: bool) -> dict[str, float]:
        base = make(arch)
        models = {k: copy.deepcopy(base) for k in "ABC"}
        groups = hidden_groups(base)
        worst = {"AB": 0.0, "AC": 0.0, "norm_id": 0.0, "cos": 0.0, "ratio": 0.0}

        def note(key: str, v: float) -> None:  # a NaN must not vanish inside max()
            worst[key] = max(worst[key], v) if math.isfinite(v) else math.inf
        for t in range(steps):
            x, y = batch(t)
            lrs = {"A": eta, "B": li_arora_lr(eta, lam, t), "C": eta}
            for k, m in models.items():
                m.zero_grad(set_to_none=True)
                F.cross_entropy(m(x), y).backward()
                ps = dict(m.named_parameters())
                with torch.no_grad():
                    if k == "C":  # B4: norm growth and orthogonality before the update
                        for names in groups.values():
                            w = torch.cat([ps[q].reshape(-1) for q in names])
                            gr = torch.cat([ps[q].grad.reshape(-1) for q in names])
                            nxt = w - eta * gr
                            dev = (nxt.pow(2).sum() - w.pow(2).sum() - eta**2 * gr.pow(2).sum())
                            note("norm_id", abs(float(dev / w.pow(2).sum())))
                            cos = float(gr @ w / (gr.norm() * w.norm()).clamp_min(1e-300))
                            note("cos", abs(cos))
                    for q, prm in ps.items():
                        if q.startswith("readout.") and not train_readout:
                            continue
                        if k == "A":
                            prm.mul_(1.0 - eta * lam)
                        prm.sub_(lrs[k] * prm.grad)
            pa, pb, pc = (dict(models[k].named_parameters()) for k in "ABC")
            for names in groups.values():
                ua, ub, uc = (torch.cat([d[q].detach().reshape(-1) for q in names])
                              for d in (pa, pb, pc))
                na, nb = ua.norm(), ub.norm()
                note("AB", float((ua / na - ub / nb).norm()))
                note("AC", float((ua / na - uc / uc.norm()).norm()))
                pred = (1.0 - eta * lam) ** (-(t + 1))
                note("ratio", abs(float(nb / na) / pred - 1.0))
        return worst

    ln = trial("ln", False)
    ro = trial("ln", True)
    pre = trial("pre", False)
    summary = {"li_arora_direction_gap": ln["AB"], "li_arora_norm_ratio_error": ln["ratio"],
               "li_arora_gap_constant_lr": ln["AC"], "li_arora_gap_readout_trained": ro["AB"],
               "li_arora_gap_pre": pre["AB"], "b4_norm_identity": ln["norm_id"],
               "b4_cos": ln["cos"], "steps": steps, "eta": eta, "wd": lam}
    finite = all(math.isfinite(v) for v in summary.values())
    return {"status": "finished" if finite else "diverged", "summary": summary, "epochs": []}
