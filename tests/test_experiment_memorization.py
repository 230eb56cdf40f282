"""Singhal & Kim memorization protocol, HF classifier wrapper and the `memorization` experiment.

The hand check of the gradient analysis itself is in tests/test_gradients.py; here one
end-to-end check goes through the experiment's code path (run_protocol → gradfinal keys).
"""

import math
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lnlab.analysis.label_noise import noisy_counts, shares_from_counts
from lnlab.errors import LnlabError
from lnlab.experiments import get_experiment
from lnlab.experiments import memorization as mz
from lnlab.experiments.claims import evaluate, evaluate_all
from lnlab.experiments.framework import Results, Run
from lnlab.experiments.memorization.removal import run_protocol, same_class_clean
from lnlab.models.hf_classifier import build_hf_classifier, hf_placement, parse_hf_model
from lnlab.train import TrainConfig, make_model

TINY = "transformer:layers=3,dim=8,heads=2,ln={ln},patch=8,mlp_ratio=1"


# --------------------------------------------------------------------------- shares


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.integers(2, 7), st.integers(0, 2**31 - 1))
def test_counts_are_disjoint_and_shares_sum_to_exactly_one(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, k, (n,), generator=g)
    noisy = (true + torch.randint(1, k, (n,), generator=g)) % k
    preds = torch.randint(0, k, (n,), generator=g)
    c = noisy_counts(preds, noisy, true, torch.ones(n, dtype=torch.bool))
    # independent reference: classify each sample by hand
    ref = {"mem": 0, "rec": 0, "rand": 0}
    for p, yn, yt in zip(preds.tolist(), noisy.tolist(), true.tolist(), strict=True):
        ref["mem" if p == yn else "rec" if p == yt else "rand"] += 1
    assert (c["n_mem"], c["n_rec"], c["n_rand"]) == (ref["mem"], ref["rec"], ref["rand"])
    sh = shares_from_counts(c)
    assert sum(sh.values()) == Fraction(1)


def test_counts_reject_overlapping_labels():
    y = torch.tensor([0, 1])
    with pytest.raises(LnlabError, match="true label"):
        noisy_counts(y, y, y, torch.ones(2, dtype=torch.bool))
    with pytest.raises(LnlabError, match="no noisy samples"):
        shares_from_counts({"n_noisy": 0, "n_mem": 0, "n_rec": 0, "n_rand": 0})


def _npz(tmp_path, n_train=40, n_test=1, dim=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.normal(size=(n_train, dim)).astype(np.float32),
             y_train=rng.integers(0, classes, n_train),
             x_test=rng.normal(size=(n_test, dim)).astype(np.float32),
             y_test=np.array([0] * n_test))
    return str(path)


def _protocol(tmp_path, ln="post", arms=("all",), epochs=3, **kw):
    data = _npz(tmp_path)
    cfg = TrainConfig(model=TINY.format(ln=ln), data=data, noise=0.1, epochs=epochs,
                      batch_size=10, lr=1e-2, checkpoint_every=0, seed=3)
    from lnlab.data import load_dataset

    info = load_dataset(data).info
    calls = []

    def mk():
        calls.append(1)
        return make_model(cfg, info)

    res = run_protocol(mk, cfg, arms=arms, max_epochs=epochs, **kw)
    return cfg, res, calls


def test_protocol_shares_sum_to_one_on_the_noisy_set(tmp_path):
    _, res, calls = _protocol(tmp_path, arms=("all", "early"), epochs=2, final_grads=False)
    assert len(calls) == 1  # one initialization, copied into every arm
    assert set(res.arms) == {"intact", "all", "early"}
    for arm in res.arms.values():
        for e in arm.epochs:
            n = e["n_noisy"]
            assert n == 4  # round(0.1 * 40)
            assert e["n_mem"] + e["n_rec"] + e["n_rand"] == n
            assert (Fraction(e["n_mem"], n) + Fraction(e["n_rec"], n)
                    + Fraction(e["n_rand"], n)) == 1
            # the trainer's float shares are these counts over n
            assert e["mem"] == e["n_mem"] / n and e["rec"] == e["n_rec"] / n
    assert res.arms["early"].removed == ["blocks.0.norm1", "blocks.0.norm2"]
    assert res.arms["all"].params_removed == 2 * 6 * 8
    assert res.arms["intact"].params_removed == 0
    # removed arms train exactly as many epochs as the intact one ran
    assert [e["epoch"] for e in res.arms["all"].epochs] == \
        [e["epoch"] for e in res.arms["intact"].epochs]
    merged = res.epochs()
    assert {"intact/test_acc", "all/mem", "early/n_rec"} <= set(merged[-1])


