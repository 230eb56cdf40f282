"""The norm zoo: functional ops, ``nn.Module``s and a string registry.

>>> from lnlab.norms import make_norm
>>> norm = make_norm("adanorm:C=2,k=0.1", 256)
"""

from lnlab.norms._kernels import kernel_status
from lnlab.norms.functional import (
    ada_norm,
    detach_norm,
    group_layer_norm,
    layer_norm,
    layer_norm_simple,
    normalize,
    rms_norm,
)
from lnlab.norms.modules import (
    AdaNorm,
    DetachNorm,
    GroupLayerNorm,
    LayerNorm,
    LayerNormSimple,
    NoNorm,
    RMSNorm,
)
from lnlab.norms.registry import NormInfo, NormSpec, available, describe, make_norm, parse_spec

LNLAB_NORM_TYPES = (
    AdaNorm, DetachNorm, GroupLayerNorm, LayerNorm, LayerNormSimple, NoNorm, RMSNorm,
)
"""Every module class of the zoo (for surgery's ``isinstance`` checks)."""

__all__ = [
    "LNLAB_NORM_TYPES",
    "AdaNorm",
    "DetachNorm",
    "GroupLayerNorm",
    "LayerNorm",
    "LayerNormSimple",
    "NoNorm",
    "NormInfo",
    "NormSpec",
    "RMSNorm",
    "ada_norm",
    "available",
    "describe",
    "detach_norm",
    "group_layer_norm",
    "kernel_status",
    "layer_norm",
    "layer_norm_simple",
    "make_norm",
    "normalize",
    "parse_spec",
    "rms_norm",
]
