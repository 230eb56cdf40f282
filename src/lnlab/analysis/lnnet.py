"""Explicit LN-Nets of width 3 that classify any labelling (Ni et al. 2024, constructive part).

An LN-Net alternates linear maps and LayerNorm with no activation. With eps = 0 and width 3,
LN maps R^3 (minus the line R·1) onto the circle C = {z : 1ᵀz = 0, ‖z‖ = √3}; only the
direction of the pre-activation's in-plane part survives. So one block ``Linear -> LN`` acting
on points u of C (in-plane unit coordinates) computes

    u  ->  direction of  M (u - o)                                     (*)

for any point o of the plane and any 2x2 matrix M (W and b realise any in-plane affine map).
Two points merge exactly when o lies on the line through them, outside the segment between
them. One block per merge of two same-label points gives m - K blocks for m points and K
classes; the readout is argmax_c q_cᵀ z with q_c the single point left for class c.

Two merge strategies are implemented:

* ``"fold"`` — the reconstruction in ``docs/papers/ni_nonlinearity.md`` §2: project onto
  v ⟂ (u_i - u_j)
  (o at infinity: a fold of the circle about the pair's bisector), then put the projections
  on the line {t E1 + h E2}, h = 0.4, which LN bends onto a half circle. Every fold squashes
  the points near its axis quadratically, and the squashing compounds: in float64 it starts
  to fail from a few tens of points (see docs/analyses.md, LN-Nets, for the measured limit).
* ``"project"`` (default) — a central projection (*) from a *finite* point o just beyond u_i
  on the chord to u_j, followed by a stretch M that brings the cone of output directions back
  to a fixed span. The pair, the side and the distance of o are chosen by an exhaustive
  vectorised search that maximises the smallest angular gap between the outputs. This keeps
  the normalised gap (gap · n / span) of order 0.1 at every layer instead of letting it decay
  geometrically, so the construction stays exact in float64 for hundreds of points.

The result is an ordinary lnlab model (``blocks.0.linear``, ``blocks.0.norm``, ..., ``head``)
with ``lnlab.norms`` LayerNorm modules, float64 by default.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from lnlab.errors import LnlabError
from lnlab.norms import make_norm

__all__ = [
    "STRATEGIES",
    "Construction",
    "LNBlock",
    "LNNet",
    "MergeStep",
    "VCResult",
    "construct",
    "construct_model",
    "evaluate_accuracy",
    "plane_basis",
    "plot_construction",
    "random_problem",
    "vc_demo",
]

STRATEGIES = ("project", "fold")
WIDTH = 3


def plane_basis() -> np.ndarray:
    """Orthonormal basis (3x2) of the plane 1^⊥ in R^3, where width-3 LN outputs live."""
    e1 = np.array([1.0, -1.0, 0.0]) / math.sqrt(2.0)
    e2 = np.array([1.0, 1.0, -2.0]) / math.sqrt(6.0)
    return np.stack([e1, e2], axis=1)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class LNBlock(nn.Module):
    """One LN-Net layer: ``Linear(in, width)`` then a LayerNorm from the lnlab zoo."""

    def __init__(self, in_dim: int, width: int, norm: str, dtype: torch.dtype) -> None:
        super().__init__()
        # skip_init: the constructor overwrites the weights, and default init dominates its cost
        self.linear = nn.utils.skip_init(nn.Linear, in_dim, width, dtype=dtype)
        self.norm = make_norm(norm, width, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.linear(x))


class LNNet(nn.Module):
    """Linear maps interleaved with LayerNorm, no activation: ``blocks.*`` then ``head``."""

    def __init__(
        self,
        in_dim: int,
        num_layers: int,
        num_classes: int,
        width: int = WIDTH,
        norm: str = "layernorm_simple:eps=0",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [width] * num_layers
        self.blocks = nn.ModuleList(
            LNBlock(dims[k], width, norm, dtype) for k in range(num_layers)
        )
        self.head = nn.utils.skip_init(nn.Linear, dims[-1], num_classes, dtype=dtype)
        self.width = width

    @property
    def num_ln_layers(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x)

    @torch.no_grad()
    def trace(self, x: Tensor) -> list[Tensor]:
        """The input and every block's output (for drawings and SSR/LSSR per layer)."""
        outs = [x]
        with _few_threads(len(x)):
            for b in self.blocks:
                x = b(x)
                outs.append(x)
        return outs


