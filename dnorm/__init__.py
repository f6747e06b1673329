"""dnorm: attention normalization schemes on any array-API library.

Softmax attention, the doubly-normalized attention that does not explain away
its inputs (Ding et al. 2020), their hybrid and Sinkhorn attention, from one
log-domain implementation that runs on NumPy, CuPy, torch, JAX and Dask.
"""

from . import distributed, masks
from ._api import attention, normalize, received_mass
from ._decode import DecodeState, decode
from ._packed import varlen_attention
from ._sdpa import scaled_dot_product_attention
from ._validate import SCHEMES

__all__ = [
    "SCHEMES",
    "DecodeState",
    "attention",
    "decode",
    "distributed",
    "masks",
    "normalize",
    "received_mass",
    "scaled_dot_product_attention",
    "varlen_attention",
]
__version__ = "0.1.0"
