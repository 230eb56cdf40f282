"""Hugging Face transformers as plain ``token ids -> logits`` classifiers for lnlab's trainer.

The trainer calls ``model(x)`` with a ``(batch, length)`` tensor of token ids and expects
``(batch, classes)`` logits. Hugging Face ``...ForSequenceClassification`` models take keyword
inputs and return an output object, so :class:`HFClassifier` adapts one: padding (token id
``pad_id``, 0 in every lnlab token dataset) becomes the ``attention_mask``, and the logits are
returned as a tensor. The wrapped model stays reachable as ``.hf`` so that surgery and the
gradient analysis see Hugging Face's own module names (``hf.bert.encoder.layer.3...``).

Two ways to get one, both without any download:

* :func:`build_hf_classifier` with an architecture name (``"bert"``, ``"gpt2"``, ``"gpt_neo"``,
  ... see :data:`lnlab.models.hf.TINY_ARCHS`) builds a randomly initialised tiny config;
* ``init=PATH`` loads a local checkpoint directory (``config.json`` + weights written by
  ``save_pretrained``), e.g. a pretrained model the user has, or one that
  :func:`save_hf_classifier` wrote after a pretraining stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lnlab.errors import LnlabError
from lnlab.models.hf import _ALIASES, _transformers, tiny_config

__all__ = ["HF_PLACEMENT", "HFClassifier", "build_hf_classifier", "hf_placement",
           "parse_hf_model", "save_hf_classifier"]

HF_PLACEMENT = {"bert": "post", "distilbert": "post", "roberta": "post", "electra": "post",
                "deberta-v2": "post", "deberta": "post", "longformer": "post",
                "gpt2": "pre", "gpt_neo": "pre", "roberta-prelayernorm": "pre", "qwen2": "pre",
                "llama": "pre", "vit": "pre"}
"""Where each architecture puts its LayerNorms (Singhal & Kim, Table 3)."""

_HF_OPTIONS = {"layers": 3, "dim": 32, "heads": 4, "dropout": 0.0}


class HFClassifier(nn.Module):
    """``forward(ids) -> logits`` around a Hugging Face sequence-classification model."""

    def __init__(self, hf: nn.Module, pad_id: int = 0) -> None:
        super().__init__()
        self.hf = hf
        self.pad_id = int(pad_id)
        placement = HF_PLACEMENT.get(_arch_key(getattr(hf.config, "model_type", "")))
        if placement is not None:
            self.norm_placement = placement  # read by lnlab.surgery.norm_placement

    def forward(self, x: Tensor) -> Tensor:
        ids = x.long()
        mask = (ids != self.pad_id).long()
        # A row of padding only would leave attention nothing to read; keep its first token.
        mask[:, 0] = 1
        return self.hf(input_ids=ids, attention_mask=mask).logits


def _arch_key(name: str) -> str:
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def parse_hf_model(spec: str) -> tuple[str, dict[str, Any]]:
    """``"hf:bert:layers=3,dim=32"`` -> ``("bert", {"layers": 3, "dim": 32, ...})``.

    Options: ``layers`` (3), ``dim`` (32), ``heads`` (4), ``dropout`` (0.0; Hugging Face's
    default is 0.1, off here so tiny runs reach 100% training accuracy quickly).
    """
    if not spec.startswith("hf:"):
        raise LnlabError(f"not a Hugging Face model spec (hf:ARCH[:opt=v,...]): {spec!r}")
    arch, _, rest = spec[3:].partition(":")
    arch = _arch_key(arch)
    if not arch:
        raise LnlabError(f"{spec!r}: name an architecture, e.g. hf:bert or hf:gpt2")
    opts: dict[str, Any] = dict(_HF_OPTIONS)
    for item in filter(None, (s.strip() for s in rest.split(","))):
        k, sep, v = item.partition("=")
        if not sep or k not in _HF_OPTIONS:
            raise LnlabError(f"{spec!r}: bad option {item!r} (valid: {', '.join(_HF_OPTIONS)})")
        if not v.isascii():  # int() would read full-width and other Unicode digits
            raise LnlabError(f"{spec!r}: {k} must be a number, got {v!r}")
        try:
            opts[k] = float(v) if k == "dropout" else int(v)
        except ValueError:
            raise LnlabError(f"{spec!r}: {k} must be a number, got {v!r}") from None
        if (k == "dropout" and not 0 <= opts[k] < 1) or (k != "dropout" and opts[k] < 1):
            raise LnlabError(f"{spec!r}: {k}={v} is out of range")
    return arch, opts


def hf_placement(arch_or_path: str) -> str:
    """``pre`` / ``post`` / ``unknown`` for an architecture name or a checkpoint directory."""
    path = Path(arch_or_path)
    if path.is_dir() and (path / "config.json").is_file():
        import json

        arch_or_path = json.loads((path / "config.json").read_text()).get("model_type", "")
    return HF_PLACEMENT.get(_arch_key(arch_or_path), "unknown")


def _set_dropout(cfg: Any, p: float) -> None:
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop",
                 "embd_pdrop", "attn_pdrop", "summary_first_dropout", "dropout",
                 "attention_dropout", "embed_dropout", "resid_dropout", "classifier_dropout",
                 "seq_classif_dropout", "pooler_dropout"):
        if hasattr(cfg, name):
            setattr(cfg, name, p)


def _fit_positions(cfg: Any, length: int) -> None:
    need = length + 2  # room for RoBERTa-style position offsets
    for name in ("max_position_embeddings", "n_positions"):
        if hasattr(cfg, name) and getattr(cfg, name) < need:
            setattr(cfg, name, need)


def build_hf_classifier(arch: str, *, num_classes: int, vocab_size: int, length: int,
                        layers: int = 3, dim: int = 32, heads: int = 4, dropout: float = 0.0,
                        init: str | Path | None = None) -> HFClassifier:
    """A Hugging Face classifier for token data (weights from torch's global RNG, or ``init``).

    ``init`` is a local checkpoint directory; its weights are loaded (a classification head of
    another size is replaced by a new one) and the architecture options are ignored. Token
    ids must lie in the checkpoint's vocabulary.
    """
    tf = _transformers()
    if init is not None:
        path = Path(init)
        if not (path / "config.json").is_file():
            raise LnlabError(f"--init {init}: not a Hugging Face checkpoint directory "
                             "(no config.json)")
        try:
            hf = tf.AutoModelForSequenceClassification.from_pretrained(
                str(path), num_labels=num_classes, local_files_only=True,
                ignore_mismatched_sizes=True)
        except (OSError, ValueError) as e:
            raise LnlabError(f"cannot load the checkpoint in {path}: "
                             f"{str(e).splitlines()[0]}") from None
        cfg_vocab = int(getattr(hf.config, "vocab_size", vocab_size))
        if vocab_size > cfg_vocab:
            raise LnlabError(f"the data has token ids up to {vocab_size - 1} but the checkpoint "
                             f"in {path} has a vocabulary of {cfg_vocab}")
        if getattr(hf.config, "pad_token_id", None) is None:
            hf.config.pad_token_id = 0
        return HFClassifier(hf)
    cfg = tiny_config(arch, layers=layers, hidden=dim, heads=heads, vocab=max(vocab_size, 8))
    _fit_positions(cfg, length)
    _set_dropout(cfg, dropout)
    cfg.num_labels = num_classes
    try:
        hf = tf.AutoModelForSequenceClassification.from_config(cfg)
    except ValueError as e:
        raise LnlabError(f"no sequence-classification head for {arch!r}: {e}") from None
    return HFClassifier(hf)


def save_hf_classifier(model: HFClassifier, path: str | Path) -> Path:
    """Write the wrapped model as a Hugging Face checkpoint directory (for ``init=``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.hf.save_pretrained(str(path))
    return path


def example_ids(model: HFClassifier, batch: int = 2, length: int = 8) -> Tensor:
    """Random non-padding token ids the model accepts (for tracing)."""
    vocab = int(getattr(model.hf.config, "vocab_size", 16))
    return torch.randint(1, max(2, vocab), (batch, length),
                         generator=torch.Generator().manual_seed(0))
