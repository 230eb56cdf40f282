"""lnlab.analysis.gradients on tiny Hugging Face models (BERT = Post-LN, GPT-2 = Pre-LN)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from lnlab.analysis.gradients import (
    gradient_norms,
    gradient_stats,
    per_sample_grad_norms,
)
from lnlab.models.hf import build_hf
from lnlab.surgery import find_norms
from test_gradients import _randomize_gains, _reference

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(arch: str):
    torch.manual_seed(0)
    m = build_hf(arch, layers=2, classify=True, num_labels=3).double().eval()
    _randomize_gains(m)
    return m


def _inputs(n: int = 5, t: int = 8) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Right-padded token ids (pad id 0, as in the tiny configs) with their attention mask."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 128, (n, t), generator=g)
    lengths = torch.tensor([t, t - 3, t - 1, 2, t - 2][:n])
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask}, torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_hf_per_sample_norms_match_single_sample_loop(arch):
    model = _model(arch)
    x, y = _inputs()
    got = per_sample_grad_norms(model, x, y, batch_size=3)
    for red in ("sample", "last"):
        got = per_sample_grad_norms(model, x, y, batch_size=3, reduction=red)
        for i in (1, 3):
            ref = _reference(model, {k: v for k, v in x.items()}, y, i, mask=x["attention_mask"])
            for name, r in ref.items():
                t, b = r[red]
                assert got.total[name][i].item() == pytest.approx(t, rel=1e-9, abs=1e-13)
                assert got.branch[name][i].item() == pytest.approx(b, rel=1e-9, abs=1e-13)


def test_bert_post_ln_total_equals_branch_gpt2_pre_ln_differs():
    x, y = _inputs()
    bert = per_sample_grad_norms(_model("bert"), x, y)
    assert len(bert.total) == 5  # embeddings LN + 2 per block
    for name in bert.total:
        torch.testing.assert_close(bert.total[name], bert.branch[name], rtol=1e-12, atol=0)
    gpt2 = per_sample_grad_norms(_model("gpt2"), x, y)
    assert set(gpt2.total) == {"transformer.h.0.ln_1", "transformer.h.0.ln_2",
                               "transformer.h.1.ln_1", "transformer.h.1.ln_2",
                               "transformer.ln_f"}
    for name in gpt2.total:
        diff = (gpt2.total[name] - gpt2.branch[name]).abs().max() / gpt2.total[name].max()
        if name == "transformer.ln_f":
            assert diff < 1e-12
        else:
            assert diff > 1e-3, name


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_hf_gradient_norms_and_a1(arch):
    model = _model(arch)
    x, y = _inputs()
    res = gradient_norms(model, (x, y), ({k: v[:2] for k, v in x.items()}, (y[:2] + 1) % 3))
    sites = find_norms(model)
    assert [s.name for s in res.sites] == [s.name for s in sites]
    assert all(s.learning_total > 0 and s.n_memorization == 2 for s in res.sites)
    st = gradient_stats(model, x, y)
    assert len(st.sites) == len(sites) and not st.skipped
    assert st.max_rel_dev < 1e-8
    n_valid = int(x["attention_mask"].sum())
    assert all(s.rows == n_valid for s in st.sites)  # padding rows left out
    assert all(abs(s.mean) < 1e-8 * s.g_var_over_sigma2 ** 0.5 for s in st.sites)
