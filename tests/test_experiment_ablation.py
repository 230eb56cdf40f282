"""The norm-variant ablation (Xu et al.): sweep, scoring, pooled comparisons, A1 deviation,
the AdaNorm probe, the claims on synthetic results, and one tiny end-to-end run."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lnlab.errors import LnlabError
from lnlab.experiments import ablation as ab
from lnlab.experiments import evaluate, get_experiment, run_experiment
from lnlab.experiments.framework import Results, Run
from lnlab.models import build_model


def _run(task: str, variant: str, depth: int, seed: int, *, status: str = "finished",
         acc: float = 0.9, test_loss: float = 0.5, train_loss: float = 0.3,
         epochs: list[dict] | None = None, classes: int = 10) -> Run:
    cfg = {"task": task, "variant": variant, "depth": depth, "train": {"seed": seed}}
    summary = {"num_classes": classes}
    if status == "finished":
        summary.update(final_test_acc=acc, final_test_loss=test_loss,
                       final_train_loss=train_loss)
    return Run(f"{task}-{variant}-{depth}-{seed}", cfg, status, summary, epochs or [])


def test_sweep_sizes_and_configs_validate():
    exp = get_experiment("ablation")
    quick, seeds = exp.configs("quick")
    assert seeds == [0, 1, 2, 3, 4]
    # quick: 6 variants (the ones the claims compare) × the 2 MLP tasks × 2 depths × 5 seeds
    assert len(quick) == 6 * 2 * 2 * 5
    assert {c["task"] for c in quick} == {"mnist1d_mlp", "digits_mlp"}
    assert {c["variant"] for c in quick} >= {"layernorm", "layernorm_simple", "detach_both",
                                             "detach_mean", "detach_std", ab.ADANORM}
    full, fseeds = exp.configs("full")
    assert len(full) == 10 * 5 * 3 * len(fseeds) == 750
    keys = {(c["task"], c["depth"], c["variant"], c["train"]["seed"]) for c in quick}
    assert len(keys) == len(quick)
    lm = [c for c in full if c["task"] == ab.LM_TASK]
    assert lm and all("causal=true" in c["train"]["model"] for c in lm)
    assert {c["depth"] for c in full} == {2, 6, 12}
    adanorm = next(c for c in full if c["variant"] == "adanorm_C2")
    assert "norm=adanorm;C=2" in adanorm["train"]["model"]
    with pytest.raises(LnlabError, match="tiny"):
        exp.configs("quick", options={"tiny": "yes"})


def test_score_counts_divergence_as_chance():
    assert ab.score(_run("digits_mlp", "layernorm", 2, 0, acc=0.97)) == pytest.approx(97.0)
    assert ab.score(_run("digits_mlp", "none", 2, 0, status="diverged")) == pytest.approx(10.0)
    lm = _run(ab.LM_TASK, "layernorm", 2, 0, test_loss=2 * math.log(2), classes=64)
    assert ab.score(lm) == pytest.approx(2.0)
    assert ab.score(_run(ab.LM_TASK, "none", 2, 0, status="diverged", classes=64)) == 6.0
    assert math.isnan(ab.score(_run("digits_mlp", "none", 2, 0, status="failed")))


def test_cell_marks_diverged_runs():
    ok = [_run("digits_mlp", "v", 2, s, acc=a) for s, a in enumerate((0.9, 0.92))]
    div = _run("digits_mlp", "v", 2, 2, status="diverged")
    assert ab.cell(ok) == "91 ± 1.4"
    assert ab.cell([*ok, div]) == "91 ± 1.4 (1/3 diverged)"
    assert ab.cell([div, div]) == "diverged"
    assert ab.cell([]) == "–"


def test_pooled_difference_means_over_cells_per_seed():
    runs = []
    for s in range(3):
        for task, gap in (("digits_mlp", 0.02), ("mnist1d_mlp", 0.04)):
            runs.append(_run(task, "layernorm_simple", 2, s, acc=0.9))
            runs.append(_run(task, "detach_both", 2, s, acc=0.9 - gap - 0.01 * s))
    res = Results(runs)
    cells = [("digits_mlp", 2), ("mnist1d_mlp", 2)]
    m = ab.pooled_difference(res, "layernorm_simple", "detach_both", cells)
    assert m.values == pytest.approx({0: 3.0, 1: 4.0, 2: 5.0})
    # a failed run removes its seed (excluded); a diverged one scores chance
    runs[1] = _run("digits_mlp", "detach_both", 2, 0, status="failed")
    runs[3] = _run("mnist1d_mlp", "detach_both", 2, 0, status="failed")
    runs[5] = _run("digits_mlp", "detach_both", 2, 1, status="diverged")
    m = ab.pooled_difference(Results(runs), "layernorm_simple", "detach_both", cells)
    assert set(m.values) == {1, 2} and m.excluded == 1
    assert m.values[1] == pytest.approx(((90 - 10) + 5.0) / 2)


def _epoch(mean: float, var: float, xu_mean: float, xu_var: float, dg: float = 4.0,
           rel: float = 0.0) -> dict:
    site = "blocks.0.norm"
    vals = {"mean": mean, "var": var, "xu_mean": xu_mean, "xu_var": xu_var,
            "g_var_over_sigma2": dg, "g_mean_over_sigma": 0.1, "m2_over_sigma2": 0.2,
            "rel_dev_grad": rel}
    return {"epoch": 1, **{f"gstat/{k}/{site}": v for k, v in vals.items()}}


def test_xu_deviation_is_relative_to_the_upstream_scale():
    exact = _run("digits_mlp", "layernorm", 2, 0, epochs=[_epoch(0.0, 3.0, 0.0, 3.0)])
    assert ab.xu_deviation(exact) == 0.0
    off = _run("digits_mlp", "layernorm", 2, 0,
               epochs=[_epoch(0.0, 3.0, 0.0, 3.0), _epoch(0.02, 3.0, 0.0, 3.04)])
    assert ab.xu_deviation(off) == pytest.approx(max(0.02 / 2.0, 0.04 / 4.0))
    assert math.isnan(ab.xu_deviation(_run("digits_mlp", "layernorm", 2, 0)))
    cf = _run("digits_mlp", "adanorm_C1", 2, 0, epochs=[_epoch(0.002, 3, 0, 3, rel=1e-6)])
    assert ab.closed_form_deviation(cf) == pytest.approx(0.001)


def _synthetic(detach_gap: float, seeds: int = 3) -> Results:
    runs = []
    for s in range(seeds):
        for task in ab.CLS_TASKS:
            for depth in (2, 6):
                deep = 2.0 if depth == 6 else 1.0
                for v, acc in (("layernorm", 0.90), ("layernorm_simple", 0.905),
                               ("detach_both", 0.90 - detach_gap * deep),
                               ("detach_mean", 0.90), ("detach_std", 0.88),
                               ("adanorm_C1", 0.905 + 0.001 * s)):
                    tl = 0.30 if v == "layernorm" else 0.35
                    ep = [_epoch(0.0, 3.0, 0.0, 3.0)]
                    runs.append(_run(task, v, depth, s, acc=acc, test_loss=0.5,
                                     train_loss=tl, epochs=ep))
    return Results(runs)


def test_claims_on_synthetic_results():
    exp = get_experiment("ablation")
    m = exp.analyze(_synthetic(0.03))
    verdicts = {c.id: evaluate(c, m).verdict for c in exp.claims}
    assert verdicts["A1.full"] == "pass"
    assert verdicts["A5"] == "supported"
    assert verdicts["A6"] == "supported" and verdicts["A6.depth"] == "supported"
    assert verdicts["A7"] == "supported"
    assert verdicts["A8"] == "supported"
    assert verdicts["A8.gap"] == "supported" and verdicts["A8.train"] == "supported"
    assert verdicts["A6.lm"] == "not run"  # no LM runs: the task runs at --scale full
    m = exp.analyze(_synthetic(-0.03))  # DetachNorm better than LN-simple
    verdicts = {c.id: evaluate(c, m).verdict for c in exp.claims}
    assert verdicts["A6"] == "contradicted" and verdicts["A6.depth"] == "contradicted"


def test_table_layout_variants_by_task():
    header, rows = ab.table(_synthetic(0.03, seeds=2))
    assert header[0] == "variant" and header[1] == "MNIST-1D MLP d=2"
    assert [r[0] for r in rows] == ["LayerNorm", "LayerNorm-simple", "DetachNorm",
                                    "detach mean", "detach std", "AdaNorm C=1"]
    assert all(len(r) == len(header) for r in rows)



def test_figures_from_synthetic_results(tmp_path):
    paths = ab.figures(_synthetic(0.03, seeds=2), tmp_path)
    assert [p.name for p in paths] == ["ablation_by_depth.png", "ablation_convergence.png",
                                       "ablation_gradient_stats.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert ab.figures(Results([]), tmp_path / "none") == []

def test_adanorm_probe_on_real_activations():
    torch.manual_seed(0)
    model = build_model("mlp:depth=3,width=32,norm=adanorm;C=2", input_shape=(20,),
                        num_classes=4)
    data = SimpleNamespace(x_train=3 * torch.randn(64, 20))
    state = SimpleNamespace(epoch=5, cfg=SimpleNamespace(epochs=5), model=model, data=data,
                            device=torch.device("cpu"))
    out = ab.adanorm_probe(samples=64)(state)
    assert out["ada/z_mean_dev"] < 1e-5  # exact up to float32
    assert out["ada/neg_share"] == 0.0 and out["ada/width"] == 32
    assert out["ada/z_mean_dev_eps0"] < 1e-3
    state.epoch = 4
    assert ab.adanorm_probe()(state) == {}


@pytest.mark.slow
def test_tiny_end_to_end(tmp_path):
    res = run_experiment("ablation", tmp_path, scale="tiny", seeds=3, workers=2,
                         progress=False)
    assert res is not None
    from lnlab.report import build_report

    build_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "LayerNorm-simple" in report and "A1.detach_both" in report
    assert (tmp_path / "figures" / "ablation" / "ablation_gradient_stats.png").is_file()
    import json

    checks = {c["id"]: c for c in json.loads((tmp_path / "claims.json").read_text())["checks"]}
    for cid in ("A1.full", "A1.detach_mean", "A1.detach_std", "A1.detach_both", "A2", "A3",
                "A4"):
        assert checks[cid]["verdict"] == "pass", checks[cid]["reason"]
