"""The implementations behind the routing layer, each satisfying :mod:`.contract`.

* ``"array-api"`` (:class:`ArrayAPI`): the array-API kernels of
  :mod:`dnorm._kernels`, on every namespace, for every call.
* ``"torch"`` (:class:`Torch`): :mod:`dnorm._fastpath.torch`, torch's fused
  attention kernels with the per-key bias, for softmax, doubly and hybrid
  without causal, softcap, dropout or ``block_size``: forward and backward on
  the CPU, inference on CUDA.
* ``"dask"`` (:class:`Dask`): :mod:`dnorm._fastpath.dask`, one task per chunk
  of the leading axes, each running the array-API kernels of its chunk's
  library, when the sequence and feature axes are one chunk each.
* ``"numba"`` (:class:`dnorm._cpu.implementation.Compiled`): dnorm's compiled CPU
  kernels (:mod:`dnorm._cpu`, ``pip install 'dnorm[numba]'``), the schemes whose
  rows are a softmax, without a sink, forward, backward and decoding, on NumPy arrays and torch CPU tensors
  (``"auto"`` offers them calls of at least ``AUTO_SCORES`` scores, decoding steps
  ``AUTO_DECODE_SCORES``).
* ``"triton"`` (:class:`.triton.Triton`): dnorm's fused Triton kernels
  (:mod:`dnorm._triton`), every scheme, forward, backward and decoding, on
  CUDA torch tensors (``"auto"`` offers them CUDA tensors only; the
  interpreter, ``TRITON_INTERPRET=1``, runs them on the CPU when asked for).

Each method looks its module's function up when called, so that a test that
replaces one (to see that it runs) sees it run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from array_api_compat import array_namespace

from .. import _validate as check
from .._cpu.implementation import Compiled
from .._kernels import attention as kernels
from .._kernels.schemes import Parameters
from .contract import Call, Implementation
from .plan import kernel_options, task_lead
from .triton import Triton

Array = Any


class ArrayAPI:
    """The array-API kernels: every scheme, option and namespace; forward, backward and decoding."""

    name = "array-api"
    upcasts = True

    def refuses(self, call: Call, query: Array, key: Array, value: Array, mask: Array | None, /) -> str | None:
        return None

    def options(
        self, call: Call, query: Array, key: Array, mask: Array | None, /, *, xp: Any
    ) -> kernels.BlockedOptions:
        return kernel_options(call, query, key, mask, xp=xp)

    def infer(self, *arrays: Array, options: Any, xp: Any) -> Array:
        return kernels.infer(*arrays, options=options, xp=xp)

    def forward(self, *arrays: Array, options: Any, xp: Any) -> tuple[Array, Any]:
        return kernels.forward(*arrays, options=options, xp=xp)

    def backward(self, *arrays: Any, options: Any, mask_grad: bool, xp: Any) -> Any:
        return kernels.backward(*arrays, options=options, mask_grad=mask_grad, xp=xp)

    def decode(self, *arrays: Any, options: Any, xp: Any) -> tuple[Array, Any]:
        return kernels.decode(*arrays, options=options, xp=xp)


class Torch:
    """torch's fused attention kernels with the per-key bias (:mod:`dnorm._fastpath.torch`)."""

    name = "torch"
    upcasts = True

    def refuses(self, call: Call, query: Array, key: Array, value: Array, mask: Array | None, /) -> str | None:
        request = call.request
        if call.library != "torch":
            return f"it takes torch tensors, got {type(query).__module__}.{type(query).__name__}"
        if call.entry != "attention":
            return "torch's fused kernels have no strictly causal form, which decoding is"
        if check.described(request.scheme).columns == "rounds":
            return f"it computes at most one column statistic; {request.scheme}'s rounds take the array-API kernels"
        if check.described(request.scheme).rows != "normalized":
            return f"torch's fused kernels normalize every row, which scheme={request.scheme!r} does not"
        if request.sink:
            return "torch's fused kernels take no sink (spec DEF-SINK): kernel='array-api' or kernel='triton'"
        if request.causal:
            return "torch's fused kernels have no strictly causal form (causal=True needs the running statistic)"
        if request.block_size is not None:
            return "block_size asks for the array-API kernels' blocks; torch's fused kernels choose their own"
        if request.softcap is not None:
            return "torch's fused kernels take no softcap"
        if call.seeded:
            return "dropout's mask is a hash of dnorm's (spec DEF-DROPOUT), which torch's fused kernels do not draw"
        from .._fastpath import torch as fused

        return fused.refuses(query, key, value, mask, training=call.training)

    def options(self, call: Call, query: Array, key: Array, mask: Array | None, /, *, xp: Any) -> Any:
        from .._fastpath import torch as fused

        return fused.FusedOptions(scheme=call.request.scheme, scale=call.request.scale)

    def infer(self, *arrays: Array, options: Any, xp: Any) -> Array:
        from .._fastpath import torch as fused

        return fused.infer(*_alpha_alone(arrays), options=options, xp=xp)

    def forward(self, *arrays: Array, options: Any, xp: Any) -> tuple[Array, Any]:
        from .._fastpath import torch as fused

        return fused.forward(*_alpha_alone(arrays), options=options, xp=xp)

    def backward(self, *arrays: Any, options: Any, mask_grad: bool, xp: Any) -> Any:
        from .._fastpath import torch as fused

        *grads, d_alpha = fused.backward(*_alpha_alone(arrays), options=options, mask_grad=mask_grad, xp=xp)
        return (*grads, Parameters(d_alpha))