# --------------------------------------------------------------------------------------------
# Construction in the plane
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeStep:
    """One LN layer of the construction.

    ``kind`` is "merge", "embed" (1-D or degenerate input: map to the circle, no merge) or
    "pad" (identity on the circle, only to reach a requested depth). ``pair`` holds the
    indices (into the distinct input points, ``np.unique(X, axis=0)`` order) of the two
    representatives merged, ``gap`` the smallest angular gap between distinct output
    directions, ``reps`` the number left. ``center`` is the projection centre o of a
    "project" merge in the layer's input coordinates (the raw input space for the first
    layer, in-plane unit coordinates after that), for drawings.
    """

    kind: str
    pair: tuple[int, int] | None
    gap: float
    reps: int
    center: tuple[float, ...] | None = None


@dataclass
class Construction:
    """The constructed net plus what the construction saw (for reports and tests)."""

    model: LNNet
    strategy: str
    num_points: int
    num_classes: int
    classes_present: int
    steps: list[MergeStep] = field(default_factory=list)

    @property
    def num_ln_layers(self) -> int:
        return self.model.num_ln_layers

    @property
    def width(self) -> int:
        return self.model.width

    @property
    def min_gap(self) -> float:
        gaps = [s.gap for s in self.steps if s.kind != "pad"]
        return min(gaps) if gaps else math.inf


@dataclass
class _Layer:
    """In-plane pre-activation ``G @ x + g`` of one block (G: 2 x in_dim)."""

    G: np.ndarray
    g: np.ndarray


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _wrap(a: np.ndarray) -> np.ndarray:
    """Angles to [-pi, pi)."""
    return (a + math.pi) % (2 * math.pi) - math.pi


def _min_gap_rows(a: np.ndarray) -> np.ndarray:
    """Smallest gap between sorted entries of each row (NaNs, sorted last, are dropped)."""
    srt = np.sort(a, axis=1)
    k = int(np.sum(~np.isnan(a[0])))
    if k < 2:
        return np.full(a.shape[0], np.inf)
    return np.diff(srt[:, :k], axis=1).min(axis=1)


