"""Fully connected reference models: the residual-placement MLP and the LN-Net.

Parameter names are part of the contract (surgery and the scale-invariance audit rely on them):

* ``MLP(residual="none")``: ``blocks.{i}.fc`` (Linear), ``blocks.{i}.norm``, optional
  ``final_norm``, ``readout``.
* ``MLP(residual="pre"|"post"|"branch")``: ``input_proj`` (Linear to the width), then
  ``blocks.{i}.fc1``, ``blocks.{i}.fc2``, ``blocks.{i}.norm``, optional ``final_norm``,
  ``readout``.
* ``LNNet``: ``blocks.{i}.fc``, ``blocks.{i}.norm``, ``readout``.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from lnlab.errors import LnlabError
from lnlab.norms import NormSpec, make_norm

__all__ = ["MLP", "LNNet", "make_act"]

_ACT = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU,
        "identity": nn.Identity}


def make_act(name: str) -> nn.Module:
    """Activation module by name (relu, gelu, tanh, silu, identity)."""
    if name not in _ACT:
        raise LnlabError(f"unknown activation {name!r}; valid: {', '.join(_ACT)}")
    return _ACT[name]()


class PlainBlock(nn.Module):
    """``h -> act(Norm(fc(h)))``: the no-residual block (act may be identity, as in LN-Net)."""

    def __init__(self, d_in: int, width: int, norm: str | NormSpec, act: str, bias: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, width, bias=bias)
        self.norm = make_norm(norm, width)
        self.act = make_act(act)

    def forward(self, h: Tensor) -> Tensor:
        return self.act(self.norm(self.fc(h)))


class ResidualBlock(nn.Module):
    """One residual block with branch ``F(h) = fc2(act(fc1(h)))`` and the norm placed as:

    * ``pre``:    ``h + F(Norm(h))``
    * ``post``:   ``Norm(h + F(h))``
    * ``branch``: ``h + Norm(F(h))``
    """

    def __init__(self, width: int, hidden: int, norm: str | NormSpec, act: str,
                 placement: str, bias: bool) -> None:
        super().__init__()
        if placement not in ("pre", "post", "branch"):
            raise LnlabError(f"residual must be one of pre, post, branch, got {placement!r}")
        self.placement = placement
        self.fc1 = nn.Linear(width, hidden, bias=bias)
        self.act = make_act(act)
        self.fc2 = nn.Linear(hidden, width, bias=bias)
        self.norm = make_norm(norm, width)

    def branch(self, h: Tensor) -> Tensor:
        """The residual branch F (no norm inside)."""
        return self.fc2(self.act(self.fc1(h)))

    def forward(self, h: Tensor) -> Tensor:
        if self.placement == "pre":
            return h + self.branch(self.norm(h))
        if self.placement == "post":
            return self.norm(h + self.branch(h))
        return h + self.norm(self.branch(h))


class MLP(nn.Module):
    """MLP classifier whose norm placement is a knob (the weight-decay experiments).

    ``residual="none"``: ``depth`` blocks ``h = act(Norm(W h + b))`` then ``readout``.
    Otherwise ``h_0 = input_proj(x)`` and ``depth`` :class:`ResidualBlock`\\ s. With
    ``final_norm`` a norm is applied right before the readout. The input is flattened.
    """

    def __init__(self, in_features: int, num_classes: int, *, depth: int = 4, width: int = 256,
                 norm: str | NormSpec = "layernorm", residual: str = "none",
                 final_norm: bool = False, act: str = "relu", mlp_ratio: float = 1.0,
                 bias: bool = True) -> None:
        super().__init__()
        if residual not in ("none", "pre", "post", "branch"):
            raise LnlabError(f"residual must be one of none, pre, post, branch, got {residual!r}")
        self.residual = residual
        self.norm_placement = residual
        if residual == "none":
            self.input_proj = None
            dims = [in_features] + [width] * depth
            self.blocks = nn.ModuleList(
                PlainBlock(dims[i], width, norm, act, bias) for i in range(depth)
            )
        else:
            self.input_proj = nn.Linear(in_features, width, bias=bias)
            hidden = max(1, round(width * mlp_ratio))
            self.blocks = nn.ModuleList(
                ResidualBlock(width, hidden, norm, act, residual, bias) for _ in range(depth)
            )
        self.final_norm = make_norm(norm, width) if final_norm else None
        self.readout = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The representation fed to the readout (after the optional final norm)."""
        h = x.flatten(1).to(self.readout.weight.dtype)
        if self.input_proj is not None:
            h = self.input_proj(h)
        for block in self.blocks:
            h = block(h)
        if self.final_norm is not None:
            h = self.final_norm(h)
        return h

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.features(x))


class LNNet(nn.Module):
    """LN-Net (Ni et al. 2024): ``depth`` x (Linear -> Norm) with no activation, then a readout.

    Without the norms it collapses to one affine map, so any gain over a linear classifier
    comes from the norm's nonlinearity. The input is flattened.
    """

    def __init__(self, in_features: int, num_classes: int, *, depth: int = 6, width: int = 3,
                 norm: str | NormSpec = "layernorm", bias: bool = True) -> None:
        super().__init__()
        self.norm_placement = "none"
        dims = [in_features] + [width] * depth
        self.blocks = nn.ModuleList(
            PlainBlock(dims[i], width, norm, "identity", bias) for i in range(depth)
        )
        self.readout = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1).to(self.readout.weight.dtype)
        for block in self.blocks:
            h = block(h)
        return self.readout(h)


def flat_features(input_shape: tuple[int, ...]) -> int:
    """Number of features after flattening one example."""
    return math.prod(input_shape)