def _alpha_alone(arrays: tuple[Any, ...], /) -> tuple[Any, ...]:
    """The arrays of a call with its parameters as ``alpha`` alone (a path that takes no sink, as refused)."""
    query, key, value, mask, params, *rest = arrays
    return (query, key, value, mask, params.alpha, *rest)


@dataclass(frozen=True)
class ChunkOptions:
    """What every chunk of a Dask call runs: the implementation, its options and its chunks' namespace."""

    inner: ArrayAPI
    options: Any
    xp: Any


class Dask:
    """One ``blockwise`` task per chunk of the leading axes (:mod:`dnorm._fastpath.dask`)."""

    name = "dask"
    upcasts = True

    def refuses(self, call: Call, query: Array, key: Array, value: Array, mask: Array | None, /) -> str | None:
        if call.library != "dask":
            return f"it takes Dask arrays, got {type(query).__module__}.{type(query).__name__}"
        if call.entry != "attention":
            return "it serves attention; decoding runs the array-API kernels on Dask arrays (kernel='array-api')"
        if call.seeded:
            return "dnorm draws no dropout seed for Dask arrays"
        if call.request.sink:
            return "its chunks take alpha alone; a sink takes the array-API kernels (kernel='array-api')"
        from .._fastpath import dask as chunkwise

        return chunkwise.refuses(query, key, value, mask, groups=call.request.groups)

    def options(self, call: Call, query: Array, key: Array, mask: Array | None, /, *, xp: Any) -> ChunkOptions:
        q_meta, k_meta = query._meta, key._meta  # empty arrays of the chunks' library, dtype and dimensions
        mask_meta = None if mask is None else mask._meta
        chunk_xp = array_namespace(q_meta)
        inner_call = replace(
            call,
            library=check.library(chunk_xp),
            lead=task_lead(call.lead, query, key, mask, xp=xp),
            accelerated="cupy" in getattr(chunk_xp, "__name__", ""),
            training=False,
        )
        inner = ARRAY_API
        return ChunkOptions(inner, inner.options(inner_call, q_meta, k_meta, mask_meta, xp=chunk_xp), chunk_xp)

    def infer(
        self,
        query: Array,
        key: Array,
        value: Array,
        mask: Array | None,
        params: Parameters,
        seed: Array | None,
        /,
        *,
        options: ChunkOptions,
        xp: Any,
    ) -> Array:
        from .._fastpath import dask as chunkwise

        return chunkwise.attention(query, key, value, mask, params.alpha, chunk=_chunk_runner(options))


def _chunk_runner(options: ChunkOptions) -> Callable[..., Array]:
    def run(query: Array, key: Array, value: Array, mask: Array | None, alpha: Array) -> Array:
        params = Parameters(alpha)
        return options.inner.infer(query, key, value, mask, params, None, options=options.options, xp=options.xp)

    return run


ARRAY_API = ArrayAPI()
TORCH = Torch()
DASK = Dask()
TRITON = Triton()
NUMBA = Compiled()

#: The implementations by their ``kernel=`` names, in the order ``"auto"`` offers a call to them (the kernels last).
IMPLEMENTATIONS: dict[str, Implementation] = {
    "dask": DASK,
    "triton": TRITON,
    "numba": NUMBA,
    "torch": TORCH,
    "array-api": ARRAY_API,
}
