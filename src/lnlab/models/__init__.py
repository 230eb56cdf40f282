"""Reference models that take a norm spec: MLP, LN-Net, Transformer, CNN; and HF models.

>>> from lnlab.models import build_model
>>> model = build_model("mlp:depth=4,width=64,norm=groupln;groups=4,residual=pre",
...                     input_shape=(40,), num_classes=10)
>>> bert = build_model("hf:bert:layers=2", input_shape=(16,), num_classes=2, vocab_size=64)

``hf:ARCH`` / ``hf:PATH`` specs (see :mod:`lnlab.models.spec`) give an
:class:`~lnlab.models.hf_classifier.HFClassifier`, so every command and experiment that
builds its model here accepts Hugging Face models the same way.

Every model keeps its blocks in a numbered container (``blocks.0``, ``blocks.1``, ...) so that
:mod:`lnlab.surgery` reads block indices from names, as it does for Hugging Face models.
Weights are initialised only from torch's global RNG, so ``torch.manual_seed`` fixes them.
"""

from __future__ import annotations

from torch import nn

from lnlab.errors import LnlabError
from lnlab.models.cnn import CNN, ConvBlock
from lnlab.models.mlp import MLP, LNNet, PlainBlock, ResidualBlock, flat_features
from lnlab.models.spec import (
    HF_DEFAULTS,
    ModelInfo,
    ModelSpec,
    available_models,
    describe_models,
    escape_norm,
    parse_model_spec,
    unescape_norm,
)
from lnlab.models.transformer import Attention, FeedForward, Transformer, TransformerBlock

__all__ = [
    "CNN",
    "HF_DEFAULTS",
    "MLP",
    "Attention",
    "ConvBlock",
    "FeedForward",
    "LNNet",
    "ModelInfo",
    "ModelSpec",
    "PlainBlock",
    "ResidualBlock",
    "Transformer",
    "TransformerBlock",
    "available_models",
    "build_model",
    "describe_models",
    "escape_norm",
    "parse_model_spec",
    "unescape_norm",
]


def build_model(spec: str | ModelSpec, *, input_shape: tuple[int, ...], num_classes: int,
                vocab_size: int | None = None) -> nn.Module:
    """Build a reference model from a spec string.

    ``input_shape`` is one example's shape without the batch dimension: ``(40,)`` for a
    MNIST-1D vector, ``(8, 8)`` for a digits image, ``(L,)`` token ids when ``vocab_size`` is
    given (transformer only). The model returns logits of shape ``(batch, num_classes)``
    (``(batch, tokens, num_classes)`` for a ``causal=true`` transformer, a language model) and
    carries its parsed spec as ``model.spec``.

    An ``hf:`` spec gives a Hugging Face classifier taking ``(batch, L)`` token ids (vocabulary
    ``vocab_size``, or the tiny config's 128 when None) or, for vision architectures, images.
    """
    ms = parse_model_spec(spec)
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise LnlabError(f"input_shape must be a non-empty tuple of positive sizes, got {shape}")
    if num_classes < 1:
        raise LnlabError(f"num_classes must be positive, got {num_classes}")
    if ms.name == "hf":
        from lnlab.models.hf_classifier import build_hf_spec

        hf = build_hf_spec(ms, input_shape=shape, num_classes=num_classes,
                           vocab_size=vocab_size)
        hf.spec = ms
        return hf
    if vocab_size is not None and ms.name != "transformer":
        raise LnlabError(f"model {ms.name!r} takes real-valued inputs; token ids "
                         "(vocab_size) need the transformer")
    o = ms.options
    try:
        model: nn.Module
        if ms.name == "mlp":
            model = MLP(flat_features(shape), num_classes, depth=o["depth"], width=o["width"],
                        norm=o["norm"], residual=o["residual"], final_norm=o["final_norm"],
                        act=o["act"], mlp_ratio=o["mlp_ratio"], bias=o["bias"])
        elif ms.name == "lnnet":
            model = LNNet(flat_features(shape), num_classes, depth=o["depth"], width=o["width"],
                          norm=o["norm"], bias=o["bias"])
        elif ms.name == "transformer":
            fn = {"auto": None, "true": True, "false": False}[o["final_norm"]]
            model = Transformer(shape, num_classes, vocab_size=vocab_size, layers=o["layers"],
                                dim=o["dim"], heads=o["heads"], ln=o["ln"],
                                mlp_ratio=o["mlp_ratio"], dropout=o["dropout"], pool=o["pool"],
                                patch=o["patch"], norm=o["norm"], final_norm=fn,
                                embed_norm=o["embed_norm"], act=o["act"],
                                causal=o["causal"])
        elif ms.name == "cnn":
            model = CNN(shape, num_classes, channels=o["channels"], layers=o["layers"],
                        norm=o["norm"], kernel=o["kernel"], act=o["act"],
                        downsample=o["downsample"])
        else:  # pragma: no cover - parse_model_spec validated the name
            raise AssertionError(ms.name)
    except LnlabError:
        raise
    except ValueError as e:  # e.g. groupln groups that do not divide the width
        raise LnlabError(f"cannot build {ms}: {e}") from None
    model.spec = ms
    return model