def _partner_pairs(ang: np.ndarray, lab: np.ndarray, k: int,
                   ends: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Candidate merge pairs (i, j): i is the point next to o, j its same-label partner.

    Every point with its k nearest same-label points, plus the ``ends`` outermost points of
    the occupied arc (or, for raw 2-D points, the extremes along 8 directions) with *every*
    same-label partner. Cutting the arc at an end keeps the configuration in one piece, and
    those are the merges the search picks most; the full pair set costs O(n^3) per layer.
    """
    n = len(lab)
    if ang.ndim == 1:
        d = np.abs(_wrap(ang[:, None] - ang[None, :]))
        # the occupied arc starts after the largest empty gap
        srt = np.argsort(ang)
        gaps = np.diff(np.concatenate([ang[srt], ang[srt[:1]] + 2 * math.pi]))
        start = (int(np.argmax(gaps)) + 1) % n
        order = np.roll(srt, -start)
        extreme = np.concatenate([order[:ends], order[-ends:]])
    else:
        d = np.linalg.norm(ang[:, None, :] - ang[None, :, :], axis=-1)
        th = np.linspace(0, math.pi, 4, endpoint=False)
        proj = ang @ np.stack([np.cos(th), np.sin(th)])
        extreme = np.concatenate([np.argsort(proj, axis=0)[:ends].ravel(),
                                  np.argsort(proj, axis=0)[-ends:].ravel()])
    same = (lab[:, None] == lab[None, :]) & ~np.eye(n, dtype=bool)
    dd = np.where(same, d, np.inf)
    kk = min(k, n - 1)
    idx = np.argsort(dd, axis=1)[:, :kk]
    I = np.repeat(np.arange(n), kk)
    J = idx.reshape(-1)
    ext = np.unique(extreme)
    Ie, Je = np.nonzero(same[ext])
    I = np.concatenate([I, ext[Ie]])
    J = np.concatenate([J, Je])
    pairs = np.unique(np.stack([I, J], axis=1), axis=0)
    ok = same[pairs[:, 0], pairs[:, 1]]
    return pairs[ok, 0], pairs[ok, 1]


_S_GRID = np.geomspace(2e-3, 8.0, 8)
_SPAN = 1.5  # output cone (radians) after the stretch M; < pi so every cone is a half plane


_FLOOR = 1e-12  # error level below which the search only looks at gaps
_ROUND = 1e-16  # fresh rounding error per layer, in radians of an O(1) configuration


def _project_eval(
    P: np.ndarray, err: np.ndarray, on_circle: bool, i: np.ndarray, j: np.ndarray,
    s: np.ndarray, detail: bool = False,
):
    """Score candidates (i, j, s) of a central-projection merge; see ``_project_search``."""
    n = len(P)
    r = np.arange(len(i))
    o = P[i] + s[:, None] * (P[i] - P[j])
    w = P[None, :, :] - o[:, None, :]
    w2 = np.einsum("cnk,cnk->cn", w, w)
    beta = np.arctan2(w[..., 1], w[..., 0])
    ref = beta[r, i]
    rel = _wrap(beta - ref[:, None])
    lo, hi = rel.min(axis=1), rel.max(axis=1)
    c = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo)
    valid = half < 0.49 * math.pi
    kappa = math.tan(_SPAN / 2) / np.tan(np.clip(half, 1e-300, 0.49 * math.pi))
    rr = rel - c[:, None]
    out = np.arctan(kappa[:, None] * np.tan(rr))
    inv = 1.0 / np.sqrt(w2)
    # on the circle tangential errors carry over; radial ones are fresh (LN resets them)
    dbeta = np.abs(w[..., 0] * P[:, 0] + w[..., 1] * P[:, 1]) / w2 if on_circle else inv
    dout = kappa[:, None] / (np.cos(rr) ** 2 + (kappa[:, None] * np.sin(rr)) ** 2)
    e = dout * (dbeta * err[None, :] + inv * _ROUND) + _ROUND
    e[r, i] = np.maximum(e[r, i], e[r, j])
    # the cluster merged at u_i must stay far inside its distance to o
    near_o = err[i] * inv[r, i] > 1e-4
    out[r, j] = np.nan
    # nearest-neighbour distance of every output (NaN at j sorts last)
    order = np.argsort(out, axis=1)
    so = np.take_along_axis(out, order, axis=1)[:, : n - 1]
    dif = np.diff(so, axis=1)
    inf_col = np.full((len(i), 1), np.inf)
    near = np.minimum(np.concatenate([inf_col, dif], axis=1),
                      np.concatenate([dif, inf_col], axis=1))
    es = np.take_along_axis(e, order[:, : n - 1], axis=1)
    # the floor keeps the score gap-driven while errors are negligible: small gaps are what
    # later layers would amplify rounding errors into
    snr = (near / np.maximum(es, _FLOOR)).min(axis=1) if n > 2 else np.full(len(i), np.inf)
    snr[~valid | near_o] = -1.0
    if not detail:
        return snr
    return snr, ref + c, kappa, out, e


def _project_search(
    P: np.ndarray, lab: np.ndarray, err: np.ndarray, k: int, chunk: int = 1_000_000,
    keep_pairs: int = 24,
) -> tuple[float, int, int, float, float, float, np.ndarray, np.ndarray] | None:
    """Best central-projection merge for points P (n x 2, on the circle or raw 2-D).

    ``err`` bounds each point's accumulated float error (radians, or plane units for raw
    points). A candidate is scored by its worst signal-to-noise ratio: the distance from each
    output to its nearest neighbour over that output's propagated error (local derivative of
    the layer times the incoming error, plus fresh rounding). Scoring by gaps alone lets the
    errors of the point next to o be amplified by 1/|u_i - o| unchecked, which wrecks the net
    from about 100 points on. Two stages: every candidate pair on a coarse grid of s, then
    the ``keep_pairs`` best pairs on the full grid.

    Returns (snr, i, j, s, theta0, kappa, out, err_out) where o = P_i + s (P_i - P_j), the
    stretch is M = diag(1, kappa) R(-theta0), ``out`` the output angles (NaN at j).
    """
    n = len(P)
    on_circle = bool(np.allclose(np.linalg.norm(P, axis=1), 1.0))
    alpha = np.arctan2(P[:, 1], P[:, 0])
    I0, J0 = _partner_pairs(alpha if on_circle else P, lab, k)
    if len(I0) == 0:
        return None
    step = max(1, chunk // max(n, 1))

    def run(I0: np.ndarray, J0: np.ndarray, grid: np.ndarray) -> np.ndarray:
        I, J, S = np.repeat(I0, len(grid)), np.repeat(J0, len(grid)), np.tile(grid, len(I0))
        parts = [_project_eval(P, err, on_circle, I[a:a + step], J[a:a + step],
                               S[a:a + step]) for a in range(0, len(I), step)]
        return np.concatenate(parts).reshape(len(I0), len(grid))

    if len(I0) > keep_pairs:
        coarse = run(I0, J0, _S_GRID[1::3])
        top = np.argsort(-coarse.max(axis=1))[:keep_pairs]
        I0, J0 = I0[top], J0[top]
    fine = run(I0, J0, _S_GRID)
    p, q = np.unravel_index(int(np.argmax(fine)), fine.shape)
    i, j, s = int(I0[p]), int(J0[p]), float(_S_GRID[q])
    snr, th, kap, out, e = _project_eval(P, err, on_circle, np.array([i]), np.array([j]),
                                         np.array([s]), detail=True)
    return float(snr[0]), i, j, s, float(th[0]), float(kap[0]), out[0], e[0]


def _fold_search(
    P: np.ndarray, lab: np.ndarray, h: float = 0.4
) -> tuple[float, int, int, np.ndarray, float, float, np.ndarray] | None:
    """The notes' fold: best same-label pair by the smallest relative gap of t = vᵀP."""
    len(P)
    I, J = np.nonzero(np.triu((lab[:, None] == lab[None, :]), 1))
    if len(I) == 0:
        return None
    d = P[I] - P[J]
    v = np.stack([-d[:, 1], d[:, 0]], axis=1)
    nv = np.linalg.norm(v, axis=1, keepdims=True)
    v /= np.where(nv > 0, nv, 1.0)  # coincident reps (a collapsed fold) score -1 below
    t = v @ P.T  # C x n
    r = np.arange(len(I))
    t_m = t.copy()
    t_m[r, J] = np.nan
    rng = np.nanmax(t_m, axis=1) - np.nanmin(t_m, axis=1)
    gap = _min_gap_rows(t_m) / np.where(rng > 0, rng, 1.0)
    gap[nv[:, 0] == 0] = -1.0
    b = int(np.argmax(gap))
    tb = t[b]
    lo, hi = float(np.nanmin(t_m[b])), float(np.nanmax(t_m[b]))
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    mid = 0.5 * (hi + lo)
    out = np.arctan2(h, scale * (tb - mid))
    out[J[b]] = np.nan
    g = _min_gap_rows(out[None, :])[0]
    return float(g), int(I[b]), int(J[b]), v[b], scale, mid, out


