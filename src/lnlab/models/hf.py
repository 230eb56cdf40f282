"""Tiny Hugging Face models built from configs (no download), and safe local checkpoint loads.

``transformers`` is an optional extra (``pip install lnlab[hf]``); it is imported lazily and a
missing install is reported as an :class:`~lnlab.errors.LnlabError`.

Loading a local directory never runs code and never unpickles: every config and model load
passes ``trust_remote_code=False`` and ``local_files_only=True``, a ``config.json`` with an
``auto_map`` (custom modelling code shipped beside the weights) is refused before transformers
sees it, and weights are read only from ``model.safetensors`` (``use_safetensors=True``); a
directory with only ``pytorch_model.bin`` (a pickle) is refused with the command to convert it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lnlab.errors import LnlabError
from lnlab.specs import expand_path

__all__ = ["TINY_ARCHS", "arch_key", "build_hf", "checkpoint_files", "hf_example_input",
           "load_config", "load_pretrained", "read_config_dict", "tiny_config"]

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


def arch_key(name: str) -> str:
    """The canonical ``model_type`` of an architecture name or alias (gpt-neo -> gpt_neo)."""
    key = name.strip().lower()
    return _ALIASES.get(key, key)


_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _config_dir(source: str | Path) -> Path:
    path = expand_path(source)
    shown = str(source) if len(str(source)) <= 80 else str(source)[:77] + "..."
    try:
        cfg_dir = path.parent if path.is_file() else path
        found = (cfg_dir / "config.json").is_file()
    except (OSError, ValueError) as e:  # a name too long, or one the OS cannot represent
        raise LnlabError(f"{shown}: not a usable path ({type(e).__name__})") from None
    if not found:
        raise LnlabError(f"{shown}: not a Hugging Face checkpoint directory (no config.json)")
    return cfg_dir


def read_config_dict(source: str | Path) -> dict[str, Any]:
    """``config.json`` of a local directory as a dict, refused when it asks for custom code.

    ``auto_map`` makes transformers import Python files from the directory (and ask whether
    to run them); lnlab only builds models that transformers itself defines.
    """
    cfg_dir = _config_dir(source)
    path = cfg_dir / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LnlabError(f"{path}: not a readable JSON config ({e})") from None
    if not isinstance(cfg, dict):
        raise LnlabError(f"{path}: a config must be a JSON object, got {type(cfg).__name__}")
    if "auto_map" in cfg:
        raise LnlabError(f"{path} declares custom modelling code (auto_map); lnlab never runs "
                         "code from a model directory -- use a model type that transformers "
                         "ships, or remove auto_map if the model does not need that code")
    return cfg


def load_config(source: str | Path) -> Any:
    """A transformers config from a local directory: no download, no remote code."""
    tf = _transformers()
    read_config_dict(source)
    cfg_dir = _config_dir(source)
    try:
        return tf.AutoConfig.from_pretrained(str(cfg_dir), local_files_only=True,
                                             trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise LnlabError(f"cannot read the config in {cfg_dir}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def checkpoint_files(source: str | Path) -> list[Path]:
    """The safetensors weight files of a local checkpoint (empty for a config-only directory).

    A directory whose weights exist only as pickles (``pytorch_model.bin``, ``*.pt``, ...) is
    refused: unpickling can execute code, so lnlab does not do it, not even with
    ``weights_only=True``.
    """
    cfg_dir = _config_dir(source)
    safe = sorted(cfg_dir.glob("*.safetensors"))
    if safe:
        return safe
    pickles = sorted(p.name for p in cfg_dir.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        src, dst = cfg_dir / pickles[0], cfg_dir / "model.safetensors"
        raise LnlabError(
            f"{cfg_dir} holds weights only as pickle files ({', '.join(pickles[:3])}), which "
            "lnlab does not load because unpickling can run code; if you trust the file, "
            "convert it once with: python -c \"import torch; from safetensors.torch import "
            f"save_file; sd = torch.load('{src}', weights_only=True); save_file({{k: "
            f"v.contiguous().clone() for k, v in sd.items()}}, '{dst}', "
            "metadata={'format': 'pt'})\"")
    return []


def load_pretrained(auto_cls: Any, source: str | Path, **kwargs: Any) -> Any:
    """``auto_cls.from_pretrained`` on a local directory with safetensors weights only, no
    remote code and no download; a config-only directory builds the model from its config
    (random weights, from torch's global RNG)."""
    cfg = load_config(source)
    cfg_dir = _config_dir(source)
    loader = {k: kwargs.pop(k) for k in ("ignore_mismatched_sizes",) if k in kwargs}
    for k, v in kwargs.items():  # config overrides such as num_labels
        setattr(cfg, k, v)
    if not checkpoint_files(cfg_dir):
        return auto_cls.from_config(cfg)
    return auto_cls.from_pretrained(str(cfg_dir), config=cfg, local_files_only=True,
                                    trust_remote_code=False, use_safetensors=True, **loader)


def tiny_config(arch: str, *, layers: int = 3, hidden: int = 32, heads: int = 4,
                vocab: int = 128) -> Any:
    """A small config of a Hugging Face architecture (``model_type`` or alias).

    The defaults are :data:`lnlab.models.spec.HF_DEFAULTS`, the size ``hf:ARCH`` means.
    """
    tf = _transformers()
    key = arch_key(arch)
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


def build_hf(source: str, *, layers: int = 3, classify: bool = False,
             num_labels: int = 2) -> nn.Module:
    """A randomly initialised Hugging Face model from an architecture name or a local path.

    ``source`` is an architecture (``"bert"``; tiny config with ``layers`` blocks) or a local
    directory / ``config.json`` (its config, weights not loaded: surgery needs the structure).
    ``classify`` builds the sequence- or image-classification head with ``num_labels``.
    Commands build HF models through :func:`lnlab.models.build_model` (``hf:ARCH``/``hf:PATH``);
    this is the plain-backbone helper for tests and scripts.
    """
    tf = _transformers()
    path = Path(source)
    cfg = load_config(path) if path.exists() else tiny_config(source, layers=layers)
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
