"""A small CNN whose norm acts over the channels at each position.

Block ``i`` (``blocks.{i}``): ``conv`` -> ``norm`` over channels (moved last, so any registry
norm applies per pixel; ``groupln`` is then LN-G over channel groups, as in Ni et al.'s code,
and unlike GroupNorm it does not pool over space) -> act -> optional max-pool by 2. Then a
global average pool and a linear ``head``. 1-D signals (L,) use Conv1d over one channel;
images (H, W) or (C, H, W) use Conv2d.
"""

from __future__ import annotations

from torch import Tensor, nn

from lnlab.errors import LnlabError
from lnlab.models.mlp import make_act
from lnlab.norms import NormSpec, make_norm

__all__ = ["CNN", "ConvBlock"]


class ConvBlock(nn.Module):
    """``pool(act(Norm_channels(conv(x))))`` for 1-D or 2-D feature maps."""

    def __init__(self, c_in: int, c_out: int, *, ndim: int, kernel: int,
                 norm: str | NormSpec, act: str, pool: bool) -> None:
        super().__init__()
        conv = nn.Conv1d if ndim == 1 else nn.Conv2d
        self.conv = conv(c_in, c_out, kernel, padding=kernel // 2)
        self.norm = make_norm(norm, c_out)
        self.act = make_act(act)
        pool_cls = nn.MaxPool1d if ndim == 1 else nn.MaxPool2d
        self.pool = pool_cls(2) if pool else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        h = self.norm(h.movedim(1, -1)).movedim(-1, 1)
        h = self.act(h)
        return self.pool(h) if self.pool is not None else h


class CNN(nn.Module):
    """Conv classifier: ``layers`` x :class:`ConvBlock`, global average pool, ``head``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, channels: int = 32,
                 layers: int = 3, norm: str | NormSpec = "layernorm", kernel: int = 3,
                 act: str = "relu", downsample: bool = True) -> None:
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if kernel % 2 == 0:
            raise LnlabError(f"kernel must be odd (to keep the size), got {kernel}")
        if len(shape) == 1:
            ndim, c_in, spatial = 1, 1, list(shape)
        elif len(shape) == 2:
            ndim, c_in, spatial = 2, 1, list(shape)
        elif len(shape) == 3:
            ndim, c_in, spatial = 2, shape[0], list(shape[1:])
        else:
            raise LnlabError(f"cnn input must be (L,), (H, W) or (C, H, W), got {shape}")
        self.input_shape = shape
        self.norm_placement = "none"
        self._add_channel = len(shape) < 3
        blocks = []
        for i in range(layers):
            pool = downsample and min(spatial) >= 2
            if pool:
                spatial = [s // 2 for s in spatial]
            blocks.append(ConvBlock(c_in if i == 0 else channels, channels, ndim=ndim,
                                    kernel=kernel, norm=norm, act=act, pool=pool))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = x.to(self.head.weight.dtype)
        if self._add_channel:
            h = h.unsqueeze(1)
        for block in self.blocks:
            h = block(h)
        return self.head(h.flatten(2).mean(dim=2))
