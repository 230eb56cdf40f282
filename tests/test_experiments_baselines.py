import json

import pytest

from lnlab.experiments import baselines, get_experiment
from lnlab.experiments.claims import evaluate
from lnlab.experiments.framework import Results, Run
from lnlab.runner import run_key


def test_sweep_covers_arms_datasets_and_seeds():
    exp = get_experiment("baselines")
    cfgs, seeds = exp.configs("quick")
    assert seeds == [0, 1, 2, 3, 4]
    assert len(cfgs) == len(baselines.ARMS) * 5  # quick: MNIST-1D only (every claim reads it)
    assert len({run_key("baselines", c) for c in cfgs}) == len(cfgs)
    mlp = [c for c in cfgs if c["arm"] == "mlp" and c["dataset"] == "mnist1d"]
    assert [c["train"]["seed"] for c in mlp] == [0, 1, 2, 3, 4]
    t = mlp[0]["train"]
    # the MNIST-1D paper's recipe: Adam 1e-2, batch 100, 6000 steps = 150 epochs of 40 batches
    assert (t["optimizer"], t["lr"], t["batch_size"], t["epochs"]) == ("adam", 1e-2, 100, 150)
    assert t["model"] == "mlp:depth=2,width=100,norm=none"
    full, _ = exp.configs("full")
    assert len(full) == len(baselines.ARMS) * len(baselines.DATASETS) * 10
    from lnlab.train import TrainConfig

    for c in cfgs:  # every config is a valid TrainConfig (the trainer would reject it later)
        TrainConfig.from_dict(c["train"]).validate()


def _fake_results(acc: dict[str, list[float]]) -> Results:
    runs = []
    for arm, values in acc.items():
        for seed, a in enumerate(values):
            cfg = {"arm": arm, "dataset": "mnist1d", "train": {"seed": seed}}
            curve = [{"epoch": e, "test_acc": a * e / 3} for e in (1, 2, 3)]
            runs.append(Run(f"{arm}{seed}", cfg, "finished", {"final_test_acc": a}, curve))
    return Results(runs, "baselines", "quick", [0, 1, 2, 3, 4])


def test_analysis_and_claims_on_known_numbers(tmp_path):
    res = _fake_results({"logistic": [0.31, 0.33, 0.32, 0.32, 0.32],
                         "mlp": [0.66, 0.70, 0.68, 0.67, 0.69],
                         "mlp+ln": [0.60, 0.62, 0.61, 0.60, 0.62]})
    ms = baselines.analyze(res)
    assert ms["test_acc[mnist1d/mlp]"].mean == pytest.approx(68.0)
    assert ms["test_acc[mnist1d/mlp]"].unit == "%"
    diff = ms["test_acc[mnist1d/mlp] − test_acc[mnist1d/logistic]"]
    assert dict(diff.values) == pytest.approx({0: 35.0, 1: 37.0, 2: 36.0, 3: 35.0, 4: 37.0})
    verdicts = {c.id: evaluate(c, ms).verdict for c in baselines.CLAIMS}  # strict: all measured
    assert verdicts == {"baselines.logistic": "supported", "baselines.mlp": "supported",
                        "baselines.mlp_vs_logistic": "supported",
                        "baselines.mlp_60": "supported",
                        "baselines.ln_no_harm": "contradicted"}  # LN lost 7 points here
    # digits was not run: its measurements are empty, nothing crashes
    assert ms["test_acc[digits/mlp]"].n == 0
    paths = baselines.figures(res, tmp_path)
    assert [p.name for p in paths] == ["test_accuracy.png", "test_accuracy_curves.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


@pytest.mark.slow
def test_logistic_run_trains_and_resumes(tmp_path):
    cfg = get_experiment("baselines").configs("quick", seeds=1)[0][0]
    assert cfg["arm"] == "logistic" and cfg["train"]["model"] == "linear"
    cfg["train"].update(epochs=2, checkpoint_every=1)
    out = baselines.run(cfg, tmp_path)
    assert out["status"] == "finished" and len(out["epochs"]) == 2
    assert 0.15 < out["summary"]["final_test_acc"] < 0.5  # a linear model on MNIST-1D
    assert "model" in out["artifacts"] and (tmp_path / out["artifacts"]["model"]).is_file()
    again = baselines.run(cfg, tmp_path)  # finished run dir: same numbers, no retraining
    assert json.dumps(again["summary"], sort_keys=True) == json.dumps(out["summary"],
                                                                       sort_keys=True)


def test_train_sections_are_completed_and_validated_before_running(monkeypatch):
    from lnlab.errors import LnlabError
    from lnlab.train import TrainConfig

    exp = get_experiment("baselines")
    cfg = exp.configs("quick", seeds=1)[0][0]
    assert cfg["train"] == TrainConfig.from_dict(cfg["train"]).to_dict()  # every field present
    assert set(cfg["train"]) == set(TrainConfig().to_dict())
    bad = baselines.sweep("quick", [0])
    bad[0]["train"]["lr"] = -1.0
    monkeypatch.setattr(baselines, "sweep", lambda scale, seeds: bad)
    with pytest.raises(LnlabError, match="lr must be a positive number"):
        exp.configs("quick", seeds=1)


def test_tiny_is_a_scale_with_the_same_settings_and_fewer_epochs():
    exp = get_experiment("baselines")
    tiny, seeds = exp.configs("tiny")
    quick, _ = exp.configs("quick", seeds=len(seeds))
    assert seeds == [0, 1]
    assert [(c["dataset"], c["arm"], c["train"]["seed"]) for c in tiny] == \
        [(c["dataset"], c["arm"], c["train"]["seed"]) for c in quick]
    assert {c["train"]["epochs"] for c in tiny} == {1}
    for t, q in zip(tiny, quick, strict=True):  # only the epochs differ
        assert {k: v for k, v in t["train"].items() if k != "epochs"} == \
            {k: v for k, v in q["train"].items() if k != "epochs"}


@pytest.mark.slow
def test_tiny_end_to_end(tmp_path):
    from lnlab.experiments import run_experiment

    res = run_experiment("baselines", tmp_path, scale="tiny", seeds=1, progress=False)
    assert (res.total, res.finished, res.failed) == (3, 3, 0), res.errors  # 3 arms, MNIST-1D
    from lnlab.report import build_report

    build_report(tmp_path)
    assert (tmp_path / "figures" / "baselines" / "test_accuracy.png").is_file()
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert {c["id"] for c in claims["claims"]} >= {c.id for c in baselines.CLAIMS}