def _embed_1d(t: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Map scalars to the half circle: angle of ((t - c)/r, 1), spread over the middle."""
    c = float(np.median(t))
    r = float(np.max(np.abs(t - c))) or 1.0
    return np.arctan2(1.0, (t - c) / r), c, r


def _check_inputs(X: np.ndarray, y: np.ndarray, num_classes: int | None) -> tuple[np.ndarray,
                                                                                   np.ndarray,
                                                                                   np.ndarray,
                                                                                   int]:
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or len(X) == 0:
        raise LnlabError(f"X must be a non-empty (m, d) array, got shape {X.shape}")
    if y.shape != (len(X),):
        raise LnlabError(f"y must have one label per point: {y.shape} vs {len(X)} points")
    if not np.all(np.isfinite(X)):
        raise LnlabError("X contains NaN or inf")
    if np.any(y < 0) or not np.all(y == np.round(y)):
        raise LnlabError("labels must be non-negative integers")
    y = y.astype(np.int64)
    K = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.max() >= K:
        raise LnlabError(f"label {int(y.max())} out of range for num_classes={K}")
    uniq, inv = np.unique(X, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    lab_u = np.full(len(uniq), -1)
    for k in range(len(X)):
        if lab_u[inv[k]] not in (-1, y[k]):
            raise LnlabError("two identical points carry different labels: no classifier exists")
        lab_u[inv[k]] = y[k]
    return uniq, lab_u, inv, K


def construct(
    X: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    *,
    num_classes: int | None = None,
    strategy: str = "project",
    num_layers: int | None = None,
    eps: float = 0.0,
    partners: int = 3,
    seed: int = 0,
) -> Construction:
    """Build an explicit width-3 LN-Net that labels every point of X with y.

    Distinct points (duplicates with one label are merged up front) need m - K merge layers
    for K classes present, plus one embedding layer when the input is 1-D (or collinear).
    ``num_layers`` pads with identity layers up to that depth (the VC demo uses it for the
    constant labellings). ``eps`` is the LN epsilon of the modules; the construction scales
    the pre-activations so that eps > 0 only perturbs them at the 1e-16 level. Raises
    ``LnlabError`` for bad input.
    """
    if strategy not in STRATEGIES:
        raise LnlabError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if eps < 0:
        raise LnlabError(f"eps must be >= 0, got {eps}")
    Xn = np.asarray(X.detach().cpu() if isinstance(X, Tensor) else X, dtype=np.float64)
    yn = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y)
    pts, lab, _, K = _check_inputs(Xn, yn, num_classes)
    m, d = pts.shape
    present = len(np.unique(lab))
    rng = np.random.default_rng(seed)

    # Center and scale the raw inputs: the construction is affine-equivariant anyway, and a
    # unit-scale cloud keeps the first layer's numbers O(1).
    mu = pts.mean(axis=0)
    sd = float(np.abs(pts - mu).max()) or 1.0
    Z = (pts - mu) / sd

    layers: list[_Layer] = []
    steps: list[MergeStep] = []
    alive = np.arange(m)  # indices of the current representatives into pts
    cur_lab = lab.copy()
    err = np.full(m, _ROUND)  # error bound per representative (see _project_search)
    U: np.ndarray | None = None  # current unit in-plane directions (after >= 1 layer)

    def first_projection() -> np.ndarray:
        if d == 2:
            return np.eye(2)
        # PCA plane: generic 2-D shadow of the cloud (ties are broken by the search).
        _, _, vt = np.linalg.svd(Z, full_matrices=False)
        q = vt[:2].T
        q += 1e-3 * rng.standard_normal(q.shape)
        return np.linalg.qr(q)[0]

    need_merges = present > 1 and m > present
    if need_merges and d >= 2:
        Q = first_projection()
        P = Z @ Q
        if strategy == "project":
            res = _project_search(P, cur_lab, err, max(partners, 8))
            if res is not None and res[0] > 1e3:
                _, i, j, s, th, kap, out, err = res
                gap = float(_min_gap_rows(out[None, :])[0])
                o = P[i] + s * (P[i] - P[j])
                M = np.diag([1.0, kap]) @ _rot(-th)
                layers.append(_Layer((M @ Q.T) / sd, -M @ (o + Q.T @ mu / sd)))
                keep = np.ones(len(alive), bool)
                keep[j] = False
                steps.append(MergeStep("merge", (int(alive[i]), int(alive[j])), gap,
                                       int(keep.sum()), tuple(mu + sd * (Q @ o))))
                alive, cur_lab, U = alive[keep], cur_lab[keep], _angles_to_u(out[keep])
                err = err[keep]
        else:
            res = _fold_search(P, cur_lab)
            if res is not None and res[0] > 1e-12:
                gap, i, j, v, scale, mid, out = res
                G = np.stack([scale * (Q @ v), np.zeros(d)], axis=0) / sd
                g = np.array([-scale * mid - scale * float(v @ Q.T @ mu) / sd, 0.4])
                layers.append(_Layer(G, g))
                keep = np.ones(len(alive), bool)
                keep[j] = False
                steps.append(MergeStep("merge", (int(alive[i]), int(alive[j])), gap,
                                       int(keep.sum())))
                alive, cur_lab, U = alive[keep], cur_lab[keep], _angles_to_u(out[keep])
                err = np.full(len(alive), _ROUND)  # the fold does not track errors
    if U is None:
        # 1-D (or degenerate) input, or nothing to merge: one embedding layer onto the circle.
        v = np.linalg.svd(Z, full_matrices=False)[2][0] if d > 1 else np.ones(1)
        t = Z @ v
        if len(np.unique(t)) < len(t):
            v = rng.standard_normal(d)
            t = Z @ v
        out, c, r = _embed_1d(t)
        G = np.stack([v / (r * sd), np.zeros(d)], axis=0)
        g = np.array([-(c + float(v @ mu) / sd) / r, 1.0])
        layers.append(_Layer(G, g))
        gap = _min_gap_rows(out[None, :])[0] if len(out) > 1 else math.inf
        steps.append(MergeStep("embed", None, float(gap), len(alive)))
        U = _angles_to_u(out)

    E = plane_basis()
    circ = E.T / math.sqrt(3.0)  # 3-D LN output -> in-plane unit coordinates
    while present > 1 and len(alive) > present:
        if strategy == "project":
            res = _project_search(U, cur_lab, err, partners)
            if res is None:
                raise AssertionError("no same-label pair left although classes repeat")
            _snr, i, j, s, th, kap, out, err = res
            gap = float(_min_gap_rows(out[None, :])[0])
            o = U[i] + s * (U[i] - U[j])
            M = np.diag([1.0, kap]) @ _rot(-th)
            layers.append(_Layer(M @ circ, -M @ o))
        else:
            res = _fold_search(U, cur_lab)
            if res is None:
                raise AssertionError("no same-label pair left although classes repeat")
            gap, i, j, v, scale, mid, out = res
            o = np.zeros(2)  # unused: a fold projects from infinity
            layers.append(_Layer(np.stack([scale * v, np.zeros(2)]) @ circ,
                                 np.array([-scale * mid, 0.4])))
        keep = np.ones(len(alive), bool)
        keep[j] = False
        steps.append(MergeStep("merge", (int(alive[i]), int(alive[j])), float(gap),
                               int(keep.sum()), tuple(o) if strategy == "project" else None))
        alive, cur_lab, U = alive[keep], cur_lab[keep], _angles_to_u(out[keep])
        err = err[keep] if strategy == "project" else np.full(len(alive), _ROUND)

    if num_layers is not None:
        if num_layers < len(layers):
            raise LnlabError(f"num_layers={num_layers} is below the {len(layers)} layers needed")
        while len(layers) < num_layers:
            layers.append(_Layer(np.eye(2) @ circ, np.zeros(2)))
            steps.append(MergeStep("pad", None, steps[-1].gap, len(alive)))

    # Readout: logit_c = q_cᵀ u with q_c the class's last point; absent classes never win.
    head_w = np.zeros((K, 2))
    head_b = np.zeros(K)
    head_b[:] = -4.0
    if present == 1:
        head_b[int(cur_lab[0])] = 1.0
    else:
        for r_, c_ in enumerate(cur_lab):
            head_w[c_] = U[r_]
            head_b[c_] = 0.0
    model = _to_model(layers, head_w @ circ, head_b, d, K, eps)
    return Construction(model, strategy, m, K, present, steps)


def _angles_to_u(a: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _to_model(layers: list[_Layer], head_w: np.ndarray, head_b: np.ndarray, d: int, K: int,
              eps: float) -> LNNet:
    """Turn in-plane layer maps into an ``LNNet`` (W = E G, b = E g, scaled against eps)."""
    E = plane_basis()
    # LN is scale-invariant: a large scale makes eps > 0 irrelevant (eps / ‖pre‖² ~ 1e-16).
    scale = 1.0 if eps == 0 else 1e12 * math.sqrt(eps) + 1.0
    norm = f"layernorm_simple:eps={eps!r}"
    model = LNNet(d, len(layers), K, norm=norm)
    with torch.no_grad():
        for blk, lay in zip(model.blocks, layers, strict=True):
            # Normalise each layer so its largest weight is O(scale); scale-invariance again.
            W = E @ lay.G
            b = E @ lay.g
            f = scale / max(float(np.abs(W).max()), float(np.abs(b).max()), 1e-300)
            blk.linear.weight.copy_(torch.from_numpy(W * f))
            blk.linear.bias.copy_(torch.from_numpy(b * f))
        model.head.weight.copy_(torch.from_numpy(head_w))
        model.head.bias.copy_(torch.from_numpy(head_b))
    return model


@contextmanager
def _few_threads(rows: int) -> Iterator[None]:
    """Run tiny forwards on one thread: on a loaded 2-core box an OpenMP region costs ~8 ms,
    1000x the work of a 40x3 LayerNorm. The previous thread count is restored."""
    n = torch.get_num_threads()
    if rows <= 4096 and n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def evaluate_accuracy(model: nn.Module, X: np.ndarray | Tensor, y: np.ndarray | Tensor,
                      dtype: torch.dtype = torch.float64) -> tuple[float, float]:
    """(accuracy, smallest margin logit_true - max other logit) of ``model`` on (X, y)."""
    Xt = torch.as_tensor(np.asarray(X), dtype=dtype)
    if Xt.ndim == 1:
        Xt = Xt[:, None]
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    p = next(model.parameters(), None)
    m = model if p is None or p.dtype == dtype else copy.deepcopy(model).to(dtype)
    with torch.no_grad(), _few_threads(len(Xt)):
        logits = m(Xt)
        acc = float((logits.argmax(dim=1) == yt).double().mean())
        true = logits.gather(1, yt[:, None])[:, 0]
        other = logits.clone()
        other.scatter_(1, yt[:, None], -math.inf)
        margin = (float((true - other.max(dim=1).values).min()) if logits.shape[1] > 1
                  else math.inf)
    return acc, margin


def random_problem(m: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian points in R^dim and uniform random labels in {0..classes-1}, all present."""
    if m < 1 or dim < 1 or classes < 1:
        raise LnlabError(f"need points, dim, classes >= 1 (got {m}, {dim}, {classes})")
    if classes > m:
        raise LnlabError(f"{classes} classes cannot all appear among {m} points")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, dim))
    y = rng.permutation(np.concatenate([np.arange(classes),
                                        rng.integers(0, classes, m - classes)]))
    return X, y


