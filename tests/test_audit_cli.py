"""``lnlab audit``: the acceptance commands, JSON output, errors, and tiny Hugging Face models."""

from __future__ import annotations

import json

import pytest

from lnlab.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _run_json(capsys, *args: str) -> dict:
    assert main(["audit", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plain_layernorm_mlp_hidden_invariant_readout_not(capsys):
    d = _run_json(capsys, "mlp:depth=4,width=64,norm=layernorm,residual=none")
    v = {g["name"]: g for g in d["groups"]}
    for i in range(4):
        assert v[f"blocks.{i}.fc"]["invariant"], v[f"blocks.{i}.fc"]
        assert v[f"blocks.{i}.fc"]["max_change_eps0"] < 1e-12
    assert not v["readout"]["invariant"]
    assert v["readout"]["max_change_eps0"] > 0.1
    assert d["unconstrained_share"] > 0.5
    assert d["infimum_sq_norm"] < d["total_sq_norm"]
    assert "cannot constrain" in d["verdict"]


def test_prenorm_without_final_norm_hidden_not_invariant(capsys):
    d = _run_json(capsys, "mlp:depth=4,width=64,norm=layernorm,residual=pre")
    hidden = [g for g in d["groups"] if g["name"].startswith(("blocks.", "input_proj"))]
    assert hidden and not any(g["invariant"] for g in hidden)
    (stream,) = d["joint"]
    assert not stream["invariant"]
    assert d["unconstrained_share"] == 0.0
    d2 = _run_json(capsys, "mlp:depth=4,width=64,norm=layernorm,residual=pre,final_norm=true")
    assert d2["joint"][0]["invariant"]


def test_table_output_and_legend(capsys):
    assert main(["audit", "mlp:depth=2,width=16,residual=branch", "--input-shape", "8,8",
                 "--num-classes", "3"]) == 0
    out = capsys.readouterr().out
    assert "scale-invariance audit" in out
    assert "blocks.1.fc2" in out
    assert "not invariant: rescaling changes the function" in out


@pytest.mark.parametrize("args", [
    ["mlp:depth=2", "--factors", "0,1"],
    ["mlp:depth=2", "--input-shape", "a,b"],
    ["mlp:nosuchoption=1"],
    ["mlp:depth=2", "--batch-size", "0"],
])
def test_bad_input_exits_2(capsys, args):
    assert main(["audit", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lnlab: error:") and err.count("\n") == 1


@pytest.mark.slow
def test_hf_gpt2_stream_and_bert_postnorm(capsys):
    pytest.importorskip("transformers")
    d = _run_json(capsys, "hf:gpt2")
    (stream,) = d["joint"]
    assert stream["invariant"]  # pre-norm with ln_f: the writers jointly are invariant
    assert {"wte.weight", "wpe.weight", "h.0.attn.c_proj.weight",
            "h.1.mlp.c_proj.weight"} <= set(stream["params"])
    d = _run_json(capsys, "hf:bert")
    assert d["joint"] == []  # post-norm: no homogeneous stream
    assert {g["name"]: g["verdict"] for g in d["groups"]}["pooler.dense"] == "unused"
    assert main(["audit", "hf:nosuch"]) == 2
    assert capsys.readouterr().err.startswith("lnlab: error:")
