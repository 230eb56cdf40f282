"""The scale-invariance audit against the notes' table (§5.2), claims B1–B3 and the infimum (§5.3).

The architectures are built by hand here (independent of ``lnlab.models``) and again through
``build_model``; LN without affine unless stated, as in the notes.
"""

from __future__ import annotations

import copy
import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from lnlab.analysis.scale_invariance import (
    audit,
    function_change,
    penalty,
    rescale_to_min_penalty,
    set_norm_eps,
)
from lnlab.errors import LnlabError

D_IN, W, K = 10, 12, 5


pytestmark = pytest.mark.usefixtures("one_thread")


def _ln(width: int, affine: bool) -> nn.LayerNorm:
    return nn.LayerNorm(width, elementwise_affine=affine)


class Plain(nn.Module):
    """(i) h_l = ReLU(LN(W_l h + b_l)), readout; or no norm at all."""

    def __init__(self, depth: int = 3, norm: bool = True, affine: bool = False) -> None:
        super().__init__()
        dims = [D_IN] + [W] * depth
        self.fcs = nn.ModuleList(nn.Linear(dims[i], W) for i in range(depth))
        self.lns = nn.ModuleList(_ln(W, affine) if norm else nn.Identity() for _ in range(depth))
        self.readout = nn.Linear(W, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fc, ln in zip(self.fcs, self.lns, strict=True):
            x = torch.relu(ln(fc(x)))
        return self.readout(x)


class Block(nn.Module):
    def __init__(self, form: str, affine: bool) -> None:
        super().__init__()
        self.form = form
        self.fc1 = nn.Linear(W, W)
        self.fc2 = nn.Linear(W, W)
        self.ln = _ln(W, affine)

    def f(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(h)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.form == "pre":  # (ii)
            return h + self.f(self.ln(h))
        if self.form == "post":  # (iii)
            return self.ln(h + self.f(h))
        return h + self.ln(self.f(h))  # (iii') branch


class Residual(nn.Module):
    def __init__(self, form: str, depth: int = 3, final_ln: bool = False, affine: bool = False,
                 input_proj: bool = True) -> None:
        super().__init__()
        self.input_proj = nn.Linear(D_IN, W) if input_proj else None
        self.blocks = nn.ModuleList(Block(form, affine) for _ in range(depth))
        self.final_ln = _ln(W, affine) if final_ln else None
        self.readout = nn.Linear(W, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_proj(x) if self.input_proj is not None else x
        for b in self.blocks:
            h = b(h)
        if self.final_ln is not None:
            h = self.final_ln(h)
        return self.readout(h)


def _x(seed: int = 0, n: int = 16, d: int = D_IN) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _make(kind: str, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "plain":
        return Plain(**kw)
    if kind == "nonorm":
        return Plain(norm=False, **kw)
    form, _, fin = kind.partition("+")
    return Residual(form, final_ln=fin == "lnf", **kw)


def _drop_block_biases(m: nn.Module) -> nn.Module:
    for b in m.blocks:
        b.fc1.bias = None
        b.fc2.bias = None
    return m


def _verdicts(report) -> dict[str, bool]:
    return {g.name: g.invariant for g in report.groups}


# ----------------------------------------------------------------------------- the table


def test_plain_ln_hidden_invariant_readout_not():
    r = audit(_make("plain"), _x())
    v = _verdicts(r)
    assert all(v[f"fcs.{i}"] for i in range(3))
    assert not v["readout"]
    assert r.joint == []
    # no LN affine: everything but the readout can shrink to 0; infimum = ‖W_o‖² + ‖b_o‖²
    m = _make("plain")
    assert r.infimum_sq_norm == pytest.approx(penalty(m.readout), rel=1e-9)
    assert r.unconstrained_share == pytest.approx(1 - penalty(m.readout) / penalty(m), rel=1e-9)
    assert "cannot constrain" in r.verdict


def test_no_norm_nothing_invariant():
    r = audit(_make("nonorm"), _x())
    assert not any(_verdicts(r).values())
    assert r.unconstrained_sq_norm == 0.0
    assert r.verdict.startswith("weight decay constrains every parameter group")
    # ReLU balancing still lowers the infimum, but nothing vanishes
    assert 0 < r.infimum_sq_norm < r.total_sq_norm


@pytest.mark.parametrize("final_ln", [False, True])
def test_prenorm_stream_invariant_iff_final_ln(final_ln):
    r = audit(_make("pre+lnf" if final_ln else "pre"), _x())
    v = _verdicts(r)
    assert not any(v.values()), v  # no single group is invariant (B2)
    (joint,) = r.joint
    assert set(joint.params) >= {"input_proj.weight", "input_proj.bias"}
    assert {p.split(".")[2] for p in joint.params if p.startswith("blocks.")} <= {"fc1", "fc2"}
    assert joint.invariant is final_ln
    if final_ln:  # §5.3 (ii) with LN_f: inf = readout only
        m = _make("pre+lnf")
        assert r.infimum_sq_norm == pytest.approx(penalty(m.readout), rel=1e-7)
    else:
        assert r.unconstrained_sq_norm == 0.0


def test_prenorm_from_raw_input_has_no_stream_symmetry():
    r = audit(_make("pre+lnf", input_proj=False), _x(d=W))
    assert r.joint == []
    assert any("raw input" in n for n in r.notes)


def test_postnorm_block_weights_not_invariant():
    r = audit(_make("post"), _x())
    v = _verdicts(r)
    assert not any(v[f"blocks.{i}.fc{j}"] for i in range(3) for j in (1, 2))
    assert r.joint == []
    # W_in feeds LN(h + F(h)) through the branch too, and F(c·h) != c·F(h) with biases: the
    # notes' "(W_in, b_in) invariant" holds only for bias-free branches
    assert not v["input_proj"]
    m = _make("post")
    assert _verdicts(audit(_drop_block_biases(m), _x()))["input_proj"]


def test_branch_norm_block_weights_invariant():
    r = audit(_make("branch"), _x())
    v = _verdicts(r)
    assert all(v[f"blocks.{i}.fc2"] for i in range(3))
    assert not v["input_proj"] and not v["readout"]
    # fc1 alone is not invariant (fc2's bias is not scaled) but (fc1, fc2) jointly can shrink
    assert all(r.group(f"blocks.{i}.fc1").can_vanish for i in range(3))
    m = _make("branch")
    assert r.infimum_sq_norm == pytest.approx(penalty(m.input_proj) + penalty(m.readout),
                                              rel=1e-7)


SPECS = {
    "nonorm": "mlp:depth=3,width=16,norm=none,residual=none",
    "plain": "mlp:depth=3,width=16,norm=layernorm,residual=none",
    "pre": "mlp:depth=3,width=16,norm=layernorm,residual=pre",
    "pre+lnf": "mlp:depth=3,width=16,norm=layernorm,residual=pre,final_norm=true",
    "post": "mlp:depth=3,width=16,norm=layernorm,residual=post",
    "branch": "mlp:depth=3,width=16,norm=layernorm,residual=branch",
}


@pytest.mark.parametrize("arch", list(SPECS))
def test_lnlab_models_match_the_table(arch):
    from lnlab.models import build_model

    torch.manual_seed(0)
    m = build_model(SPECS[arch], input_shape=(D_IN,), num_classes=K)
    r = audit(m, _x())
    v = _verdicts(r)
    hidden_fc = [n for n in v if n.startswith("blocks.") and ".fc" in n]
    assert hidden_fc
    if arch == "plain":
        assert all(v[n] for n in hidden_fc) and not v["readout"]
    elif arch in ("nonorm", "pre", "pre+lnf"):
        assert not any(v.values())
    elif arch == "post":
        assert not v["input_proj"] and not any(v[n] for n in hidden_fc)
    else:
        assert all(v[n] for n in hidden_fc if n.endswith("fc2"))
        assert not v["input_proj"]
    stream = [j for j in r.joint if j.name.startswith("stream writers of blocks")]
    if arch.startswith("pre"):
        assert len(stream) == 1 and stream[0].invariant is (arch == "pre+lnf")
    else:
        assert stream == []


# ----------------------------------------------------------------------------- B1–B3


@settings(max_examples=25, deadline=None)
@given(c=st.floats(0.1, 10.0), layer=st.integers(0, 2), seed=st.integers(0, 1000))
def test_b1_hidden_layer_rescaling_exact(c, layer, seed):
    assume(abs(c - 1.0) > 1e-6)  # c = 1 is no rescaling: the readout check needs c != 1
    m = _make("plain", seed=seed)
    x = _x(seed)
    scales = {f"fcs.{layer}.weight": c, f"fcs.{layer}.bias": c}
    assert function_change(m, x, scales) < 1e-12
    assert function_change(m, x, {"readout.weight": c, "readout.bias": c}) > 1e-3 * abs(c - 1)


def test_b1_eps_breaks_invariance_as_scale_shrinks():
    m = _make("plain")
    x = _x()
    scales = [0.1, 0.01, 0.001]
    ch = [function_change(m, x, {"fcs.0.weight": c, "fcs.0.bias": c}, eps=None) for c in scales]
    assert ch[0] < ch[1] < ch[2]
    assert ch[0] < 1e-2 and ch[2] > 1e-2
    # and the report records the same effect
    r = audit(m, x, factors=scales)
    g = r.group("fcs.0")
    assert max(g.change_eps0.values()) < 1e-12
    assert g.change_eps[0.001] > g.change_eps[0.1]


@pytest.mark.parametrize("kind", ["pre", "pre+lnf"])
def test_b2_one_prenorm_writer_changes_logits_o1(kind):
    """Notes: 0.47 / 5.1 without LN_f and 0.37 / 1.0 with it, for c = 0.1 / 10."""
    m = _make(kind)
    ch = {c: function_change(m, _x(), {"blocks.1.fc2.weight": c, "blocks.1.fc2.bias": c})
          for c in (0.1, 10.0)}
    assert ch[0.1] > 0.1 and ch[10.0] > 0.5


@pytest.mark.parametrize(("kind", "changes"), [
    ("plain", False), ("branch", False), ("pre", True), ("post", True), ("branch+bias", True),
])
def test_b3_pure_decay_step(kind, changes):
    """(iii') is exact only for bias-free branches (or with b2 undecayed): a decayed b2 shrinks
    by s while the W2·relu(W1·h + b1) path shrinks by s²."""
    m = _make(kind.removesuffix("+bias"))
    if kind == "branch":
        _drop_block_biases(m)
    shrink = 1 - 0.1 * 0.05  # (1 - lr * wd)
    # hidden = the hidden layers (i) or the blocks; W_in and the readout are not decayed here
    hidden = {n: shrink for n, _ in m.named_parameters()
              if not n.startswith(("readout", "input_proj"))}
    ch = function_change(m, _x(), hidden)
    if changes:
        assert ch > 1e-6
    else:
        assert ch < 1e-12
    # repeated for 1/(lr*wd) steps: still exact where invariant
    many = {n: shrink ** 200 for n in hidden}
    ch200 = function_change(m, _x(), many)
    assert (ch200 > 1e-3) if changes else (ch200 < 1e-12)


# ----------------------------------------------------------------------------- infimum


def _golden(f, lo: float, hi: float, iters: int = 200) -> float:
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    for _ in range(iters):
        c1, c2 = b - g * (b - a), a + g * (b - a)
        if f(c1) < f(c2):
            b = c2
        else:
            a = c1
    return f((a + b) / 2)


def test_prenorm_infimum_matches_closed_form():
    """§5.3 (ii) without LN_f: inf = min_s s²A + 2sB + C/s² (+ ‖b_o‖²), by 1-D search."""
    m = _make("pre")
    r = audit(m, _x())

    def sq(t):
        return float(t.detach().double().pow(2).sum())

    A = sq(m.input_proj.weight) + sq(m.input_proj.bias) + sum(sq(b.fc2.bias) for b in m.blocks)
    B = sum(math.sqrt(sq(b.fc1.weight) + sq(b.fc1.bias)) * math.sqrt(sq(b.fc2.weight))
            for b in m.blocks)
    C = sq(m.readout.weight)
    ref = _golden(lambda ls: math.exp(2 * ls) * A + 2 * math.exp(ls) * B + C * math.exp(-2 * ls),
                  -10, 10) + sq(m.readout.bias)
    assert r.infimum_sq_norm == pytest.approx(ref, rel=1e-8)
    assert r.infimum_sq_norm < r.total_sq_norm


def test_affine_plain_infimum_is_last_gain_times_readout():
    """(i) with LN affine, at layer level: inf = 2‖(γ_L, β_L)‖·‖W_o‖ + ‖b_o‖²."""
    m = _make("plain", affine=True)
    with torch.no_grad():  # non-trivial gains and biases
        for ln in m.lns:
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.normal_()
    r = audit(m, _x())
    ln = m.lns[-1]
    ref = (2 * math.sqrt(penalty(ln)) * m.readout.weight.double().norm().item()
           + m.readout.bias.double().pow(2).sum().item())
    assert r.infimum_sq_norm == pytest.approx(ref, rel=1e-8)
    assert all(r.group(f"lns.{i}").can_vanish for i in range(2))
    assert not r.group("lns.2").can_vanish


@pytest.mark.parametrize("kind", ["plain", "pre+lnf", "branch", "pre"])
def test_rescale_is_function_equivalent_and_penalty_falls(kind):
    m = _make(kind).double()
    x = _x().double()
    r = audit(m, x)
    set_norm_eps(m, 0.0)
    ref = m(x)
    pens = []
    for f in (1.0, 0.1, 0.01, 1e-4):
        m2 = rescale_to_min_penalty(m, f, report=r)
        out = m2(x)
        assert (out - ref).abs().max().item() <= 1e-12 * ref.abs().max().item()
        pens.append(penalty(m2))
    assert all(a >= b - 1e-9 * a for a, b in itertools.pairwise(pens))
    assert pens[-1] == pytest.approx(r.infimum_sq_norm, rel=1e-6)
    if kind == "plain":  # each invariant layer is multiplied by exactly the factor
        m3 = rescale_to_min_penalty(m, 0.1, report=r)
        assert torch.allclose(m3.fcs[1].weight, 0.1 * m.fcs[1].weight, rtol=1e-14, atol=0)


def test_rescale_runs_its_own_audit_and_validates():
    m = _make("plain")
    m2 = rescale_to_min_penalty(m, 0.5, _x())
    assert penalty(m2) < penalty(m)
    with pytest.raises(LnlabError):
        rescale_to_min_penalty(m, 0.0, _x())
    with pytest.raises(LnlabError):
        rescale_to_min_penalty(m, 0.5)
    with pytest.raises(LnlabError, match="does not belong"):
        rescale_to_min_penalty(_make("pre+lnf"), 0.5, report=audit(m, _x()))


def test_audit_leaves_the_model_untouched():
    m = _make("pre+lnf").train()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    audit(m, _x())
    assert m.training
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert all(torch.equal(before[n], p) for n, p in m.named_parameters())
    assert all(ln.eps == 1e-5 for ln in m.modules() if isinstance(ln, nn.LayerNorm))


# ----------------------------------------------------------------------------- generic models


def _torch_encoder(norm_first: bool, final_norm: bool) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True,
                                       norm_first=norm_first)
    enc = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16) if final_norm else None,
                                enable_nested_tensor=False)
    return nn.Sequential(nn.Linear(8, 16), enc, nn.Linear(16, 3))


@pytest.mark.parametrize(("norm_first", "final_norm"), [(True, True), (True, False),
                                                         (False, False)])
def test_torch_transformer_encoder_stream(norm_first, final_norm):
    m = _torch_encoder(norm_first, final_norm)
    r = audit(m, torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1)))
    stream = [j for j in r.joint if "layers" in j.name]
    if not norm_first:
        assert stream == []
        assert not any(g.invariant for g in r.groups)
    else:
        (j,) = stream
        assert "1.layers.0.self_attn.out_proj.weight" in j.params
        assert "1.layers.0.linear2.weight" in j.params
        assert "0.weight" in j.params
        assert j.invariant is final_norm


