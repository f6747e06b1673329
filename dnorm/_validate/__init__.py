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
    per_head,
    qkv,
)
from ._options import (
    ALIGNMENTS,
    KERNELS,
    LAYOUTS,
    SCHEMES,
    causal_offset,
    described,
    family,
    flag,
    kernel,
    layout,
    positive_int,
    probability,
    scale,
    scheme,
    scheme_and_offset,
    sharded_scheme,
    softcap,
)
from ._request import Asked, PerHead, Request, attention_request
from ._request import family as attention_family
from ._request import per_head as per_head_of

__all__ = [
    "ALIGNMENTS",
    "KERNELS",
    "LAYOUTS",
    "SCHEMES",
    "Asked",
    "PerHead",
    "Request",
    "accelerated",
    "alpha",
    "array_or_none",
    "attention_family",
    "attention_request",
    "broadcast_shapes",
    "broadcasts_to",
    "causal_offset",
    "described",
    "family",
    "flag",
    "floating",
    "kernel",
    "layout",
    "library",
    "mask",
    "namespace",
    "per_head",
    "per_head_of",
    "positive_int",
    "probability",
    "qkv",
    "scale",
    "scheme",
    "scheme_and_offset",
    "sharded_scheme",
    "softcap",
]