def test_removed_arm_starts_from_the_same_initialization(tmp_path):
    # lnlab LNs start at (1, 0), so stripping them changes nothing at step 0: with lr → 0
    # the intact and removed models stay the same function.
    data = _npz(tmp_path)
    cfg = TrainConfig(model=TINY.format(ln="pre"), data=data, noise=0.1, epochs=1,
                      batch_size=10, lr=1e-12, checkpoint_every=0, seed=5)
    from lnlab.data import load_dataset

    info = load_dataset(data).info
    res = run_protocol(lambda: make_model(cfg, info), cfg, arms=("all",), final_grads=False)
    a, b = res.arms["intact"].epochs[-1], res.arms["all"].epochs[-1]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    xa = res.arms["intact"].model(info_x := load_dataset(data).x_test)
    xb = res.arms["all"].model(info_x)
    torch.testing.assert_close(xa, xb, rtol=1e-5, atol=1e-6)


def _hand_grad_norm(model, x, y):
    """‖∂L/∂z‖ at blocks.0.norm1's input for a Post-LN lnlab model, by a manual forward."""
    model.eval()
    h = model.embed(x)
    blk = model.blocks[0]
    z = h + blk.attn(h)
    z.retain_grad()
    h = blk.norm1(z)
    h = blk.norm2(h + blk.mlp(h))
    for b in model.blocks[1:]:
        h = b(h)
    logits = model.head(h[:, 0] if model.pool == "cls" else h.mean(1))
    F.cross_entropy(logits, y).backward()
    return float(z.grad.double().norm())


def test_final_gradient_norms_match_a_hand_computation_on_one_sample(tmp_path):
    # one test sample (learning) and one noisy sample (memorization): the means are single
    # per-sample norms, so they must equal the manual ones. Cf. tests/test_gradients.py.
    data = _npz(tmp_path, n_train=10, n_test=1)
    cfg = TrainConfig(model=TINY.format(ln="post"), data=data, noise=0.1, epochs=2,
                      batch_size=5, lr=1e-2, checkpoint_every=0, seed=1)
    from lnlab.data import load_dataset
    from lnlab.train import make_labels

    ds = load_dataset(data)
    res = run_protocol(lambda: make_model(cfg, ds.info), cfg, arms=("all",), max_epochs=2)
    labels = make_labels(cfg, ds)
    i = int(labels.mask.nonzero()[0, 0])
    for arm in ("intact", "all"):
        m = res.arms[arm].model
        s = res.arms[arm].summary
        learn = _hand_grad_norm(m, ds.x_test[:1], ds.y_test[:1])
        mem = _hand_grad_norm(m, ds.x_train[i:i + 1], labels.labels[i:i + 1])
        assert s["gradfinal/learn_total/blocks.0.norm1"] == pytest.approx(learn, rel=1e-5)
        assert s["gradfinal/noisy_total/blocks.0.norm1"] == pytest.approx(mem, rel=1e-5)
        # Post-LN: the LN input feeds only the LN, so branch == total
        assert s["gradfinal/learn_branch/blocks.0.norm1"] == pytest.approx(learn, rel=1e-5)
    # Theorem 1's premise: a clean training sample of the noisy sample's true class
    (j,) = same_class_clean(ds.y_train, labels.mask, labels.mask.nonzero()[:, 0],
                            seed=12345).tolist()
    assert not labels.mask[j] and ds.y_train[j] == ds.y_train[i]


def test_memorization_gradient_is_over_the_memorized_noisy_samples_only(tmp_path):
    """Theorem 1 is about memorized samples: `mem_total` averages the noisy samples the model
    predicts with their noisy label, `noisy_total` all noisy samples, `learn_sameclass_total`
    clean samples of the memorized ones' classes; checked by hand per sample."""
    from lnlab.data import load_dataset
    from lnlab.experiments.memorization.removal import _final_grads
    from lnlab.train import make_labels

    data = _npz(tmp_path, n_train=40, n_test=4)
    cfg = TrainConfig(model=TINY.format(ln="post"), data=data, noise=0.25, seed=2)
    ds = load_dataset(data)
    torch.manual_seed(0)
    m = make_model(cfg, ds.info)  # untrained: about a third of the noisy labels "memorized"
    labels = make_labels(cfg, ds)
    ni = labels.mask.nonzero()[:, 0]
    m.eval()
    with torch.no_grad():
        pred = m(ds.x_train[ni]).argmax(-1)
    mi = ni[pred == labels.labels[ni]]
    assert 0 < len(mi) < len(ni) == 10  # a mix, so the two means differ

    s = _final_grads(m, cfg, 4)
    assert (s["gradfinal/n_memorized"], s["gradfinal/n_noisy"]) == (len(mi), len(ni))
    site = "blocks.0.norm1"

    def mean_norm(idx, y):
        return np.mean([_hand_grad_norm(m, ds.x_train[i:i + 1], y[i:i + 1])
                        for i in idx.tolist()])

    assert s[f"gradfinal/mem_total/{site}"] == pytest.approx(mean_norm(mi, labels.labels),
                                                             rel=1e-5)
    assert s[f"gradfinal/noisy_total/{site}"] == pytest.approx(mean_norm(ni, labels.labels),
                                                               rel=1e-5)
    same = same_class_clean(ds.y_train, labels.mask, mi, seed=12345)
    assert len(same) == len(mi)
    assert s[f"gradfinal/learn_sameclass_total/{site}"] == pytest.approx(
        mean_norm(same, ds.y_train), rel=1e-5)


