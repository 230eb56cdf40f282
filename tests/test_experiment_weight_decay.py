"""The weight-decay experiment: sweep, trackers, the control's η_eff match, analysis, claims."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lnlab.experiments import get_experiment
from lnlab.experiments import weight_decay as wd
from lnlab.experiments.claims import evaluate
from lnlab.experiments.framework import Results, Run
from lnlab.runner import run_key


def test_registered_and_sweeps_build():
    exp = get_experiment("weight-decay")
    quick, seeds = exp.configs("quick")
    assert seeds == [0, 1, 2, 3, 4]
    train = [c for c in quick if c["kind"] == "train"]
    ctrl = [c for c in quick if c["kind"] == "control"]
    la = [c for c in quick if c["kind"] == "li-arora"]
    # (i), (ii) × 2 λ on MNIST-1D × 5 seeds, controls for (i) and (ii) at λ_max; the runs that
    # feed only exact checks (4 static-only forms at λ = 0, Li–Arora) on the first seed
    assert len(train) == 2 * 2 * 5 + 4 and len(ctrl) == 2 * 5 and len(la) == 1
    assert {c["train"]["seed"] for c in train if c["arch"] not in ("ln", "pre")} == {0}
    assert {c["arch"] for c in train} == set(wd.ARCHS)  # the static checks see every form
    assert {c["arch"] for c in ctrl} == {"ln", "pre"}
    assert all(c["exact"] for c in ctrl)
    assert len({run_key("weight-decay", c) for c in quick}) == len(quick)
    t = train[0]["train"]
    assert (t["optimizer"], t["momentum"], t["lr"]) == ("sgd", 0.0, 0.1)
    assert {c["wd"] for c in train} == {0.0, 3e-2}
    assert all(c["train"]["wd_exclude"] == (["readout"] if c["wd"] else []) for c in train)
    assert all(c["static"] == (c["wd"] == 0 and c["dataset"] == "mnist1d") for c in train)
    assert all(c["train"]["noise"] == (0.15 if c["dataset"] == "mnist1d" else 0.0)
               for c in train)
    full, _ = exp.configs("full")
    # 360 train + 360 controls (3 λ × 2 datasets × exact / real eps) + 5 Li–Arora
    assert len(full) == 6 * 2 * 6 * 5 + 6 * 2 * 3 * 2 * 5 + 5
    tiny, _ = exp.configs("quick", seeds=1, options={"tiny": "1"})
    assert len(tiny) == 2 * 2 + 2 + 1


def test_bad_option_is_a_clear_error():
    from lnlab.errors import LnlabError

    with pytest.raises(LnlabError, match="tiny"):
        get_experiment("weight-decay").configs("quick", options={"tiny": "yes"})


@settings(max_examples=25, deadline=None)
@given(st.floats(1e-4, 1.0), st.integers(0, 10_000))
def test_tracker_angle_matches_float64_reference(angle, seed):
    """Rotate a group by a known angle (and rescale it): the tracker reports that angle."""
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(5, 4)
    model = torch.nn.Sequential(lin).double()
    with torch.no_grad():
        w = torch.cat([lin.weight.reshape(-1), lin.bias.reshape(-1)])
        v = torch.randn(w.shape, generator=g, dtype=torch.float64)
        v = v - (v @ w) / (w @ w) * w
        new = (math.cos(angle) * w / w.norm() + math.sin(angle) * v / v.norm()) * 3.7
    tr = wd.GroupTracker(model, {"g": ["0.weight", "0.bias"]}, lr=0.5)
    with torch.no_grad():
        lin.weight.copy_(new[:20].reshape(4, 5))
        lin.bias.copy_(new[20:])
    tr.step()
    out = tr.epoch()
    assert out["angle/g"] == pytest.approx(angle, rel=1e-9, abs=1e-12)
    assert out["norm/g"] == pytest.approx(3.7, rel=1e-12)
    assert out["eta_eff/g"] == pytest.approx(0.5 / 3.7**2, rel=1e-12)


def test_disagreement_and_encoding():
    a = wd.encode_preds(torch.tensor([0, 1, 2, 9]))
    assert a == "0129"
    assert wd.disagreement(a, "0139") == 0.25
    with pytest.raises(ValueError):
        wd.disagreement(a, "01")


def test_control_matches_li_arora_schedule_for_invariant_net():
    """The control's gradient scale k_t = ‖w_c‖²/((1−ηλ)‖w_twin‖²) reproduces a decayed run's
    directions when every trained group is scale-invariant (plain SGD, float64, eps = 0)."""
    from lnlab.analysis.scale_invariance import set_norm_eps
    from lnlab.models import build_model

    torch.manual_seed(0)
    base = build_model("mlp:depth=2,width=8,norm=layernorm_simple", input_shape=(6,),
                       num_classes=3).double()
    set_norm_eps(base, 0.0)
    for p in base.readout.parameters():
        p.requires_grad_(False)
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 3, (32,))
    eta, lam = 0.2, 0.05
    twin, ctrl = (type(base)(6, 3, depth=2, width=8, norm="layernorm_simple").double()
                  for _ in range(2))
    twin.load_state_dict(base.state_dict())
    ctrl.load_state_dict(base.state_dict())
    for m in (twin, ctrl):
        set_norm_eps(m, 0.0)
    groups = wd.hidden_groups(twin)
    rec = wd.GroupTracker(twin, groups, eta, record_norms=True)
    for _ in range(15):
        twin.zero_grad()
        torch.nn.functional.cross_entropy(twin(x), y).backward()
        with torch.no_grad():
            for n, p in twin.named_parameters():
                if not n.startswith("readout"):
                    p.mul_(1 - eta * lam).sub_(eta * p.grad)
        rec.step()
    target = torch.stack(rec.norms2)
    own = wd.GroupTracker(ctrl, groups, eta)
    scale = torch.full((len(groups),), 1 / (1 - eta * lam), dtype=torch.float64)
    params = dict(ctrl.named_parameters())
    for i, names in enumerate(groups.values()):
        for n in names:
            params[n].register_hook(lambda g, i=i: g * scale[i])
    for t in range(15):
        ctrl.zero_grad()
        torch.nn.functional.cross_entropy(ctrl(x), y).backward()
        with torch.no_grad():
            for n, p in ctrl.named_parameters():
                if not n.startswith("readout"):
                    p.sub_(eta * p.grad)
        own.step()
        scale.copy_(own._sq(own.prev) / ((1 - eta * lam) * target[t + 1]))
    pt, pc = dict(twin.named_parameters()), dict(ctrl.named_parameters())
    for names in groups.values():
        a = torch.cat([pt[n].reshape(-1) for n in names]).detach()
        b = torch.cat([pc[n].reshape(-1) for n in names]).detach()
        assert (a / a.norm() - b / b.norm()).norm() < 1e-10
        assert b.norm() > a.norm()  # the control is not simply the decayed run
    assert torch.allclose(twin(x), ctrl(x), atol=1e-10)


def _run(kind, arch, seed, wd_, summary, epochs=(), dataset="mnist1d", static=False):
    cfg = {"kind": kind, "arch": arch, "dataset": dataset, "wd": wd_, "static": static,
           "train": {"seed": seed, "lr": 0.1}}
    if kind == "control":
        cfg["exact"] = True
    return Run(f"{kind}{arch}{seed}{wd_}{dataset}", cfg, "finished", summary, list(epochs))


def _static_summary(arch):
    inv = arch in ("ln", "branch", "pre+final")
    s = {"final_test_acc": 0.5, "test_pred": "0123456789",
         "static/unconstrained_share": 0.9 if inv else 0.0, "static/infimum_ratio": 0.1,
         "static/invariant_share": 0.5, "static/decay_step": 1e-16 if arch == "ln" else 0.3,
         "static/decay_step_keep_b2": 1e-16 if arch in ("ln", "branch") else 0.3,
         "static/change/readout": 9.0, "static/eps_change/0.1": 1e-4,
         "static/eps_change/0.01": 1e-2, "static/eps_change/0.001": 0.5,
         "static/verdicts": "blocks.0.fc=invariant; readout=not invariant"}
    if arch == "ln":
        s.update({"static/change/blocks.0.fc": 1e-16, "static/change/blocks.1.fc": 3e-16})
    if arch in ("pre", "pre+final", "post", "branch"):
        s.update({"static/change/blocks.0.fc1": 0.4,
                  "static/change/blocks.0.fc2": 1e-16 if arch == "branch" else 0.5,
                  "static/change/stream": 1e-16 if arch == "pre+final" else 0.9})
    return s


def _fake_results():
    runs = []
    preds0 = "0000000000"
    for seed in range(3):
        for arch in wd.ARCHS:
            runs.append(_run("train", arch, seed, 0.0,
                             {**_static_summary(arch), "test_pred": preds0}, static=True))
            # λ_max run: 40% of predictions moved, accuracy down 3 points
            dec = "1111000000"
            ep = [{"epoch": 1, "angle/blocks.0.fc": 0.25, "angle/blocks.1.fc": 0.23,
                   "hidden_norm": 2.0, "norm/readout": 3.0, "eta_eff_hidden": 0.1,
                   "angle_hidden": 0.24}]
            runs.append(_run("train", arch, seed, 0.03,
                             {"final_test_acc": 0.47, "test_pred": dec, "steps": 2000}, ep))
            # control: reproduces the decayed run in ln (1 of 10 differs), not in pre
            cpred = "1111000001" if arch == "ln" else "1000000000"
            runs.append(_run("control", arch, seed, 0.03,
                             {"final_test_acc": 0.47, "test_pred": cpred,
                              "twin_test_pred": dec, "twin_test_acc": 0.47,
                              "cmp_test_acc": 0.47}, ep))
        runs.append(Run(f"la{seed}", {"kind": "li-arora", "seed": seed}, "finished",
                        {"li_arora_direction_gap": 1e-12, "li_arora_norm_ratio_error": 1e-14,
                         "li_arora_gap_constant_lr": 0.2, "li_arora_gap_readout_trained": 0.1,
                         "li_arora_gap_pre": 0.3, "b4_norm_identity": 1e-13, "b4_cos": 1e-12},
                        []))
    return Results(runs, "weight-decay", "quick", [0, 1, 2])


def test_analysis_and_verdicts_on_known_numbers(tmp_path):
    res = _fake_results()
    ms = wd.analyze(res)
    assert ms["control_residual[ln]"].mean == pytest.approx(0.25)  # 1/10 vs 4/10
    assert ms["control_residual[pre]"].mean == pytest.approx(0.75)  # 3/10 vs 4/10
    assert ms["acc_change[ln]"].mean == pytest.approx(-3.0)  # signed: λ_max − 0
    # angle 0.24 vs sqrt(2·0.1·0.03) = 0.0775: far from equilibrium prediction
    assert ms["angle_ratio[ln]"].mean == pytest.approx(0.24 / math.sqrt(0.006))
    assert ms["eps_growth[ln]"].mean == pytest.approx(5000.0)
    assert ms["change[ln/hidden]"].mean == pytest.approx(3e-16)
    assert ms["change[branch/fc2]"].mean == pytest.approx(1e-16)
    assert ms["change[post/min_block]"].mean == pytest.approx(0.4)
    v = {c.id: evaluate(c, ms).verdict for c in wd.CLAIMS}
    assert v["blog.ln"] == "pass" and v["blog.pre"] == "pass"
    assert v["blog.pre_final"] == "fail" and v["blog.post_transformer"] == "fail"
    assert v["blog.post"] == "pass"  # the blog's h + LN(F(h)) reading
    assert v["B1.hidden"] == v["B2.branch"] == v["B3.ln"] == v["B5.equivalence"] == "pass"
    assert v["B3.branch"] == "fail" and v["B3.branch_keep_b2"] == "pass"
    assert v["B6.angle"] == "contradicted"
    assert v["B7.control_ln_acc"] == "supported"  # control and decayed accuracies equal
    assert v["B7.change"] == "supported" and v["B7.control_ln"] == "supported"
    assert v["B7.control_pre"] == "supported"
    # every arch lost 3 points with λ_max here: the blog's thesis is contradicted for the
    # residual net, holds for the plain one, and the contrast (0) is contradicted
    assert v["blog.thesis_residual"] == "contradicted" and v["blog.thesis_plain"] == "supported"
    assert v["blog.thesis_contrast"] == "contradicted"
    assert all(c.metric in ms for c in wd.CLAIMS), [c.metric for c in wd.CLAIMS
                                                     if c.metric not in ms]
    header, rows = wd.table(res)
    assert len(rows) == len(wd.ARCHS) * 3 and len(header) == len(rows[0])
    paths = wd.figures(res, tmp_path)
    assert {p.name for p in paths} == {"accuracy_vs_weight_decay.png",
                                       "norms_eta_eff_angles.png", "audit_table.png"}


def test_diverged_control_makes_the_control_claims_inconclusive():
    res = _fake_results()
    runs = [Run(r.key, r.config, "diverged", r.summary, r.epochs)
            if r.config.get("kind") == "control" and r.config.get("arch") == "ln"
            and r.seed == 1 else r for r in res.runs]
    ms = wd.analyze(Results(runs))
    v = {c.id: evaluate(c, ms) for c in wd.CLAIMS}
    for cid in ("B7.control_ln", "B7.control_ln_acc", "B7.control_pre"):
        assert v[cid].verdict == "inconclusive", cid
        assert "diverged" in v[cid].reason and "not evidence" in v[cid].reason


def test_angle_ratio_excludes_runs_before_equilibrium():
    res = _fake_results()
    for r in res.runs:
        if r.config.get("wd") == 0.03:
            r.summary["steps"] = 100  # < 3/(ηλ) = 1000
    m = wd.analyze(res)["angle_ratio[ln]"]
    assert m.n == 0 and m.excluded == 3


@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path):
    from lnlab.experiments import run_experiment
    from lnlab.report import build_report

    res = run_experiment("weight-decay", tmp_path, scale="tiny", seeds=1, workers=1,
                         progress=False)
    assert res.failed == 0
    build_report(tmp_path)
    import json

    claims = {c["id"]: c for c in json.loads((tmp_path / "claims.json").read_text())["checks"]}
    # the exact identities hold even at this size
    for cid in ("B1.hidden", "B3.ln", "B5.equivalence", "B4.norm_growth", "B2.stream_final"):
        if cid in claims and claims[cid]["measured"] and claims[cid]["measured"]["n"]:
            assert claims[cid]["verdict"] == "pass", (cid, claims[cid]["reason"])
    assert claims["B5.equivalence"]["verdict"] == "pass"
    assert claims["B1.hidden"]["verdict"] == "pass"


def test_trainer_step_hooks_run_once_per_step_and_change_nothing():
    """Engine edit: ``train(step_hooks=...)`` sees every step and leaves the results as they
    are without hooks."""
    from lnlab.train import TrainConfig, train

    cfg = TrainConfig(model="mlp:depth=1,width=8", data="digits", epochs=2, batch_size=500,
                      checkpoint_every=0, optimizer="sgd", lr=0.1)
    seen: list[tuple[int, int]] = []
    with_hook = train(cfg, step_hooks=[lambda s: seen.append((s.epoch, s.step))])
    plain = train(cfg)
    assert seen == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]  # 1437 / 500 → 3 steps
    assert with_hook.epochs == plain.epochs or all(
        {k: v for k, v in a.items() if "time" not in k and not k.endswith("_s")}
        == {k: v for k, v in b.items() if "time" not in k and not k.endswith("_s")}
        for a, b in zip(with_hook.epochs, plain.epochs, strict=True))
    assert with_hook.summary["final_test_acc"] == plain.summary["final_test_acc"]
