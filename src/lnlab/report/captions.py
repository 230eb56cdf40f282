"""Figure captions and claim regimes for the report (the figure code stays in the experiments).

A caption says what a figure shows and how to read it; a figure with no entry here gets its
file name made readable (``ablation_by_depth`` → "Ablation by depth"), never a bare file name.
"""

from __future__ import annotations

from pathlib import Path

from lnlab.experiments.claims import ClaimResult

__all__ = ["CAPTIONS", "caption", "regime_of"]

CAPTIONS: dict[str, str] = {
    "test_accuracy": "Final test accuracy per arm (bars: mean over seeds; dots: single seeds).",
    "test_accuracy_curves": "Test accuracy during training, one line per arm (mean over seeds).",
    "ablation_by_depth": "Final validation loss of each LayerNorm ablation against the number "
                         "of blocks, one panel per task (lower is better).",
    "ablation_convergence": "Training and validation loss per epoch for each ablation, one "
                            "panel per task.",
    "ablation_gradient_stats": "Measured gradient statistics against the theory: re-scaling "
                               "(left) falls below the diagonal only when the σ path is kept; "
                               "re-centring (right) is zero only when the μ path is kept.",
    "capacity_vs_groups": "Training accuracy on random labels against the LN-G group number g, "
                          "one panel per data subset: capacity grows with g.",
    "proxy_vs_groups": "Random-feature proxy (Gaussian inputs, d = 32): training accuracy "
                       "against the group number g.",
    "nonlinearity_vs_groups": "Hessian nonlinearity of LN-G relative to plain LN against the "
                              "group number g.",
    "construction_2d": "The two-dimensional construction: an LN-Net separating classes that "
                       "no linear model separates.",
    "memorization_test_accuracy": "Test accuracy of the intact model and after removing the "
                                  "LN parameters, per setting and model family.",
    "memorization_shares": "Shares of the noisy training samples that stay memorized, are "
                           "recovered (true label) or become wrong after LN removal.",
    "memorization_curves": "Training curves per setting and family: test accuracy (upper "
                           "axes) and memorization of the noisy samples (lower axes) per "
                           "epoch, intact model vs all LN parameters removed.",
    "memorization_groups": "Removing the LN parameters of early, middle or later layer groups: "
                           "effect on memorization and on the overfit gap.",
    "memorization_gradients": "Per-sample gradient norms at every LN of the intact models: "
                              "learning vs memorized samples, and their ratio (right axis).",
    "accuracy_vs_weight_decay": "Final test accuracy (top) and weight norms (bottom) against "
                                "the hidden weight decay λ; squares are norm-matched controls "
                                "trained without decay.",
    "norms_eta_eff_angles": "Weight norm, effective learning rate η/‖w‖² and per-step angle "
                            "during training, one panel per architecture and quantity.",
    "audit_table": "Scale-invariance audit of the trained λ = 0 MNIST-1D models (first seed).",
    "scores": "Score per arm (bars: mean over seeds; dots: single seeds).",
}


def caption(path: Path) -> str:
    """The caption of a figure file, by its stem."""
    stem = Path(path).stem
    return CAPTIONS.get(stem) or stem.replace("_", " ").replace("-", " ").capitalize() + "."


def regime_of(c: ClaimResult) -> str:
    """The training regime a claim was tested in: the claim's own ``regime`` if it has one,
    else read from its statement ("from scratch", "fine-tuning", "pretrained"), else "–"."""
    own = getattr(c.claim, "regime", "")
    if own:
        return str(own)
    text = c.claim.statement.lower()
    if "fine-tun" in text:
        return "fine-tuning"
    if "pretrained" in text:
        return "pretrained"
    if "from scratch" in text:
        return "from scratch"
    return "–"