def test_protocol_rejects_bad_input(tmp_path):
    cfg = TrainConfig(model=TINY.format(ln="pre"), data=_npz(tmp_path), noise=0.0)
    with pytest.raises(LnlabError, match="label noise"):
        run_protocol(lambda: None, cfg)
    cfg.noise = 0.1
    with pytest.raises(LnlabError, match="unknown removal arm 'first'"):
        run_protocol(lambda: None, cfg, arms=("first",))


# --------------------------------------------------------------------------- HF wrapper


@pytest.mark.parametrize("arch,placement", [("bert", "post"), ("gpt2", "pre"),
                                            ("gpt_neo", "pre")])
def test_hf_classifier_maps_ids_to_logits_and_ignores_padding(arch, placement):
    from lnlab.surgery import find_norms, norm_placement

    torch.manual_seed(0)
    m = build_hf_classifier(arch, num_classes=3, vocab_size=20, length=10, layers=3, dim=16)
    m.eval()
    x = torch.randint(1, 20, (4, 10))
    assert m(x).shape == (4, 3)
    assert norm_placement(m).kind == placement == hf_placement(arch)
    groups = {s.group for s in find_norms(m)}
    assert {"early", "middle", "later"} <= groups
    if arch == "bert":  # bidirectional: padding at the end must not change the CLS logits
        xp = torch.cat([x[:, :6], torch.zeros(4, 4, dtype=torch.long)], 1)
        torch.testing.assert_close(m(xp), m(x[:, :6]), rtol=1e-4, atol=1e-5)


def test_hf_spec_parsing_and_errors():
    assert parse_hf_model("hf:bert") == ("bert", {"layers": 3, "dim": 32, "heads": 4,
                                                  "dropout": 0.0})
    assert parse_hf_model("hf:GPT-Neo:layers=6,dim=64")[0] == "gpt_neo"
    for bad, msg in [("bert", "not a Hugging Face"), ("hf:bert:depth=2", "unknown option"),
                     ("hf:bert:layers=x", "expected an integer"),
                     ("hf:bert:layers=３", "non-ASCII"), ("hf:", "needs an architecture")]:
        with pytest.raises(LnlabError, match=msg):
            parse_hf_model(bad)


def test_hf_init_loads_a_local_checkpoint(tmp_path):
    from lnlab.models.hf_classifier import save_hf_classifier

    torch.manual_seed(0)
    m = build_hf_classifier("bert", num_classes=2, vocab_size=20, length=8, dim=16)
    save_hf_classifier(m, tmp_path / "ckpt")
    m2 = build_hf_classifier("ignored", num_classes=2, vocab_size=20, length=8,
                             init=tmp_path / "ckpt")
    x = torch.randint(1, 20, (2, 8))
    torch.testing.assert_close(m.eval()(x), m2.eval()(x))
    with pytest.raises(LnlabError, match="vocabulary of 20"):
        build_hf_classifier("bert", num_classes=2, vocab_size=50, length=8,
                            init=tmp_path / "ckpt")
    with pytest.raises(LnlabError, match=r"no config\.json"):
        build_hf_classifier("bert", num_classes=2, vocab_size=5, length=8, init=tmp_path)


# --------------------------------------------------------------------------- sweep / claims


