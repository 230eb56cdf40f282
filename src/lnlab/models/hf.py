"""Tiny Hugging Face models built from configs (no download), for surgery and ``lnlab inspect``.

``transformers`` is an optional extra (``pip install lnlab[hf]``); it is imported lazily and a
missing install is reported as an :class:`~lnlab.errors.LnlabError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lnlab.errors import LnlabError

__all__ = ["TINY_ARCHS", "build_hf", "hf_example_input", "tiny_config"]

TINY_ARCHS = ("bert", "distilbert", "roberta", "electra", "deberta-v2", "gpt2", "gpt_neo",
              "roberta-prelayernorm", "vit", "qwen2")
"""Architectures with a hand-written tiny config (others are tried with generic names)."""

_ALIASES = {"gpt-neo": "gpt_neo", "gptneo": "gpt_neo", "deberta_v2": "deberta-v2",
            "debertav2": "deberta-v2", "roberta_prelayernorm": "roberta-prelayernorm",
            "roberta-preln": "roberta-prelayernorm", "gpt-2": "gpt2"}


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise LnlabError("Hugging Face models need the optional 'transformers' package "
                         "(pip install 'lnlab[hf]')") from None
    return transformers


def tiny_config(arch: str, *, layers: int = 6, hidden: int = 32, heads: int = 4,
                vocab: int = 128) -> Any:
    """A small config of a Hugging Face architecture (``model_type`` or alias)."""
    tf = _transformers()
    key = _ALIASES.get(arch.strip().lower(), arch.strip().lower())
    tok = {"vocab_size": vocab, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    common = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": 2 * hidden, "max_position_embeddings": 64, **tok}
    kw: dict[str, Any]
    if key == "distilbert":
        kw = {"dim": hidden, "n_layers": layers, "n_heads": heads, "hidden_dim": 2 * hidden,
              "max_position_embeddings": 64, "vocab_size": vocab, "pad_token_id": 0}
    elif key == "gpt2":
        kw = {"n_embd": hidden, "n_layer": layers, "n_head": heads, "n_positions": 64, **tok}
    elif key == "gpt_neo":
        types: list[Any] = [[["global", "local"], layers // 2]] if layers // 2 else []
        if layers % 2:
            types.append([["global"], 1])
        kw = {"hidden_size": hidden, "num_layers": layers, "num_heads": heads,
              "intermediate_size": 2 * hidden, "max_position_embeddings": 64,
              "attention_types": types, "window_size": 16, **tok}
    elif key == "vit":
        kw = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": 2 * hidden, "image_size": 16, "patch_size": 4,
              "num_channels": 3}
    elif key == "qwen2":
        kw = {**common, "num_key_value_heads": max(1, heads // 2)}
    elif key == "electra":
        kw = {**common, "embedding_size": hidden}
    else:
        kw = common
    try:
        return tf.AutoConfig.for_model(key, **kw)
    except (ValueError, KeyError):
        raise LnlabError(f"unknown Hugging Face architecture {arch!r}; tiny configs exist for "
                         f"{', '.join(TINY_ARCHS)} (or give a local config directory)") from None


def build_hf(source: str, *, layers: int = 6, classify: bool = False,
             num_labels: int = 2) -> nn.Module:
    """A randomly initialised Hugging Face model from an architecture name or a local path.

    ``source`` is an architecture (``"bert"``; tiny config with ``layers`` blocks) or a local
    directory / ``config.json`` (its config, weights not loaded: surgery needs the structure).
    ``classify`` builds the sequence- or image-classification head with ``num_labels``.
    """
    tf = _transformers()
    path = Path(source)
    if path.exists():
        cfg_dir = path.parent if path.is_file() else path
        if not (cfg_dir / "config.json").exists():
            raise LnlabError(f"{source}: no config.json there")
        try:
            cfg = tf.AutoConfig.from_pretrained(str(cfg_dir), local_files_only=True)
        except (OSError, ValueError) as e:
            raise LnlabError(f"cannot read the config in {cfg_dir}: {e}") from None
    else:
        cfg = tiny_config(source, layers=layers)
    if classify:
        cfg.num_labels = num_labels
        for auto in (tf.AutoModelForSequenceClassification, tf.AutoModelForImageClassification):
            try:
                return auto.from_config(cfg)
            except ValueError:
                continue
        raise LnlabError(f"no classification head for model type {cfg.model_type!r}")
    try:
        return tf.AutoModel.from_config(cfg)
    except ValueError as e:
        raise LnlabError(f"cannot build model type {cfg.model_type!r}: {e}") from None


def hf_example_input(model: nn.Module, *, batch: int = 2, seq: int = 8,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """A small keyword-argument input that a Hugging Face model accepts (for tracing)."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise LnlabError("not a Hugging Face model (no .config)")
    gen = torch.Generator().manual_seed(seed)
    if getattr(cfg, "num_channels", None) and getattr(cfg, "image_size", None):
        size = cfg.image_size
        hw = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        return {"pixel_values": torch.randn((batch, cfg.num_channels, *hw), generator=gen)}
    vocab = int(getattr(cfg, "vocab_size", 100))
    ids = torch.randint(3, max(4, vocab), (batch, seq), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
