"""Argument checks of the public functions, and their error messages.

Every check names the argument, what was expected and what came. Nothing
here reads array values except :func:`alpha`'s range check on arrays that are
already computed (never on JAX tracers or Dask graphs).
"""

from ._arrays import (
    accelerated,
    alpha,
    array_or_none,
    broadcast_shapes,
    broadcasts_to,
    floating,
    library,
    mask,
    namespace,
    qkv,
)
from ._options import (
    ALIGNMENTS,
    KERNELS,
    LAYOUTS,
    SCHEMES,
    causal_offset,
    described,
    flag,
    kernel,
    layout,
    positive_int,
    probability,
    scale,
    scheme,
    scheme_and_offset,
    softcap,
)
from ._request import Asked, Request, attention_request

__all__ = [
    "ALIGNMENTS",
    "KERNELS",
    "LAYOUTS",
    "SCHEMES",
    "Asked",
    "Request",
    "accelerated",
    "alpha",
    "array_or_none",
    "attention_request",
    "broadcast_shapes",
    "broadcasts_to",
    "causal_offset",
    "described",
    "flag",
    "floating",
    "kernel",
    "layout",
    "library",
    "mask",
    "namespace",
    "positive_int",
    "probability",
    "qkv",
    "scale",
    "scheme",
    "scheme_and_offset",
    "softcap",
]