def test_sweeps_build_and_are_valid():
    exp = get_experiment("memorization")
    quick, seeds = exp.configs("quick")
    # quick: from scratch, Pre/Post × 5 seeds, intact + all (the group arms and the HF
    # settings are in full; the pretrained regimes in paper)
    assert seeds == [0, 1, 2, 3, 4] and len(quick) == 10
    assert {c["setting"] for c in quick} == {"mnist1d"}
    assert {tuple(c["arms"]) for c in quick} == {("all",)}
    from lnlab.data import load_dataset

    for c in quick:  # ≥ 100 noisy samples everywhere
        n = len(load_dataset(c["train"]["data"]).y_train)
        assert round(c["noise"] * n) >= 100
    full, _ = exp.configs("full")
    assert len(full) == 3 * (2 + 2 + 2 + 1 + 2) * 5  # noise rates × models × seeds
    pt = [c for c in full if c["setting"] == "mnist1d-pt"]
    assert {c["regime"] for c in pt} == {"own-pretrained"} and all(c["new_head"] for c in pt)
    assert all(("folded" in c["arms"]) == (c["family"] == "pre") for c in pt)
    assert {c["train"]["optimizer"] for c in pt} == {"adamw"}
    assert all(c["pretrain"]["weight_decay"] > 0 and c["pretrain"]["wd_exclude"]
               for c in pt)


def test_user_options_and_errors(tmp_path):
    exp = get_experiment("memorization")
    cfgs, _ = exp.configs("quick", 1, {"model": "hf:bert,hf:gpt2", "data": "tokens:n=200"})
    assert [(c["family"], c["regime"], c["arms"]) for c in cfgs] == [
        ("post", "scratch", ["all"]), ("pre", "scratch", ["all"])]
    with pytest.raises(LnlabError, match="needs token data"):
        exp.configs("quick", 1, {"model": "hf:bert", "data": "digits"})
    with pytest.raises(LnlabError, match=r"no config\.json"):
        exp.configs("quick", 1, {"model": "hf:bert", "init": str(tmp_path)})
    with pytest.raises(LnlabError, match="unknown arm"):
        exp.configs("quick", 1, {"data": "digits", "arms": "all,top"})
    with pytest.raises(LnlabError, match="noise must be below 1"):
        exp.configs("quick", 1, {"noise": "1.5"})


def _run(setting, fam, seed, **s):
    cfg = {"setting": setting, "regime": "scratch", "family": fam, "model": "m", "noise": 0.1,
           "arms": ["all", "early", "middle", "later"], "train": {"seed": seed}}
    return Run(f"{setting}{fam}{seed}", cfg, "finished", s, [])


def _summ(acc, mem, rec, gap=0.0, n=100):
    return {"final_test_acc": acc, "final_n_noisy": n, "final_n_mem": mem, "final_n_rec": rec,
            "final_n_rand": n - mem - rec, "final_gap": gap, "final_train_acc": 1.0}


def _fake(pre_drop=8.0, post_drop=0.0, post_mem=25, post_rec=65, pre_rec=15):
    runs = []
    for seed in range(3):
        for fam in ("pre", "post"):
            s = {}
            drop = pre_drop if fam == "pre" else post_drop
            arms = {"intact": _summ(0.90, 100, 0, 0.10),
                    "all": _summ(0.90 - drop / 100, post_mem if fam == "post" else 60,
                                 post_rec if fam == "post" else pre_rec,
                                 0.10 + (0.05 if fam == "pre" else -0.02)),
                    "early": _summ(0.80 if fam == "pre" else 0.9, 20, 70, 0.2),
                    "middle": _summ(0.85, 40, 50, 0.15), "later": _summ(0.88, 60, 30, 0.12)}
            for arm, d in arms.items():
                s.update({f"{arm}/{k}": v for k, v in d.items()})
            # gradients: learn > mem, decaying with depth, larger ratio for pre
            for i, site in enumerate(["blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1",
                                      "blocks.1.norm2", "blocks.2.norm1", "blocks.2.norm2"]):
                learn = 10.0 / (i + 1) ** (2 if fam == "pre" else 1)
                ratio = 20.0 if fam == "pre" else 4.0
                for part in ("total", "branch"):
                    s[f"intact/gradfinal/learn_{part}/{site}"] = learn
                    s[f"intact/gradfinal/mem_{part}/{site}"] = learn / ratio
                s[f"intact/gradfinal/learn_sameclass_total/{site}"] = learn / 2
            runs.append(_run("mnist1d", fam, seed, **s))
    return Results(runs, "memorization", "quick", [0, 1, 2])


