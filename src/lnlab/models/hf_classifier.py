"""Hugging Face transformers as plain ``token ids -> logits`` classifiers for lnlab's trainer.

The trainer calls ``model(x)`` with a ``(batch, length)`` tensor of token ids and expects
``(batch, classes)`` logits. Hugging Face ``...ForSequenceClassification`` models take keyword
inputs and return an output object, so :class:`HFClassifier` adapts one: padding (token id
``pad_id``, 0 in every lnlab token dataset) becomes the ``attention_mask``, and the logits are
returned as a tensor. The wrapped model stays reachable as ``.hf`` so that surgery and the
gradient analysis see Hugging Face's own module names (``hf.bert.encoder.layer.3...``).

The usual way to get one is ``lnlab.models.build_model("hf:bert", ...)`` (``hf:ARCH`` or
``hf:PATH``, see :mod:`lnlab.models.spec`), which comes here; both ways avoid any download:

* :func:`build_hf_classifier` with an architecture name (``"bert"``, ``"gpt2"``, ``"gpt_neo"``,
  ... see :data:`lnlab.models.hf.TINY_ARCHS`) builds a randomly initialised tiny config;
* ``init=PATH`` loads a local checkpoint directory (``config.json`` + ``model.safetensors``
  written by ``save_pretrained``), e.g. a pretrained model the user has, or one that
  :func:`save_hf_classifier` wrote after a pretraining stage. Loading runs no code from the
  directory and unpickles nothing (:func:`lnlab.models.hf.load_pretrained`).

Vision architectures (``vit``) get an image-classification head and take ``pixel_values``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lnlab.errors import LnlabError
from lnlab.models.hf import _transformers, arch_key, load_config, load_pretrained, tiny_config
from lnlab.specs import expand_path

__all__ = ["HF_PLACEMENT", "HFClassifier", "build_hf_classifier", "build_hf_spec",
           "hf_placement", "parse_hf_model", "save_hf_classifier"]

HF_PLACEMENT = {"bert": "post", "distilbert": "post", "roberta": "post", "electra": "post",
                "deberta-v2": "post", "deberta": "post", "longformer": "post",
                "gpt2": "pre", "gpt_neo": "pre", "roberta-prelayernorm": "pre", "qwen2": "pre",
                "llama": "pre", "vit": "pre"}
"""Where each architecture puts its LayerNorms (Singhal & Kim, Table 3)."""

class HFClassifier(nn.Module):
    """``forward(ids) -> logits`` around a Hugging Face sequence-classification model
    (``forward(images) -> logits`` around an image-classification one)."""

    def __init__(self, hf: nn.Module, pad_id: int = 0) -> None:
        super().__init__()
        self.hf = hf
        self.pad_id = int(pad_id)
        self.vision = _is_vision(hf.config)
        placement = HF_PLACEMENT.get(_arch_key(getattr(hf.config, "model_type", "")))
        if placement is not None:
            self.norm_placement = placement  # read by lnlab.surgery.norm_placement

    def forward(self, x: Tensor) -> Tensor:
        if self.vision:
            return self.hf(pixel_values=x).logits
        if x.is_floating_point():
            raise LnlabError(f"{getattr(self.hf.config, 'model_type', 'this')} model takes token "
                             "ids, but the data holds real-valued inputs; use token data "
                             "(tokens:..., or text with a vocabulary)")
        ids = x.long()
        mask = (ids != self.pad_id).long()
        # A row of padding only would leave attention nothing to read; keep its first token.
        mask[:, 0] = 1
        return self.hf(input_ids=ids, attention_mask=mask).logits


def _arch_key(name: str) -> str:
    return arch_key(name)


def _is_vision(cfg: Any) -> bool:
    return bool(getattr(cfg, "num_channels", None) and getattr(cfg, "image_size", None))


def parse_hf_model(spec: str) -> tuple[str, dict[str, Any]]:
    """``"hf:bert:layers=3,dim=32"`` -> ``("bert", {"layers": 3, "dim": 32, ...})``.

    A view of :func:`lnlab.models.parse_model_spec` for ``hf:ARCH`` specs (defaults:
    :data:`lnlab.models.spec.HF_DEFAULTS`); ``hf:PATH`` gives ``(PATH, {})``.
    """
    from lnlab.models.spec import parse_model_spec
    from lnlab.specs import SpecError

    if not (isinstance(spec, str) and spec.strip()[:3].lower() == "hf:"):
        raise SpecError(f"not a Hugging Face model spec (hf:ARCH[:opt=v,...]): {spec!r}")
    ms = parse_model_spec(spec)
    return str(ms.source), dict(ms.options)


def hf_placement(arch_or_path: str) -> str:
    """``pre`` / ``post`` / ``unknown`` for an architecture name or a checkpoint directory."""
    path = Path(arch_or_path)
    if path.is_dir() and (path / "config.json").is_file():
        from lnlab.models.hf import read_config_dict

        arch_or_path = str(read_config_dict(path).get("model_type", ""))
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


def build_hf_classifier(arch: str, *, num_classes: int, vocab_size: int,
                        length: int | None = None, layers: int = 3, dim: int = 32,
                        heads: int = 4, dropout: float = 0.0,
                        init: str | Path | None = None) -> HFClassifier:
    """A Hugging Face classifier for token data (weights from torch's global RNG, or ``init``).

    ``init`` is a local checkpoint directory; its weights are loaded (a classification head of
    another size is replaced by a new one) and the architecture options are ignored. Token
    ids must lie in the checkpoint's vocabulary. ``length`` (the token sequence length) widens
    the position table of a tiny config when needed.
    """
    tf = _transformers()
    if init is not None:
        return _load_classifier(init, num_classes=num_classes, vocab_size=vocab_size)
    cfg = tiny_config(arch, layers=layers, hidden=dim, heads=heads, vocab=max(vocab_size, 8))
    if length is not None:
        _fit_positions(cfg, length)
    _set_dropout(cfg, dropout)
    cfg.num_labels = num_classes
    auto = (tf.AutoModelForImageClassification if _is_vision(cfg)
            else tf.AutoModelForSequenceClassification)
    try:
        hf = auto.from_config(cfg)
    except ValueError as e:
        raise LnlabError(f"no classification head for {arch!r}: {e}") from None
    return HFClassifier(hf)


def _load_classifier(init: str | Path, *, num_classes: int,
                     vocab_size: int | None) -> HFClassifier:
    tf = _transformers()
    path = expand_path(init)
    cfg = load_config(path)
    auto = (tf.AutoModelForImageClassification if _is_vision(cfg)
            else tf.AutoModelForSequenceClassification)
    try:
        hf = load_pretrained(auto, path, num_labels=num_classes, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as e:
        if isinstance(e, LnlabError):
            raise
        raise LnlabError(f"cannot load the checkpoint in {path}: "
                         f"{str(e).splitlines()[0]}") from None
    cfg_vocab = getattr(hf.config, "vocab_size", None)
    if vocab_size is not None and cfg_vocab is not None and vocab_size > int(cfg_vocab):
        raise LnlabError(f"the data has token ids up to {vocab_size - 1} but the checkpoint "
                         f"in {path} has a vocabulary of {cfg_vocab}")
    if getattr(hf.config, "pad_token_id", None) is None:
        hf.config.pad_token_id = 0
    return HFClassifier(hf)


def build_hf_spec(spec: Any, *, input_shape: tuple[int, ...], num_classes: int,
                  vocab_size: int | None) -> HFClassifier:
    """The model of an ``hf:`` :class:`~lnlab.models.ModelSpec` (``build_model`` calls this).

    ``hf:ARCH`` with token data (``vocab_size``) gets that vocabulary and room for
    ``input_shape[0]`` positions; without it, the tiny config's own vocabulary (128).
    ``hf:PATH`` loads the checkpoint's weights when it has ``model.safetensors`` and builds
    from its config otherwise.
    """
    if spec.path:
        return _load_classifier(spec.source, num_classes=num_classes, vocab_size=vocab_size)
    o = spec.options
    length = int(input_shape[0]) if vocab_size is not None else None
    return build_hf_classifier(spec.source, num_classes=num_classes,
                               vocab_size=vocab_size if vocab_size is not None else 128,
                               length=length, layers=o["layers"], dim=o["dim"],
                               heads=o["heads"], dropout=o["dropout"])


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