def test_report_dict_and_text():
    r = audit(_make("pre+lnf"), _x())
    d = json.loads(json.dumps(r.to_dict()))
    assert d["verdict"] == r.verdict
    assert {g["name"] for g in d["groups"]} >= {"input_proj", "readout", "blocks.0.fc1"}
    assert d["joint"][0]["invariant"] is True
    text = str(r)
    assert "scale-invariance audit" in text and "stream writers of blocks" in text


def test_unused_group_and_bad_input():
    class WithUnused(Plain):
        def __init__(self) -> None:
            super().__init__()
            self.spare = nn.Linear(3, 3)

    torch.manual_seed(0)
    r = audit(WithUnused(), _x())
    assert r.group("spare").verdict == "unused"
    with pytest.raises(LnlabError, match="factors"):
        audit(_make("plain"), _x(), factors=(0.1, -1.0))
    with pytest.raises(LnlabError, match="no parameters"):
        audit(nn.ReLU(), _x())
    with pytest.raises(LnlabError, match="cannot run"):
        audit(_make("plain"), torch.randn(2, 3))
    dead = _make("plain")
    with torch.no_grad():
        dead.fcs[0].bias.zero_()
    with pytest.raises(LnlabError, match="not finite"):
        audit(dead, torch.zeros(4, D_IN))  # the first LN sees a constant (zero) vector
    with pytest.raises(LnlabError, match="unknown parameter"):
        function_change(_make("plain"), _x(), {"nope": 2.0})


