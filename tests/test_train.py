"""The trainer: config, parameter groups, schedules, metrics, determinism, divergence, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lnlab.data import load_dataset
from lnlab.errors import LnlabError
from lnlab.train import (
    TrainConfig,
    build_optimizer,
    evaluate,
    lr_factor,
    make_model,
    param_tags,
    train,
)
from lnlab.train.checkpoint import read_tensors

DATA = "clusters:n=400,dim=8,classes=4,spread=1.5"
MODEL = "mlp:depth=2,width=32,norm=layernorm"


def cfg(**kw) -> TrainConfig:
    base = dict(model=MODEL, data=DATA, epochs=4, batch_size=32, lr=1e-2, seed=0,
                checkpoint_every=1, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def strip_times(result) -> tuple:
    s = {k: v for k, v in result.summary.items() if k not in ("wall_s", "loop_s", "setup_s")}
    return result.status, result.epochs, s


# -- config -----------------------------------------------------------------------------------

def test_config_roundtrip_json():
    c = cfg(wd_exclude=["norm", "bias"], betas=[0.8, 0.99], stop_at_train_acc=1.0)
    d = json.loads(json.dumps(c.to_dict()))
    assert TrainConfig.from_dict(d) == c
    with pytest.raises(LnlabError, match="unknown training config field 'bogus'"):
        TrainConfig.from_dict({**d, "bogus": 1})


@pytest.mark.parametrize("kw, msg", [
    ({"noise": 1.0}, r"noise rate must be in \[0, 1\)"),
    ({"noise": -0.1}, r"noise rate"),
    ({"optimizer": "lion"}, "optimizer 'lion'"),
    ({"schedule": "poly"}, "schedule"),
    ({"lr": 0.0}, "lr must be a positive"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"betas": [0.9]}, "betas"),
    ({"noise": 0.1, "random_labels": True}, "either noise or random_labels"),
    ({"stop_at_train_acc": 1.5}, "stop_at_train_acc"),
    ({"device": "tpu"}, "device"),
])
def test_config_validation(kw, msg):
    with pytest.raises(LnlabError, match=msg):
        cfg(**kw).validate()


# -- parameter groups, optimizers, schedules ---------------------------------------------------

def test_param_tags_and_wd_groups():
    model = make_model(cfg(), load_dataset(DATA).info)
    tags = param_tags(model)
    norm_names = {n for n, (g, _) in tags.items() if g == "norm"}
    assert norm_names and all(".norm." in n for n in norm_names)
    assert tags["readout.weight"][0] == "readout"
    assert tags["readout.bias"] == ("readout", {"readout", "bias"})
    assert tags["blocks.0.fc.bias"][0] == "bias"
    names = {id(p): n for n, p in model.named_parameters()}

    def groups(**kw):
        opt = build_optimizer(model, cfg(weight_decay=0.1, **kw))
        return {g["name"]: ({names[id(p)] for p in g["params"]}, g["weight_decay"])
                for g in opt.param_groups}

    g = groups()
    assert list(g) == ["all"] and g["all"][1] == 0.1 and len(g["all"][0]) == len(tags)
    g = groups(wd_exclude=["norm", "bias"])
    free = g["no_decay"][0]
    assert g["no_decay"][1] == 0.0 and g["decay"][1] == 0.1
    assert free == {n for n, (_, t) in tags.items() if t & {"norm", "bias"}}
    assert "readout.bias" in free and "readout.weight" not in free
    g = groups(wd_exclude=["readout.*"])
    assert g["no_decay"][0] == {"readout.weight", "readout.bias"}
    with pytest.raises(LnlabError, match="matches no parameter"):
        groups(wd_exclude=["nothing.*"])


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW)])
def test_optimizer_kinds(name, cls):
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    opt = build_optimizer(model, cfg(optimizer=name, momentum=0.5, betas=[0.7, 0.9],
                                     weight_decay=0.01))
    assert isinstance(opt, cls)
    g = opt.param_groups[0]
    assert g["lr"] == 1e-2 and g["weight_decay"] == 0.01
    if name == "sgd":
        assert g["momentum"] == 0.5
    else:
        assert g["betas"] == (0.7, 0.9)


def test_adamw_decay_is_decoupled_and_excluded_groups_are_untouched():
    """One AdamW step with zero gradients: decayed weights shrink by (1 - lr*wd), others stay."""
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.fill_(2.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, cfg(optimizer="adamw", lr=0.1, weight_decay=0.5,
                                     wd_exclude=["norm"]))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        factor = 1.0 if n.startswith("1.") else 1 - 0.1 * 0.5
        torch.testing.assert_close(p.detach(), before[n] * factor)


def test_lr_schedules():
    spe = 10
    c = cfg(schedule="step", step_size=2, gamma=0.5, epochs=6)
    assert [lr_factor(s * spe, spe, c) for s in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    c = cfg(schedule="cosine", epochs=4, warmup_epochs=1)
    assert [lr_factor(s, spe, c) for s in range(10)] == [(s + 1) / 10 for s in range(10)]
    for s in range(10, 40):
        t = (s - 10) / 30
        assert lr_factor(s, spe, c) == pytest.approx(0.5 * (1 + math.cos(math.pi * t)))
    assert lr_factor(40, spe, c) == pytest.approx(0.0)
    assert lr_factor(123, spe, cfg()) == 1.0


# -- evaluation and metrics --------------------------------------------------------------------

def test_evaluate_matches_float64_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x, y = torch.randn(50, 5), torch.randint(0, 3, (50,))
    ev = evaluate(model, x, y, chunk=16)
    m64 = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    m64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    with torch.no_grad():
        logits = m64(x.double())
    assert ev.loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert ev.acc == float((logits.argmax(1) == y).double().mean())
    assert torch.equal(ev.preds, logits.argmax(1))


def test_train_records_metrics_noise_shares_and_weight_norms(tmp_path):
    c = cfg(noise=0.2, epochs=3)
    r = train(c, tmp_path / "run")
    assert r.status == "finished" and len(r.epochs) == 3
    keys = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "mem", "rec",
            "rand", "wnorm/norm", "wnorm/weight", "wnorm/bias", "wnorm/readout", "wnorm/all"}
    for rec in r.epochs:
        assert keys <= rec.keys()
        assert rec["mem"] + rec["rec"] + rec["rand"] == pytest.approx(1.0, abs=1e-12)
        assert rec["n_noisy"] == round(0.2 * 320)
    # recompute the last epoch's numbers from the stored labels and final model
    lab = read_tensors(tmp_path / "run" / "labels.safetensors")
    ds = load_dataset(DATA)
    assert torch.equal(lab["original"], ds.y_train)
    assert int(lab["mask"].sum()) == 64 and (lab["labels"] != lab["original"]).sum() == 64
    model = make_model(c, ds.info)
    model.load_state_dict(read_tensors(tmp_path / "run" / "model.safetensors"))
    pred = evaluate(model, ds.x_train, lab["labels"]).preds
    m = lab["mask"]
    last = r.epochs[-1]
    assert last["mem"] == float((pred[m] == lab["labels"][m]).double().mean())
    assert last["rec"] == float((pred[m] == lab["original"][m]).double().mean())
    assert last["train_acc"] == float((pred == lab["labels"]).double().mean())
    assert last["test_acc"] == evaluate(model, ds.x_test, ds.y_test).acc
    wn = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for n, p in model.named_parameters()
                       if ".norm." in n))
    assert last["wnorm/norm"] == pytest.approx(wn, rel=1e-12)
    wall = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in model.parameters()))
    assert last["wnorm/all"] == pytest.approx(wall, rel=1e-12)
    s = r.summary
    assert s["final_test_acc"] == last["test_acc"] and s["epochs_run"] == 3
    assert s["best_test_acc"] == max(e["test_acc"] for e in r.epochs)
    assert not s["diverged"] and s["steps"] == 3 * 10


def test_learns_easy_task_and_stops_at_full_train_accuracy():
    r = train(cfg(data="clusters:n=400,dim=8,classes=4,spread=0.3", epochs=50,
                  stop_at_train_acc=1.0))
    assert r.summary["stopped"] == "train_acc"
    assert r.epochs[-1]["train_acc"] == 1.0 and r.summary["epochs_run"] < 50
    assert r.summary["final_test_acc"] > 0.95


def test_deterministic_from_seed():
    a, b = train(cfg(noise=0.1, schedule="cosine", warmup_epochs=1)), train(
        cfg(noise=0.1, schedule="cosine", warmup_epochs=1))
    assert strip_times(a) == strip_times(b)
    for (k, v), (k2, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items(),
                                strict=True):
        assert k == k2 and torch.equal(v, v2)
    c = train(cfg(noise=0.1, seed=1, schedule="cosine", warmup_epochs=1))
    assert c.epochs != a.epochs


def test_training_leaves_callers_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    train(cfg(epochs=1))
    assert torch.equal(torch.rand(4), expected)


def test_divergence_is_a_result(tmp_path):
    r = train(cfg(optimizer="sgd", lr=1e12, momentum=0.0, epochs=5), tmp_path / "div")
    assert r.status == "diverged" and r.summary["diverged"]
    assert r.summary["diverged_epoch"] is not None and r.summary["epochs_run"] < 5
    saved = json.loads((tmp_path / "div" / "result.json").read_text())
    assert saved["status"] == "diverged"


def test_hooks_merge_and_state_store_survive_resume(tmp_path):
    def hook(state):
        w = state.model.readout.weight.detach()
        prev = state.store.get("prev")
        state.store["prev"] = w.clone()
        state.store["calls"] = state.store.get("calls", 0) + 1
        if prev is None:
            return {"calls": state.store["calls"]}
        cos = float(F.cosine_similarity(w.flatten(), prev.flatten(), dim=0))
        return {"calls": state.store["calls"], "angle": math.acos(min(1.0, cos))}

    full = train(cfg(epochs=4), hooks=[hook])
    assert [e["calls"] for e in full.epochs] == [1, 2, 3, 4]
    assert "angle" not in full.epochs[0] and full.epochs[3]["angle"] > 0

    class Stop(Exception):
        pass

    def stop_at_3(rec):
        if rec["epoch"] == 3:
            raise Stop

    with pytest.raises(Stop):
        train(cfg(epochs=4, checkpoint_every=2), tmp_path / "r", progress=stop_at_3,
              hooks=[hook])
    resumed = train(cfg(epochs=4, checkpoint_every=2), tmp_path / "r", hooks=[hook])
    assert strip_times(resumed) == strip_times(full)


def test_finished_run_is_returned_not_retrained(tmp_path):
    c = cfg(epochs=2)
    a = train(c, tmp_path / "r")
    calls = []
    b = train(c, tmp_path / "r", progress=calls.append)
    assert calls == [] and strip_times(a) == strip_times(b)
    assert torch.equal(b.model.readout.weight, a.model.readout.weight)
    assert not (tmp_path / "r" / "checkpoint.json").exists()
    with pytest.raises(LnlabError, match="different config"):
        train(cfg(epochs=3), tmp_path / "r")


def test_passed_model_and_norm_override():
    ds = load_dataset(DATA)
    r = train(cfg(epochs=1, model="custom"), model=nn.Sequential(nn.Linear(8, 4)))
    assert r.status == "finished"
    m = make_model(cfg(norm="rmsnorm"), ds.info)
    assert "RMSNorm" in repr(m) and "LayerNorm" not in repr(m)
    with pytest.raises(LnlabError):
        make_model(cfg(norm="bogusnorm"), ds.info)


@pytest.mark.parametrize("kw, msg", [
    ({"data": "nosuchdata"}, "unknown dataset"),
    ({"model": "nosuchmodel"}, "unknown model"),
    ({"norm": "nosuchnorm"}, "unknown norm"),
    ({"noise": 1.2}, "noise rate"),
    ({"model": "mlp", "data": "tokens:n=50"}, "transformer"),
])
def test_bad_input_writes_nothing(tmp_path, kw, msg):
    out = tmp_path / "out"
    with pytest.raises(LnlabError, match=msg):
        train(cfg(**kw), out)
    assert not out.exists()


def test_schedule_and_clipping_reach_the_optimizer():
    r = train(cfg(schedule="step", step_size=1, gamma=0.5, epochs=3))
    assert [e["lr"] for e in r.epochs] == [1e-2, 5e-3, 2.5e-3]
    base = train(cfg(epochs=2, optimizer="sgd", lr=0.1))
    clipped = train(cfg(epochs=2, optimizer="sgd", lr=0.1, clip_grad_norm=1e-3))
    # with clipping at 1e-3, SGD (momentum 0.9) moves each weight tensor very little
    init = train(cfg(epochs=1, lr=1e-12)).epochs[0]["wnorm/all"]
    assert abs(clipped.epochs[-1]["wnorm/all"] - init) < 0.05
    assert abs(base.epochs[-1]["wnorm/all"] - init) > 0.2


def test_eval_every_records_only_evaluated_epochs():
    r = train(cfg(epochs=5, eval_every=2))
    assert [e["epoch"] for e in r.epochs] == [2, 4, 5]
    assert r.summary["steps"] == 50


def test_checkpoint_state_encoding_roundtrip(tmp_path):
    """Optimizer-like nested state survives tensors + JSON exactly (no pickle involved)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from lnlab.train.checkpoint import decode_state, encode_state, read_json, write_json
    from lnlab.train.checkpoint import write_tensors as wt

    leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                       st.floats(allow_nan=False), st.just(float("inf")), st.text(max_size=5),
                       st.integers(1, 4).map(lambda n: torch.randn(n, 3)))
    tree = st.recursive(leaves, lambda ch: st.one_of(
        st.lists(ch, max_size=3), st.tuples(ch, ch),
        st.dictionaries(st.integers(0, 9), ch, max_size=3),
        st.dictionaries(st.text("abc", min_size=1, max_size=3), ch, max_size=3)), max_leaves=12)

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and torch.equal(a, b)
        if isinstance(a, dict):
            return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
        return a == b and type(a) is type(b)

    @settings(max_examples=40, deadline=None)
    @given(obj=tree)
    def check(obj):
        tensors: dict[str, torch.Tensor] = {}
        skel = encode_state({"root": obj}, "s", tensors)
        write_json(tmp_path / "s.json", skel)
        wt(tmp_path / "s.safetensors", tensors)
        back = decode_state(read_json(tmp_path / "s.json"),
                            read_tensors(tmp_path / "s.safetensors"))
        assert same({"root": obj}, back)

    check()