def test_analysis_and_verdicts_on_known_numbers(tmp_path):
    res = _fake()
    ms = mz.analyze(res)
    assert dict(ms["mnist1d: Δtest_acc[pre, all − intact]"].values) == pytest.approx(
        {0: -8.0, 1: -8.0, 2: -8.0})
    assert ms["mnist1d: rec − mem [post, all] (points)"].mean == pytest.approx(40.0)
    assert ms["mnist1d: min over LNs and models of learn/mem (total)"].mean == \
        pytest.approx(4.0)
    assert ms["mnist1d: geometric mean over block LNs of ratio[pre]/ratio[post]"].mean == \
        pytest.approx(5.0)
    assert ms["mnist1d: Spearman ρ(depth, learn norm) [post]"].mean == pytest.approx(-1.0)
    # early − mean(middle, later): 20 − (40 + 60)/2
    assert ms["mnist1d: mem[post, early] − mean(middle, later)"].mean == pytest.approx(-30.0)
    assert ms["mnist1d: min over models of intact final train acc (%)"].mean == 100.0
    assert ms["max |mem + rec + rand − 1| over models"].mean == 0.0
    v = {r.claim.id: r.verdict for r in evaluate_all(mz.CLAIMS, ms)
         if r.claim.id.endswith(".mnist1d")}
    assert v["sk.precondition.mnist1d"] == "pass"
    assert v["sk.1.mnist1d"] == v["sk.2.mnist1d"] == v["sk.3.mnist1d"] == "supported"
    assert v["sk.4.mnist1d"] == v["sk.8.mnist1d"] == v["sk.9.mnist1d"] == "supported"
    assert v["sk.6.mnist1d"] == v["sk.7.mnist1d"] == v["sk.7b.mnist1d"] == "supported"
    assert v["sk.10pre.mnist1d"] == v["sk.10c.mnist1d"] == "supported"
    assert v["sk.5pre.mnist1d"] == v["sk.5post.mnist1d"] == "supported"
    # 100 noisy of N = 1000 (noise 0.1): memorization 100 → 25 samples is 7.5 points of train acc
    assert ms["mnist1d: memorization part of Δgap[post, all − intact] (points)"].mean == \
        pytest.approx(-7.5)
    assert v["sk.5post.mem.mnist1d"] == "supported"
    # Theorem 1's own premise (same-class clean training samples): ratio min 4/2 = 2
    assert ms["mnist1d: min over LNs and models of learn(same class)/mem (total)"].mean == \
        pytest.approx(2.0)
    assert v["sk.8same.mnist1d"] == "supported"
    # the mirror image is contradicted: Post-LN loses accuracy, memorizes, recovers nothing
    bad = mz.analyze(_fake(pre_drop=0.0, post_drop=8.0, post_mem=90, post_rec=5, pre_rec=40))
    vb = {c.id: evaluate(c, bad).verdict for c in mz.CLAIMS if c.id.endswith(".mnist1d")}
    assert vb["sk.1.mnist1d"] == vb["sk.3.mnist1d"] == vb["sk.2b.mnist1d"] == "contradicted"
    assert vb["sk.3b.mnist1d"] == vb["sk.4.mnist1d"] == "contradicted"
    # one seed short of 99% training accuracy fails the gate: dependent claims inconclusive
    runs = _fake().runs
    runs[0].summary["intact/final_train_acc"] = 0.97
    gated = {r.claim.id: r for r in evaluate_all(mz.CLAIMS, mz.analyze(Results(runs)))}
    assert gated["sk.precondition.mnist1d"].verdict == "fail"
    assert gated["sk.2.mnist1d"].verdict == "inconclusive"
    assert "precondition failed" in gated["sk.2.mnist1d"].reason


@pytest.mark.slow
def test_figures_and_table(tmp_path, monkeypatch):
    res = _fake()
    paths = mz.figures(res, tmp_path)
    assert [p.name for p in paths] == [
        "memorization_test_accuracy.png", "memorization_shares.png",
        "memorization_curves.png", "memorization_groups.png", "memorization_gradients.png"]
    header, rows = mz.table(res)
    assert header[4] == "arm" and len(rows) == 2 * 5
    # a user run with two Pre-LN models: one panel per model, no per-seed clash
    user = [Run(f"u{m}{sd}", {**r.config, "setting": "user", "model": m, "arms": ["all"]},
                "finished", r.summary, [])
            for m in ("hf:gpt2", "hf:gpt_neo") for sd, r in enumerate(res.runs[:1] * 2)]
    user = [Run(u.key, {**u.config, "train": {"seed": i % 2}}, u.status, u.summary, [])
            for i, u in enumerate(user)]
    paths = mz.figures(Results(user), tmp_path / "user")
    assert len(paths) == 4  # no early/middle/later panel without those arms
    # the checkpoint memorizes part of its noisy samples: the all-noisy mean is drawn too
    import lnlab.plotting

    runs = [_pretrained_run(sd, 50, 10, 70) for sd in range(3)]
    for r in runs:
        for k in [k for k in r.summary if "/mem_total/" in k]:
            r.summary[k.replace("/mem_total/", "/noisy_total/")] = 3 * r.summary[k]
    drawn, real_save = [], lnlab.plotting.save

    def spy(fig, path):
        drawn.extend(ln.get_label() for ax in fig.axes for ln in ax.get_lines())
        return real_save(fig, path)

    monkeypatch.setattr(lnlab.plotting, "save", spy)
    assert mz.figures(Results(runs), tmp_path / "pt")
    assert "all noisy samples (incl. unmemorized)" in drawn


