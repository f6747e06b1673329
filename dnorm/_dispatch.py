"""Which implementation runs a call, with which blocks, in which dtype: the decisions behind the public functions.

:mod:`dnorm._api` and :mod:`dnorm._decode` check the arguments and then ask
here: the compute dtype and the casts (half precision computes in float32),
the torch fast path or the array-API kernels, the blocks of the forward and
the backward pass, and the autodiff adapter that wraps them.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from . import _validate as check
from ._kernels import attention as kernels
from ._kernels._device import device_of
from ._kernels.scores import block_bounds

Array = Any

#: Scores up to this many bytes are materialized; larger ones are processed in blocks.
MATERIALIZE_BYTES = 256 * 2**20
#: Materialized scores are still normalized in blocks of rows of about this many bytes, to stay in cache.
CACHE_BYTES = 2**20
#: The chunked path keeps one block of scores near this many bytes.
BLOCK_BYTES = 16 * 2**20
#: The causal path streams blocks of about this many bytes (each needs only the keys up to its last row).
CAUSAL_BYTES = 2 * 2**20
#: The backward pass recomputes blocks of about this many bytes, several of them alive at once.
BACKWARD_BYTES = 2 * 2**20
#: Streamed blocks (causal, backward) have at least this many rows: fewer would cost more in per-block overhead.
MIN_ROWS = 64
#: On an accelerator every budget above is this many times larger: kernel launches, not caches, set the block size.
ACCELERATOR_SCALE = 64
#: Under Dask the budgets apply to one task (a chunk of the leading axes, :func:`task_lead`), and a materialized
#: block holds this many bytes of a chunk's scores, not ``CACHE_BYTES``: every block costs a few tasks per chunk,
#: whose scheduling overhead a cache cannot repay.
TASK_BYTES = BLOCK_BYTES
#: Under Dask a causal block has at most this many rows. The running statistic's scan (:mod:`._kernels.scan`) cuts
#: ``n`` rows into groups of ``s ~ sqrt(n)`` (a power of two) and leaves them in chunks of one row, ``s`` times the
#: chunks they came in: Dask warns (PerformanceWarning) from 10 times on, that is from ``s = 16``, 256 rows.
DASK_CAUSAL_ROWS = 255


def run(
    impl: Any,
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None,
    alpha: Array,
    seed: Array | None,
    /,
    *,
    options: Any,
    xp: Any,
) -> Array:
    """``impl``'s attention, through the framework's autodiff adapter when gradients may be asked for."""
    if check.library(xp) == "jax":
        from ._autodiff import jax as autodiff

        return autodiff.attention(q, k, v, mask, alpha, seed, impl=impl, options=options)
    if check.library(xp) == "torch":
        from ._autodiff import torch as autodiff_torch

        if autodiff_torch.needs_grad(q, k, v, mask, alpha):
            return autodiff_torch.attention(q, k, v, mask, alpha, seed, impl=impl, options=options)
    return impl.infer(q, k, v, mask, alpha, seed, options=options, xp=xp)


def kernel_options(
    scheme: str,
    offset: int | None,
    n_iter: int,
    scale: float,
    lead: tuple[int, ...],
    n_queries: int,
    n_keys: int,
    block_size: int | None,
    dtype: Any,
    /,
    *,
    xp: Any,
    budget: int = 1,
) -> kernels.Options:
    """The blocks of the forward and the backward pass (spec DEF-CHUNKED-ALGORITHM, DEF-BLOCKED-BACKWARD).

    ``offset`` is None without ``causal``, else the position of the first query (spec DEF-CAUSAL-MASK);
    ``budget`` multiplies every byte budget (accelerators). Under Dask ``lead`` is the leading shape of one
    chunk (:func:`task_lead`), a materialized block holds ``TASK_BYTES`` of it and a causal block at most
    ``DASK_CAUSAL_ROWS`` rows; an explicit ``block_size`` decides as everywhere. Under symbolic lengths
    (:func:`symbolic_lengths`) the causal scans take their doubling form.
    """
    causal = offset is not None
    row_bytes = math.prod(lead) * n_keys * (xp.finfo(dtype).bits // 8) // budget
    cache_bytes, causal_rows = CACHE_BYTES, max(MIN_ROWS, rows_within(CAUSAL_BYTES, row_bytes))
    if check.library(xp) == "dask":  # ``lead`` is one chunk's (task_lead)
        cache_bytes, causal_rows = TASK_BYTES, min(causal_rows, DASK_CAUSAL_ROWS)
    streamed = max(MIN_ROWS, rows_within(BACKWARD_BYTES, row_bytes))
    if check.library(xp) == "jax":  # XLA fuses a block's elementwise work: cache-sized blocks only add graph
        streamed = rows_within(BLOCK_BYTES, row_bytes)
    backward = block_bounds(n_queries, block_size or streamed)
    if block_size is not None or check.library(xp) == "jax":
        rows, materialize = backward, False
    elif causal:
        rows, materialize = block_bounds(n_queries, causal_rows), False
    elif row_bytes * n_queries <= MATERIALIZE_BYTES:
        rows, materialize = block_bounds(n_queries, rows_within(cache_bytes, row_bytes)), True
    else:
        rows, materialize = block_bounds(n_queries, rows_within(BLOCK_BYTES, row_bytes)), False
    return kernels.Options(
        scheme,
        causal,
        n_iter,
        scale,
        rows,
        materialize,
        rows if causal else backward,
        offset or 0,
        doubling=symbolic_lengths(xp),
    )


def symbolic_lengths(xp: Any, /) -> bool:
    """Whether the lengths of this call may be symbols: under ``torch.compile``, which traces them as such.

    The causal scans then take a structure that depends on the lengths only through comparisons
    (:mod:`._kernels.scan`), so that ``dynamic=True`` keeps one graph between powers of two; eagerly, and under
    ``jax.jit`` (whose shapes are concrete), they take the one with the least work.
    """
    if check.library(xp) != "torch":
        return False
    import torch

    return bool(torch.compiler.is_compiling())


def task_lead(lead: tuple[int, ...], *arrays: Array | None, xp: Any) -> tuple[int, ...]:
    """The leading shape of the scores one task holds: ``lead`` itself, except for Dask arrays.

    Under Dask the scores of ``query @ key.T`` come in chunks along the
    leading axes, as the inputs do, and every operation on a block of rows
    is a task per chunk: the byte budgets of :func:`kernel_options` then
    apply to one chunk, whose extent along each leading axis is at most the
    largest chunk of every input that is not broadcast there. A chunk of
    unknown size counts as the whole axis. Reads only chunk sizes: nothing
    is computed.
    """
    if check.library(xp) != "dask":
        return lead
    task = list(lead)
    for x in arrays:
        if x is None or not hasattr(x, "chunks"):
            continue
        for axis, (size, chunks) in enumerate(zip(x.shape[:-2], x.chunks[:-2], strict=True)):
            at = len(lead) - (x.ndim - 2) + axis  # leading axes align from the right
            if size != 1 and not any(math.isnan(c) for c in chunks):
                task[at] = min(task[at], max(chunks))
    return tuple(task)


def torch_fastpath_supports(
    query: Array, key: Array, value: Array, mask: Array | None, alpha: Array, /, *, xp: Any
) -> bool:
    """Whether :mod:`dnorm._fastpath.torch` takes these torch tensors (static checks only)."""
    if check.library(xp) != "torch":
        return False
    from ._autodiff.torch import needs_grad
    from ._fastpath import torch as fast

    return fast.supported(query, key, value, mask, training=needs_grad(query, key, value, mask, alpha))


def array_or_none(alpha: object) -> Array | None:
    return None if isinstance(alpha, Real) else alpha


def compute_dtype(dtype: Any, /, *, xp: Any) -> tuple[Any, Any]:
    """(dtype to compute in, dtype to return): half precision computes in float32."""
    if dtype == xp.float64 or dtype == xp.float32:
        return dtype, dtype
    return xp.float32, dtype


def cast(x: Array, dtype: Any, /, *, xp: Any) -> Array:
    return x if x.dtype == dtype else xp.astype(x, dtype)


def cast_mask(mask: Array | None, dtype: Any, /, *, xp: Any) -> Array | None:
    """The mask with at least two dimensions, floating masks in the compute dtype."""
    if mask is None:
        return None
    if mask.ndim < 2:
        mask = xp.reshape(mask, (1,) * (2 - mask.ndim) + tuple(mask.shape))
    return mask if xp.isdtype(mask.dtype, "bool") else cast(mask, dtype, xp=xp)


def alpha_array(alpha: Array, dtype: Any, like: Array, /, *, xp: Any) -> Array:
    """``alpha`` as an array of the compute dtype, broadcasting over ``(..., T, K)``."""
    if isinstance(alpha, Real):
        return xp.asarray(float(alpha), dtype=dtype, device=device_of(like))
    return xp.reshape(cast(alpha, dtype, xp=xp), (*alpha.shape, 1, 1))


def rows_within(budget: int, row_bytes: int) -> int:
    """The number of query rows whose scores take at most ``budget`` bytes (at least one)."""
    return max(1, budget // max(row_bytes, 1))
