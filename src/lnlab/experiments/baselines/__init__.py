"""Baselines: logistic regression and MLPs (with and without LayerNorm) on MNIST-1D and digits.

Method. We train three models on the standard MNIST-1D split (4000 train / 1000 test, 40
features, 10 classes; Greydanus & Kobak, "Scaling down deep learning with MNIST-1D", 2020/2024)
and on scikit-learn's 8×8 digits:

- *logistic*: one affine map and softmax cross-entropy (multinomial logistic regression);
- *mlp*: two hidden layers of width 100 with ReLU, no normalization (the paper's MLP);
- *mlp+ln*: the same MLP with LayerNorm before each ReLU (Linear → LN → ReLU).

All use the paper's recipe: Adam, learning rate 1e-2, batch size 100, no weight decay,
6000 steps on MNIST-1D (150 epochs), the final-epoch test accuracy reported. Each setting is
trained with several seeds (initialization and batch order; the data split is fixed).
"quick" uses 5 seeds, "full" 10. The experiment is the sanity check of the whole pipeline:
if these numbers are off, nothing downstream can be trusted.

The package reads in that order: this file (the claims), ``sweep`` (the settings per scale),
``protocol`` (one run), ``measures`` (what the claims test), ``figures``.
"""

from __future__ import annotations

from lnlab.experiments.baselines.figures import figures
from lnlab.experiments.baselines.measures import analyze, final_test_acc_pct
from lnlab.experiments.baselines.protocol import run
from lnlab.experiments.baselines.sweep import ARMS, DATASETS, EXTRA_SCALES, RECIPE, SETTINGS, sweep
from lnlab.experiments.claims import Claim, Effect, Equivalence, NonInferiority

NAME = "baselines"
DESCRIPTION = ("MNIST-1D (and digits) logistic regression and MLPs with and without "
               "LayerNorm, trained with the MNIST-1D paper's recipe: the pipeline's sanity check.")
SEEDS = {"quick": 5, "full": 10}
GROUP_BY = ("dataset", "arm")
TABLE_METRICS = (("final test acc (%)", "final_test_acc", 100),
                 ("best test acc (%)", "best_test_acc", 100),
                 ("final train acc (%)", "final_train_acc", 100),
                 ("time per run (s)", "wall_s", 1))
HEADLINE_METRIC = "final_test_acc"

PAPER = "Greydanus & Kobak, Scaling down deep learning with MNIST-1D (2020), Table 1"
# Pre-registered (before any run). The paper reports one number per model (Table 1: logistic
# 32%, MLP 68%) from its own data sample, so the "≈" claims are equivalence tests around those
# numbers with stated margins: ±4 points for the convex logistic model and ±6 for the MLP
# (whose final accuracy moves with seed and overfitting). The MLP−logistic gap is 36 points in
# Table 1; 20 points is the smallest gap we would still call "a wide margin".
M = "lnlab.experiments.baselines.analyze"
CLAIMS = [
    Claim("baselines.logistic", PAPER,
          "Logistic regression reaches about 32% test accuracy on MNIST-1D.",
          "test_acc[mnist1d/logistic]", "≈ 32% (equivalence margin ±4 points)",
          Equivalence(4.0, null=32.0), measured_by=M),
    Claim("baselines.mlp", PAPER,
          "An MLP reaches about 68% test accuracy on MNIST-1D.",
          "test_acc[mnist1d/mlp]", "≈ 68% (equivalence margin ±6 points)",
          Equivalence(6.0, null=68.0), measured_by=M),
    Claim("baselines.mlp_vs_logistic", PAPER,
          "The MLP beats logistic regression by a wide margin (68% vs 32%).",
          "test_acc[mnist1d/mlp] − test_acc[mnist1d/logistic]",
          "MLP higher by > 20 points (paired over seeds)", Effect(">", 20.0), measured_by=M),
    Claim("baselines.mlp_60", "lnlab issue 4 (acceptance)",
          "An MLP without norm trained with the usual recipe reaches at least 60% test accuracy.",
          "test_acc[mnist1d/mlp]", "mean accuracy > 60% (CI above 60)",
          Effect(">", 60.0), measured_by=M),
    Claim("baselines.ln_no_harm", "lnlab sanity check (no paper claim)",
          "Adding LayerNorm to the MLP costs at most 3 points of test accuracy on MNIST-1D.",
          "test_acc[mnist1d/mlp+ln] − test_acc[mnist1d/mlp]",
          "not worse by more than 3 points (non-inferiority)",
          NonInferiority(">", 3.0), measured_by=M),
]

__all__ = ["ARMS", "CLAIMS", "DATASETS", "DESCRIPTION", "EXTRA_SCALES", "NAME", "RECIPE",
           "SETTINGS", "analyze", "figures", "final_test_acc_pct", "run", "sweep"]