def test_spearman_reference():
    from scipy.stats import spearmanr  # scikit-learn depends on scipy

    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.normal(size=7).round(1).tolist()
        y = rng.normal(size=7).round(1).tolist()
        assert mz._spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(mz._spearman([1.0, 2.0], [2.0, 1.0]))


# --------------------------------------------------------------------------- CLI / end to end


def test_cli_model_flag_is_an_experiment_option(tmp_path, capsys):
    from lnlab.cli import main

    rc = main(["run", "baselines", "--model", "hf:bert", "--out", str(tmp_path / "o")])
    assert rc == 2 and "has no option 'model'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_runs_on_a_user_hf_dataset_dir(tmp_path):
    import datasets

    from lnlab.cli import app

    rng = np.random.default_rng(0)
    words = ["good", "bad", "fine", "awful", "nice", "poor", "the", "a", "is", "day"]
    texts = [" ".join(rng.choice(words, 6)) for _ in range(60)]
    labels = [int(("good" in t) or ("nice" in t)) for t in texts]
    d = datasets.Dataset.from_dict({"text": texts, "label": labels})
    d.save_to_disk(str(tmp_path / "hf"))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["run", "memorization", "--model", "hf:bert:dim=16",
                                 "--data", str(tmp_path / "hf"), "--seeds", "1",
                                 "--workers", "1", "-o", "epochs=2", "-o", "noise=0.1",
                                 "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "1 finished" in r.output
    md = (out / "report.md").read_text()
    assert "| user | scratch | post | hf:bert:dim=16 | all |" in md


@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path):
    from lnlab.experiments import run_experiment

    res = run_experiment("memorization", tmp_path, scale="tiny", seeds=1,
                         workers=1, progress=False)
    assert res.finished == 6 and res.failed == 0


def test_gradient_growth_measure():
    runs = []
    for seed in range(3):
        for fam, (a, b) in {"pre": (1.0, 4.0), "post": (2.0, 2.0)}.items():
            ep = [{"epoch": e, "intact/grad/learn_total/blocks.0.norm1": a + (b - a) * e / 30,
                   "intact/grad/learn_total/blocks.1.norm1": 9.0} for e in (10, 20, 30)]
            r = _run("mnist1d", fam, seed)
            runs.append(Run(r.key, r.config, "finished", {}, [{"epoch": 5}, *ep]))
    m = mz._growth(Results(runs))
    # pre: 4 / (1 + 3/3) = 2; post: 1 → geometric mean √2
    assert m.mean == pytest.approx(math.sqrt(2.0)) and m.n == 3


def test_gradient_sites_follow_forward_order_with_twelve_blocks():
    """With ≥ 10 blocks the key-sorted stored summary lists blocks 0, 1, 10, 11, 2, …; the
    analysis must use find_norms' forward order (recorded with the run) instead."""
    import json

    from lnlab.analysis.gradients import gradient_norms
    from lnlab.experiments.memorization.removal import grad_summary
    from lnlab.models import build_model
    from lnlab.surgery import find_norms

    torch.manual_seed(0)
    model = build_model("transformer:layers=12,dim=8,heads=2,ln=pre,patch=8,mlp_ratio=2",
                        input_shape=(40,), num_classes=4).double()
    x, y = torch.randn(6, 40, dtype=torch.float64), torch.randint(0, 4, (6,))
    res = gradient_norms(model, (x, y), (x[:3], y[:3]))
    summary = {f"intact/{k}": v for k, v in grad_summary(res.sites).items()}
    stored = json.loads(json.dumps(summary, sort_keys=True))  # what the store gives back
    run = Run("r", {"train": {"seed": 0}}, "finished", stored, [])
    forward = [s.name for s in find_norms(model, x[:1])]
    assert [n for n, _ in mz._sites(run)] == forward
    keyed = [k.split("/")[-1] for k in stored if k.startswith("intact/gradfinal/learn_total/")]
    assert keyed != forward  # the stored key order really is different
    blocks = [n for n, _ in mz._block_sites(run, "learn_total")]
    assert blocks == [s.name for s in find_norms(model, x[:1]) if s.block is not None]
    assert len(blocks) == 24 and blocks[2] == "blocks.1.norm1" and blocks[-1] == \
        "blocks.11.norm2"
    # the depth trend is read in that order: a norm that falls with depth gives ρ = −1
    fake = dict(stored)
    for i, n in enumerate(forward):
        fake[f"intact/gradfinal/learn_total/{n}"] = 100.0 - i
    assert mz._depth_rho(Run("r", {"train": {"seed": 0}}, "finished", fake, [])) == -1.0