def test_minimal_balance_solver_on_two_tensors():
    """inf_a a²·4 + 1/a² = 2·√4 = 4, independent of the audit's model plumbing."""
    from lnlab.analysis.scale_invariance import _min_balance, _vanishing

    val, exps = _min_balance({"a": 4.0, "b": 1.0}, [{"a": 1.0, "b": -1.0}], set())
    assert val == pytest.approx(4.0, rel=1e-12)
    assert 4.0 * np.exp(2 * exps["a"]) == pytest.approx(2.0, rel=1e-9)
    # a chain: c is invariant, so b (balanced against c) and then a can vanish
    d = _vanishing({"a": 1.0, "b": 1.0, "c": 1.0},
                   [{"c": 1.0}, {"b": 1.0, "c": -1.0}, {"a": 1.0, "b": -1.0}])
    assert all(d[u] <= -1.0 for u in "abc")


# ----------------------------------------------------------------------------- training probes


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), angle=st.floats(1e-6, 3.0), scale=st.floats(0.01, 100.0))
def test_angular_update_matches_reference(seed, angle, scale):
    from lnlab.analysis.scale_invariance import angular_update

    rng = np.random.default_rng(seed)
    a = rng.normal(size=7)
    u = rng.normal(size=7)
    u -= (u @ a) / (a @ a) * a
    u /= np.linalg.norm(u)
    b = scale * (np.cos(angle) * a / np.linalg.norm(a) + np.sin(angle) * u)
    before = {"w": torch.tensor(a[:4]), "b": torch.tensor(a[4:])}
    after = {"w": torch.tensor(b[:4]), "b": torch.tensor(b[4:])}
    assert angular_update(before, after) == pytest.approx(angle, rel=1e-7, abs=1e-12)


