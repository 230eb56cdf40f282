"""The norm zoo: functional ops, ``nn.Module``s, the table of variants and norm recognition.

>>> from lnlab.norms import make_norm, norm_form
>>> norm = make_norm("adanorm:C=2,k=0.1", 256)
>>> norm_form(norm).kind
'adanorm'
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
    IMPLS,
    AdaNorm,
    DetachNorm,
    GroupLayerNorm,
    LayerNorm,
    LayerNormSimple,
    NoNorm,
    NormBase,
    NormMath,
    RMSNorm,
    ZooNorm,
)
from lnlab.norms.registry import (
    NormForm,
    NormInfo,
    NormSpec,
    available,
    describe,
    is_norm,
    make_norm,
    norm_form,
    parse_spec,
)

__all__ = [
    "IMPLS",
    "AdaNorm",
    "DetachNorm",
    "GroupLayerNorm",
    "LayerNorm",
    "LayerNormSimple",
    "NoNorm",
    "NormBase",
    "NormForm",
    "NormInfo",
    "NormMath",
    "NormSpec",
    "RMSNorm",
    "ZooNorm",
    "ada_norm",
    "available",
    "describe",
    "detach_norm",
    "group_layer_norm",
    "is_norm",
    "kernel_status",
    "layer_norm",
    "layer_norm_simple",
    "make_norm",
    "norm_form",
    "normalize",
    "parse_spec",
    "rms_norm",
]