def test_own_pretraining_gets_a_fresh_head_and_an_exact_fold(tmp_path):
    """The ``folded`` control removes the pretrained LN parameters without changing the
    function at step 0; ``all`` resets them and does change it; the head is re-drawn."""
    data = _npz(tmp_path, n_train=60)
    cfg = TrainConfig(model=TINY.format(ln="pre"), data=data, noise=0.1, epochs=1,
                      batch_size=10, lr=1e-2, checkpoint_every=0, seed=3, optimizer="adamw")
    pre = replace(cfg, noise=0.0, epochs=2, weight_decay=0.05, wd_exclude=["norm", "bias"])
    from lnlab.data import load_dataset

    info = load_dataset(data).info
    res = run_protocol(lambda: make_model(cfg, info), cfg, arms=("all", "folded"),
                       max_epochs=1, pretrain=pre, new_head=True, final_grads=False)
    fold, reset = res.arms["folded"].summary, res.arms["all"].summary
    assert fold["step0_kl"] < 1e-9 and fold["step0_agree"] == 1.0
    assert reset["step0_kl"] > fold["step0_kl"]
    assert fold["not_folded"] == ["final_norm"]  # pooled before the head: no exact fold
    assert res.arms["folded"].removed and "final_norm" not in res.arms["folded"].removed
    with pytest.raises(LnlabError, match="needs a pretraining stage"):
        run_protocol(lambda: make_model(cfg, info), cfg, arms=("folded",), max_epochs=1)


def test_quick_marks_what_it_leaves_out_as_not_run():
    ms = mz.analyze(Results([r for r in _fake().runs], "memorization", "quick", [0, 1, 2]))
    # the fake sweep has group arms; a quick-like one without them leaves sk.6/7 not run
    quick_like = [Run(r.key, {**r.config, "arms": ["all"]}, r.status, r.summary, [])
                  for r in _fake().runs]
    mq = mz.analyze(Results(quick_like, "memorization", "quick", [0, 1, 2]))
    res = {c.claim.id: c for c in evaluate_all(mz.CLAIMS, mq)}
    assert res["sk.7.mnist1d"].verdict == "not run" and "--scale full" in res["sk.7.mnist1d"].reason
    assert res["sk.1.tokens-hf"].verdict == "not run"
    assert "--scale full" in res["sk.1.tokens-hf"].reason
    assert "--scale paper" in res["sk.1.pretrained"].reason
    assert "--scale paper" in res["sk.2fold.mnist1d-pt"].reason
    assert ms["mnist1d: mem[post, early] − mean(middle, later)"].n == 3
    assert {c.regime for c in mz.CLAIMS if c.id.endswith(".pretrained")} == \
        {"real pretrained checkpoint"}


def _pretrained_run(seed, mem_intact, mem_all, rec_all, acc_all=0.83):
    s = {}
    for arm, (acc, mem, rec) in {"intact": (0.83, mem_intact, 0),
                                 "all": (acc_all, mem_all, rec_all)}.items():
        s.update({f"{arm}/{k}": v for k, v in _summ(acc, mem, rec, 0.05).items()})
    for i, site in enumerate(["embeddings.LayerNorm", "layer.0.norm1", "layer.1.norm1",
                              "layer.10.norm1"]):
        s[f"intact/gradfinal/learn_total/{site}"] = 8.0 / (i + 1)
        s[f"intact/gradfinal/mem_total/{site}"] = 2.0 / (i + 1)
        s[f"intact/gradfinal/learn_sameclass_total/{site}"] = 4.0 / (i + 1)
        s[f"intact/gradfinal/block/{site}"] = i - 1
        s[f"intact/gradfinal/order/{site}"] = i
    cfg = {"setting": "pretrained", "regime": "pretrained", "family": "post", "model": "m",
           "noise": 0.05, "arms": ["all"], "train": {"seed": seed}}
    return Run(f"p{seed}", cfg, "finished", s, [])