def construct_model(X: np.ndarray, y: np.ndarray, **kw) -> LNNet:
    """``construct(...).model``, for callers that only want the ``nn.Module``."""
    return construct(X, y, **kw).model


# --------------------------------------------------------------------------------------------
# VC demo
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VCResult:
    """All 2^(L+2) labellings of L+2 generic points, each fitted by an L-layer width-3 net."""

    layers: int
    points: int
    labellings: int
    fitted: int
    max_layers_used: int
    min_margin: float

    @property
    def shattered(self) -> bool:
        return self.fitted == self.labellings and self.max_layers_used == self.layers


def vc_demo(layers: int, seed: int = 0, dim: int = 2, strategy: str = "project") -> VCResult:
    """Show VC >= L + 2: fit every binary labelling of L+2 random points with L LN layers."""
    if layers < 1:
        raise LnlabError(f"layers must be >= 1, got {layers}")
    if layers > 14:
        raise LnlabError(f"layers={layers} means 2^{layers + 2} labellings; use at most 14")
    m = layers + 2
    X = np.random.default_rng(seed).standard_normal((m, dim))
    fitted = 0
    used = 0
    min_margin = math.inf
    total = 0
    for bits in product((0, 1), repeat=m):
        y = np.array(bits)
        total += 1
        c = construct(X, y, num_classes=2, strategy=strategy, num_layers=layers)
        used = max(used, c.num_ln_layers)
        acc, margin = evaluate_accuracy(c.model, X, y)
        fitted += acc == 1.0
        min_margin = min(min_margin, margin)
    return VCResult(layers, m, total, fitted, used, min_margin)


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def plot_construction(
    X: np.ndarray,
    y: np.ndarray,
    path: str | Path,
    *,
    strategy: str = "project",
    max_panels: int = 12,
    title: str | None = None,
) -> Path:
    """Draw the construction on a 2-D toy set layer by layer (input, each LN output, readout).

    Each panel after the first shows the LN circle (in-plane coordinates of the width-3 output)
    with every input point at its actual float64 position; the pair merged by that layer is
    ringed. Returns the written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2:
        raise LnlabError("plot_construction draws 2-D inputs only (X of shape (m, 2))")
    c = construct(X, y, strategy=strategy)
    outs = c.model.trace(torch.as_tensor(X))
    E = plane_basis()
    n_layers = len(outs) - 1
    shown = list(range(n_layers + 1))
    if len(shown) > max_panels:
        shown = [*shown[: max_panels - 2], n_layers - 1, n_layers]
        shown = sorted(set(shown))
    ncol = min(3, len(shown))  # at most 3 panels a row: legible at report width
    nrow = math.ceil(len(shown) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 3.0 * nrow), squeeze=False)
    cmap = plt.get_cmap("tab10")
    K = int(y.max()) + 1
    uniq = np.unique(X, axis=0)
    index_of = {tuple(p): k for k, p in enumerate(uniq)}
    for ax in axes.ravel():
        ax.set_axis_off()
    for panel, layer in enumerate(shown):
        ax = axes.ravel()[panel]
        ax.set_axis_on()
        if layer == 0:
            pts = X
            ax.set_title("input", fontsize=10)
        else:
            pts = outs[layer].numpy() @ E / math.sqrt(3.0)
            th = np.linspace(0, 2 * math.pi, 200)
            ax.plot(np.cos(th), np.sin(th), color="0.8", lw=0.8, zorder=0)
            step = c.steps[layer - 1]
            ax.set_title(f"LN layer {layer} ({step.kind}, {step.reps} left)", fontsize=10)
        for k in range(K):
            sel = y == k
            ax.scatter(pts[sel, 0], pts[sel, 1], s=22, color=cmap(k % 10), edgecolor="k",
                       linewidth=0.4, label=f"class {k}", zorder=2)
        if layer == 0:
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            pad = 0.12 * float((hi - lo).max())
            ax.set_xlim(lo[0] - pad, hi[0] + pad)
            ax.set_ylim(lo[1] - pad, hi[1] + pad)
        else:
            ax.set_xlim(-1.25, 1.25)
            ax.set_ylim(-1.25, 1.25)
        if layer < n_layers:
            nxt = c.steps[layer]
            if nxt.pair is not None:
                ends = []
                for idx in nxt.pair:
                    rows = [r for r in range(len(X)) if index_of[tuple(X[r])] == idx]
                    ax.scatter(pts[rows, 0], pts[rows, 1], s=110, facecolor="none",
                               edgecolor="crimson", linewidth=1.2, zorder=3)
                    ends.append(pts[rows[0]])
                if nxt.center is not None:
                    o = np.asarray(nxt.center)
                    far = max(ends, key=lambda p: float(np.linalg.norm(p - o)))
                    ax.plot([o[0], far[0]], [o[1], far[1]], ls="--", lw=0.9,
                            color="crimson", zorder=1)
                    ax.plot(*o, marker="x", color="crimson", ms=7, mew=1.5, zorder=4)
        else:
            # readout: colour the circle by the class the head picks there
            th = np.linspace(0, 2 * math.pi, 721)
            u = np.stack([np.cos(th), np.sin(th)], axis=1)
            z = torch.as_tensor(math.sqrt(3.0) * u @ E.T)
            with torch.no_grad():
                pred = c.model.head(z).argmax(dim=1).numpy()
            ax.scatter(1.12 * u[:, 0], 1.12 * u[:, 1], s=2, c=[cmap(int(k) % 10) for k in pred],
                       zorder=1)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        if panel == 0:
            ax.legend(fontsize=7, loc="best", frameon=False)
    fig.suptitle(title or (f"Width-3 LN-Net construction ({c.strategy}): {c.num_points} points, "
                           f"{c.classes_present} classes, {c.num_ln_layers} LN layers. "
                           "Ringed: pair merged by the next layer; x: its projection centre; "
                           "outer ring: readout decision"), fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=160)
    plt.close(fig)
    return out