def test_b4_sgd_on_invariant_group_grows_norm_exactly():
    """B4: for each invariant group, <g, w> = 0 and ‖w - ηg‖² = ‖w‖² + η²‖g‖² (eps = 0)."""
    from lnlab.analysis.scale_invariance import effective_lr, invariant_groups, snapshot

    m = _make("plain").double()
    set_norm_eps(m, 0.0)
    x, y = _x().double(), torch.arange(16) % K
    groups = invariant_groups(audit(m, x))
    assert set(groups) == {"fcs.0", "fcs.1", "fcs.2"}
    nn.functional.cross_entropy(m(x), y).backward()
    params = dict(m.named_parameters())
    lr = 0.3
    for names in groups.values():
        w = snapshot(m, names)
        g = {n: params[n].grad.double() for n in names}
        wg = sum(float((w[n] * g[n]).sum()) for n in names)
        ww = sum(float(w[n].pow(2).sum()) for n in names)
        gg = sum(float(g[n].pow(2).sum()) for n in names)
        assert abs(wg) < 1e-10 * math.sqrt(ww * gg)
        stepped = {n: w[n] - lr * g[n] for n in names}
        after = sum(float(t.pow(2).sum()) for t in stepped.values())
        assert after == pytest.approx(ww + lr**2 * gg, rel=1e-12)
        assert effective_lr(lr, w) == pytest.approx(lr / ww)


