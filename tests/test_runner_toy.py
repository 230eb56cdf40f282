"""A toy experiment for the runner/store/report tests (importable by worker processes).

``run`` imitates a trainer: it walks ``epochs`` epochs, checkpoints after each one into its
run dir and resumes from there, logs every executed epoch and every completion (so tests can
prove nothing ran twice), and can diverge, raise, kill its own process, or report the torch
thread count it ran on, on request.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from lnlab.experiments.claims import Check, Claim, Effect, Equivalence, Measurement
from lnlab.runner.config import expand_grid

NAME = "toy"
DESCRIPTION = "A deterministic stand-in for training, used by the tests."
SEEDS = {"quick": 2, "full": 3}
OPTIONS = {"sleep": "seconds per epoch"}
HEADLINE_METRIC = "score"

CLAIMS = [
    Claim("toy.level", "test fixture", "the score of arm a is about 1", "score[a]",
          "≈ 1 ± 0.1", Equivalence(0.1, null=1.0, min_n=2)),
    Claim("toy.b_beats_a", "test fixture", "arm b scores higher than arm a", "score[b]-score[a]",
          "b − a > 0.5", Effect(">", 0.5, min_n=2)),
    Claim("toy.never", "test fixture", "arm a scores above 5", "score[a]", "> 5",
          Effect(">", 4.0, null=1.0, min_n=2)),
    Claim("toy.missing", "test fixture", "a quantity nobody measures", "nothing", "anything",
          Effect(">", 1.0, min_n=2)),
    Claim("toy.exact", "test fixture", "b − a is exactly 1", "score[b]-score[a]", "1",
          Check(1.0, 1e-9)),
]


def score(arm: str, seed: int) -> float:
    """The deterministic final value of a run (what an uninterrupted run returns)."""
    return (1.0 if arm == "a" else 2.0) + 0.01 * seed


def sweep(scale: str, seeds: list[int], sleep: str = "0") -> list[dict]:
    epochs = 3 if scale == "quick" else 5
    return expand_grid({"epochs": epochs, "sleep": float(sleep)}, {"arm": ["a", "b"]},
                       seeds=seeds)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(config: dict, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    ckpt = run_dir / "ckpt.json"
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"epoch": 0, "history": []}
    arm, seed = config["arm"], config["seed"]
    if config.get("fail"):
        raise RuntimeError("the toy run was asked to fail\nsecond line of the message")
    if config.get("die"):
        os._exit(3)  # a worker process that dies without a Python exception
    for epoch in range(state["epoch"] + 1, config["epochs"] + 1):
        time.sleep(config.get("sleep", 0.0))
        with (run_dir / "epochs.log").open("a") as f:
            f.write(f"{epoch}\n")
        value = score(arm, seed) * epoch / config["epochs"]
        if config.get("diverge") and epoch == 2:
            state["history"].append({"epoch": epoch, "score": math.nan})
            return {"status": "diverged", "summary": {"score": math.nan, "epochs": epoch},
                    "epochs": state["history"]}
        state["history"].append({"epoch": epoch, "score": value, "loss": 1.0 / epoch,
                                 "norms": {"w1": epoch * 0.5}})
        state["epoch"] = epoch
        _write_atomic(ckpt, json.dumps(state))
    with (run_dir / "completions.log").open("a") as f:
        f.write("done\n")
    (run_dir / "out.txt").write_text("artifact")
    summary = {"score": state["history"][-1]["score"], "epochs": state["epoch"]}
    if config.get("threads_probe"):  # the intra-op thread count the backend gave this run
        import torch

        summary["threads"] = torch.get_num_threads()
    return {"summary": summary, "epochs": state["history"], "artifacts": {"out": "out.txt"}}


def analyze(results) -> dict[str, Measurement]:
    return {
        "score[a]": results.per_seed("score", arm="a"),
        "score[b]-score[a]": results.paired("score", {"arm": "b"}, {"arm": "a"}),
    }


def figures(results, out_dir: Path) -> list[Path]:
    from lnlab.plotting import bars_with_seeds, figure, save

    arms = results.values("arm")
    with figure() as (fig, ax):
        bars_with_seeds(ax, arms, [list(results.per_seed("score", arm=a).values.values())
                                   for a in arms], ylabel="score (a.u.)",
                        reference={"target": 1.0})
        return [save(fig, Path(out_dir) / "scores.png")]


def test_toy_run_resumes_from_its_checkpoint(tmp_path):
    cfg = {"arm": "a", "seed": 1, "epochs": 3, "sleep": 0.0}
    _write_atomic(tmp_path / "ckpt.json", json.dumps(
        {"epoch": 2, "history": [{"epoch": 1, "score": 0.0}, {"epoch": 2, "score": 0.0}]}))
    out = run(cfg, tmp_path)
    assert (tmp_path / "epochs.log").read_text() == "3\n"  # only the missing epoch ran
    assert out["summary"]["score"] == score("a", 1)
