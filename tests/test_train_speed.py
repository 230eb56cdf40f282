"""The trainer's shortcuts give the same numbers as the plain code they replace."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lnlab.experiments.memorization.removal import noisy_counts_hook
from lnlab.train import TrainConfig, build_optimizer, evaluate, train

DATA = "clusters:n=400,dim=8,classes=4,spread=1.5"
MODEL = "mlp:depth=2,width=32,norm=layernorm"


def _steps(opt_cls: type, **kw) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 4))
    opt = opt_cls(model.parameters(), **kw)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(256, 8, generator=g), torch.randint(0, 4, (256,), generator=g)
    for idx in torch.randperm(256, generator=g).split(16):
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(("opt_cls", "kw"), [
    (torch.optim.Adam, {"lr": 1e-2}),
    (torch.optim.Adam, {"lr": 1e-2, "weight_decay": 0.1}),
    (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
])
def test_foreach_optimizers_are_bitwise_the_per_tensor_ones(opt_cls: type, kw: dict) -> None:
    # build_optimizer uses foreach=True for speed; on CPU it must not change a single bit
    a = _steps(opt_cls, foreach=False, **kw)
    b = _steps(opt_cls, foreach=True, **kw)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_build_optimizer_uses_foreach(name: str) -> None:
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, TrainConfig(model="mlp", optimizer=name))
    assert all(g["foreach"] for g in opt.param_groups)


def test_noisy_counts_from_the_trainers_predictions_match_a_fresh_forward() -> None:
    seen: list[tuple[dict, dict, torch.Tensor]] = []

    def check(state) -> None:
        fast = noisy_counts_hook(state)
        slow = noisy_counts_hook(dataclasses.replace(state, train_preds=None))
        x, y = state.data.x_train, state.labels.labels
        seen.append((fast, slow, state.train_preds.cpu() == evaluate(state.model, x, y).preds))

    cfg = TrainConfig(model=MODEL, data=DATA, epochs=3, batch_size=32, lr=1e-2, noise=0.3,
                      seed=0, threads=1)
    train(cfg, hooks=[check])
    assert len(seen) == 3
    for fast, slow, same in seen:
        assert fast == slow and fast["n_noisy"] > 0
        assert fast["n_mem"] + fast["n_rec"] + fast["n_rand"] == fast["n_noisy"]
        assert bool(same.all())