def test_rescale_torch_encoder_keeps_function():
    """Generic modules too: attention blocks, stream + balancing symmetries, eps = 0."""
    m = _torch_encoder(True, True).double().eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    r = audit(m, x)
    set_norm_eps(m, 0.0)
    with torch.no_grad():
        ref = m(x)
        small = rescale_to_min_penalty(m, 1e-3, report=r).eval()
        assert (small(x) - ref).abs().max().item() < 1e-12 * ref.abs().max().item()
    assert penalty(small) == pytest.approx(r.infimum_sq_norm, rel=1e-5)
    assert r.infimum_sq_norm < 0.7 * r.total_sq_norm


def test_b5_li_arora_equivalence():
    """B5: frozen readout, LN without affine, eps = 0: SGD with wd at constant lr and SGD without
    wd at lr·(1−lr·wd)^(−2t−1) follow the same directions; constant lr without wd does not."""
    from lnlab.analysis.scale_invariance import li_arora_lr

    base = _make("plain").double()
    set_norm_eps(base, 0.0)
    base.readout.requires_grad_(False)
    x, y = _x(3, n=32).double(), torch.arange(32) % K
    lr, wd, steps = 0.2, 0.05, 40

    def train(rule: str) -> nn.Module:
        m = copy.deepcopy(base)
        params = [p for p in m.parameters() if p.requires_grad]
        for t in range(steps):
            batch = slice((t % 4) * 8, (t % 4) * 8 + 8)  # the same minibatch order in all runs
            for p in params:
                p.grad = None
            nn.functional.cross_entropy(m(x[batch]), y[batch]).backward()
            with torch.no_grad():
                for p in params:
                    if rule == "wd":
                        p.mul_(1 - lr * wd).sub_(lr * p.grad)
                    elif rule == "exp":
                        p.sub_(li_arora_lr(lr, wd, t) * p.grad)
                    else:
                        p.sub_(lr * p.grad)
        return m

    a, b, c = train("wd"), train("exp"), train("const")

    def directions(m: nn.Module) -> list[torch.Tensor]:
        return [torch.cat([fc.weight.reshape(-1), fc.bias]) / torch.cat(
            [fc.weight.reshape(-1), fc.bias]).norm() for fc in m.fcs]

    diff_ab = max((u - v).abs().max().item() for u, v in zip(directions(a), directions(b),
                                                              strict=True))
    diff_ac = max((u - v).abs().max().item() for u, v in zip(directions(a), directions(c),
                                                              strict=True))
    assert diff_ab < 1e-9
    assert diff_ac > 1e-3
    ratio = b.fcs[0].weight.norm() / a.fcs[0].weight.norm()
    assert ratio.item() == pytest.approx((1 - lr * wd) ** -steps, rel=1e-9)