def test_pretrained_claims_read_memorization_relative_to_the_intact_model():
    runs = [_pretrained_run(sd, 80 + sd, 20 + sd, 70 - sd) for sd in range(4)]
    ms = mz.analyze(Results(runs, "memorization", "paper", [0, 1, 2, 3]))
    assert ms["pretrained: mem[post, all] / mem[post, intact]"].values[0] == pytest.approx(0.25)
    assert ms["pretrained: intact memorization (%)"].values[1] == pytest.approx(81.0)
    v = {c.claim.id: c.verdict for c in evaluate_all(mz.CLAIMS, ms)
         if c.claim.id.endswith(".pretrained")}
    assert v["sk.precondition.pretrained"] == "pass"
    assert v["sk.3b.pretrained"] == v["sk.3.pretrained"] == v["sk.1.pretrained"] == "supported"
    assert v["sk.8.pretrained"] == v["sk.8same.pretrained"] == "supported"
    assert v["sk.10post.pretrained"] == "supported"  # depth from the recorded order, not names
    # an intact model that memorized under half of the noisy labels fails the gate
    low = [_pretrained_run(sd, 30, 10, 70) for sd in range(4)]
    g = {c.claim.id: c for c in evaluate_all(mz.CLAIMS, mz.analyze(Results(low)))}
    assert g["sk.precondition.pretrained"].verdict == "fail"
    assert g["sk.3b.pretrained"].verdict == "inconclusive"


def test_a_lost_seed_fails_the_pretrained_gate_and_a_diverged_arm_is_left_out():
    runs = [_pretrained_run(sd, 80 + sd, 20 + sd, 70 - sd) for sd in range(4)]
    # seed 3's intact model diverged: the gate reads 0 for it rather than dropping the seed
    lost = [*runs[:3], Run("p3", runs[3].config, "diverged", runs[3].summary, [])]
    ms = mz.analyze(Results(lost))
    assert ms["pretrained: intact memorization (%)"].values[3] == 0.0
    g = {c.claim.id: c.verdict for c in evaluate_all(mz.CLAIMS, ms)}
    assert g["sk.precondition.pretrained"] == "fail"
    # seed 0's `all` arm diverged: its (cut-short) numbers must not count as an effect
    cut = Run("p0", runs[0].config, "finished", {**runs[0].summary, "all/status": "diverged"},
              [])
    ms = mz.analyze(Results([cut, *runs[1:]]))
    m = ms["pretrained: mem[post, all] / mem[post, intact]"]
    assert sorted(m.values) == [1, 2, 3] and m.excluded == 1
    assert 0 not in ms["pretrained: Δtest_acc[post, all − intact]"].values
    assert ms["pretrained: intact memorization (%)"].values[0] == pytest.approx(80.0)


def test_a_pre_ln_checkpoint_leaves_the_post_ln_claims_unjudged_and_says_why():
    runs = [_pretrained_run(sd, 80, 20, 70) for sd in range(3)]
    pre = [Run(r.key, {**r.config, "family": "pre"}, r.status, r.summary, []) for r in runs]
    res = {c.claim.id: c for c in evaluate_all(mz.CLAIMS, mz.analyze(Results(pre)))}
    for cid in ("sk.precondition.pretrained", "sk.3.pretrained", "sk.8.pretrained"):
        assert res[cid].verdict == "not run", cid
        assert "not Post-LN" in res[cid].reason


def test_fold_table_sets_reset_beside_folded():
    runs = []
    for seed in range(3):
        s = {}
        for arm, (acc, kl) in {"intact": (0.80, None), "all": (0.70 + 0.01 * seed, 0.02),
                               "folded": (0.79, 1e-14)}.items():
            s.update({f"{arm}/{k}": v for k, v in _summ(acc, 90, 5).items()})
            if kl is not None:
                s[f"{arm}/step0_kl"], s[f"{arm}/step0_agree"] = kl, 1.0 if kl < 1e-9 else 0.9
        cfg = {"setting": "mnist1d-pt", "regime": "own-pretrained", "family": "pre",
               "model": "m", "noise": 0.1, "arms": ["all", "folded"], "train": {"seed": seed}}
        runs.append(Run(f"f{seed}", cfg, "finished", s, []))
    from lnlab.experiments.memorization.figures import fold_table

    header, rows = fold_table(Results(runs))
    assert [r[0] for r in rows] == ["all", "folded"] and header[2].startswith("Δtest acc")
    assert rows[0][2].startswith("-9") and rows[1][2].startswith("-1")  # points vs intact
    assert rows[1][5].startswith("1e-14")
    assert [t for t, _, _ in mz.extra_tables(Results(runs))] == [
        "Own pretraining, Pre-LN: reset vs folded (mean [95% CI] over seeds)"]
