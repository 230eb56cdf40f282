"""``lnlab inspect``: built-in specs, hf:NAME, hf:PATH, --json and errors."""

from __future__ import annotations

import json

import pytest

from lnlab.cli import main
from lnlab.models import HF_DEFAULTS

pytestmark = pytest.mark.usefixtures("one_thread")


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_builtin_spec_table(capsys):
    code, out, _ = run(capsys, "inspect", "transformer:layers=3,dim=16,heads=2")
    assert code == 0
    assert "blocks.2.norm2" in out and "final_norm" in out
    assert "7 norm sites (early 2, middle 2, later 2, final 1)" in out
    assert "placement: Pre-LN" in out


def test_builtin_spec_json(capsys):
    code, out, _ = run(capsys, "inspect", "cnn:layers=3,channels=8,norm=groupln;groups=4",
                       "--input-shape", "8,8", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["n_sites"] == 3 and data["placement"]["kind"] == "none"
    assert [s["kind"] for s in data["sites"]] == ["groupln"] * 3
    assert data["norm_affine_parameters"] == 3 * 16
    assert data["description"].startswith("cnn:channels=8,layers=3,norm=groupln;groups=4")


def test_token_transformer_post_ln(capsys):
    code, out, _ = run(capsys, "inspect", "transformer:layers=2,dim=16,heads=2,ln=post",
                       "--input-shape", "12", "--vocab-size", "30", "--json")
    data = json.loads(out)
    assert code == 0 and data["placement"]["label"] == "Post-LN" and data["n_sites"] == 4


@pytest.mark.parametrize("argv, msg", [
    (("inspect", "resnet"), "valid models"),
    (("inspect", "mlp", "--input-shape", "a,b"), "--input-shape"),
    (("inspect", "hf:"), "needs an architecture"),
])
def test_bad_input_exits_2(capsys, argv, msg):
    code, _, err = run(capsys, *argv)
    assert code == 2 and msg in err and err.count("\n") == 1


def test_hf_name_and_path(capsys, tmp_path):
    transformers = pytest.importorskip("transformers")
    code, out, _ = run(capsys, "inspect", "hf:bert:layers=6", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["n_sites"] == 13 and data["groups"] == {"embedding": 1, "early": 4,
                                                        "middle": 4, "later": 4}
    assert data["placement"]["kind"] == "post"
    # --layers is the same as the spec option; the one default (HF_DEFAULTS) is 3 blocks.
    code, out6, _ = run(capsys, "inspect", "hf:bert", "--layers", "6", "--json")
    assert json.loads(out6)["sites"] == data["sites"]
    code, out, _ = run(capsys, "inspect", "hf:bert", "--json")
    assert json.loads(out)["n_sites"] == 1 + 2 * HF_DEFAULTS["layers"]
    cfg = transformers.GPT2Config(n_embd=16, n_layer=3, n_head=2, vocab_size=40,
                                  n_positions=32, bos_token_id=1, eos_token_id=2)
    cfg.save_pretrained(tmp_path)
    code, out, _ = run(capsys, "inspect", f"hf:{tmp_path}")
    assert code == 0
    assert "h.2.ln_2" in out and "ln_f" in out and "placement: Pre-LN" in out
    code, _, err = run(capsys, "inspect", "hf:nonexistent-arch")
    assert code == 2 and "tiny configs exist for" in err
