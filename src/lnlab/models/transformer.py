"""A small Transformer encoder classifier with Pre-LN or Post-LN blocks.

Block ``i`` (``blocks.{i}``) with input ``x``, per Singhal & Kim (Table 2):

* Pre-LN:  ``x = x + Attn(norm1(x)); y = x + FFN(norm2(x))``
* Post-LN: ``x = norm1(x + Attn(x));  y = norm2(x + FFN(x))``

Pre-LN models get a final norm (``final_norm``) before pooling and the head by default;
Post-LN models do not. Attention uses ``F.scaled_dot_product_attention`` so that CPU runs are
fast. Inputs are token ids (``vocab_size`` given) or real-valued sequences / images cut into
non-overlapping patches and embedded linearly (ViT style), plus learned positions.

``causal=True`` makes it a decoder-only language model: causal attention, no CLS token and
logits at every position, shape (batch, tokens, classes), for next-token targets.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lnlab.errors import LnlabError
from lnlab.models.mlp import make_act
from lnlab.norms import NormSpec, make_norm

__all__ = ["Attention", "FeedForward", "Transformer", "TransformerBlock"]


class Attention(nn.Module):
    """Multi-head self-attention: fused ``qkv`` projection, SDPA, output ``proj``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, causal: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise LnlabError(f"heads={heads} must divide dim={dim}")
        self.heads = heads
        self.dropout = dropout
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Module):
    """``fc2(act(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_act(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """One encoder block; ``ln`` = "pre" or "post" (formulas in the module docstring)."""

    def __init__(self, dim: int, heads: int, *, ln: str = "pre", mlp_ratio: float = 4.0,
                 dropout: float = 0.0, norm: str | NormSpec = "layernorm",
                 act: str = "gelu", causal: bool = False) -> None:
        super().__init__()
        if ln not in ("pre", "post"):
            raise LnlabError(f"ln must be 'pre' or 'post', got {ln!r}")
        self.ln = ln
        self.norm1 = make_norm(norm, dim)
        self.attn = Attention(dim, heads, dropout, causal)
        self.norm2 = make_norm(norm, dim)
        self.mlp = FeedForward(dim, max(1, round(dim * mlp_ratio)), act)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.ln == "pre":
            x = x + self.drop(self.attn(self.norm1(x)))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x)))
        return self.norm2(x + self.drop(self.mlp(x)))


def _patchify(x: Tensor, patch: int) -> Tensor:
    """(B, L) -> (B, L/p, p); (B, C, H, W) -> (B, HW/p^2, C p p)."""
    if x.dim() == 2:
        b, length = x.shape
        return x.reshape(b, length // patch, patch)
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


class Transformer(nn.Module):
    """Transformer encoder classifier.

    Modules: ``tok_embed`` (Embedding) or ``patch_embed`` (Linear on flattened patches),
    ``pos_embed`` and ``cls_token`` (Parameters), optional ``embed_norm``, ``blocks.{i}``
    (:class:`TransformerBlock`), optional ``final_norm``, ``head``.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *,
                 vocab_size: int | None = None, layers: int = 6, dim: int = 128, heads: int = 4,
                 ln: str = "pre", mlp_ratio: float = 4.0, dropout: float = 0.0,
                 pool: str = "cls", patch: int = 4, norm: str | NormSpec = "layernorm",
                 final_norm: bool | None = None, embed_norm: bool = False,
                 act: str = "gelu", causal: bool = False) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise LnlabError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if ln not in ("pre", "post"):
            raise LnlabError(f"ln must be 'pre' or 'post', got {ln!r}")
        shape = tuple(int(s) for s in input_shape)
        self.input_shape = shape
        self.pool = pool
        self.causal = causal
        self.ln = ln
        self.norm_placement = ln
        self.vocab_size = vocab_size
        if vocab_size is not None:
            if len(shape) != 1:
                raise LnlabError(f"token input must have shape (L,), got {shape}")
            n_tokens = shape[0]
            self.patch = None
            self.tok_embed = nn.Embedding(vocab_size, dim)
            self.patch_embed = None
        else:
            if len(shape) == 1:
                chans, spatial = None, shape
            elif len(shape) == 2:
                chans, spatial = 1, shape
            elif len(shape) == 3:
                chans, spatial = shape[0], shape[1:]
            else:
                raise LnlabError(
                    f"transformer input must be (L,), (H, W) or (C, H, W), got {shape}")
            bad = [s for s in spatial if s % patch]
            if bad:
                sizes = sorted({d for d in range(1, min(spatial) + 1)
                                if all(s % d == 0 for s in spatial)})
                raise LnlabError(f"patch={patch} does not divide the input size {spatial}; "
                                 f"valid patch sizes: {', '.join(map(str, sizes))}")
            self.patch = patch
            self._image = chans is not None
            n_tokens = math.prod(s // patch for s in spatial)
            feat = patch ** len(spatial) * (chans or 1)
            self.tok_embed = None
            self.patch_embed = nn.Linear(feat, dim)
        extra = 1 if pool == "cls" and not causal else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if extra else None
        self.pos_embed = nn.Parameter(torch.empty(1, n_tokens + extra, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.embed_norm = make_norm(norm, dim) if embed_norm else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, ln=ln, mlp_ratio=mlp_ratio, dropout=dropout, norm=norm,
                             act=act, causal=causal)
            for _ in range(layers)
        )
        if final_norm is None:
            final_norm = ln == "pre"
        self.final_norm = make_norm(norm, dim) if final_norm else None
        self.head = nn.Linear(dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """Tokens (B, N(+1), dim) entering the first block."""
        if self.tok_embed is not None:
            h = self.tok_embed(x.long())
        else:
            if self._image and x.dim() == 3:  # (B, H, W) -> one channel
                x = x.unsqueeze(1)
            x = x.to(self.patch_embed.weight.dtype)  # ints or float32 data into any dtype
            h = self.patch_embed(_patchify(x, self.patch))
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
        h = h + self.pos_embed
        if self.embed_norm is not None:
            h = self.embed_norm(h)
        return self.drop(h)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        if self.final_norm is not None:
            h = self.final_norm(h)
        if self.causal:  # a language model: next-token logits at every position
            return self.head(h)
        h = h[:, 0] if self.pool == "cls" else h.mean(dim=1)
        return self.head(h)
