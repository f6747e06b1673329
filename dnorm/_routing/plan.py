"""The blocks of the array-API kernels for a call: materialized or chunked, causal streams, the backward pass.

Budgets in bytes of scores (:mod:`dnorm._kernels.budget`): materialize up to
256 MiB, else blocks of about 16 MiB; causal blocks of about 2 MiB, each
computing only the keys up to its last row; the backward pass recomputes
blocks of about 2 MiB. On an accelerator every budget is 64 times larger;
under Dask the budgets apply to one chunk (:func:`task_lead`); JAX, whose
compiler fuses a block's elementwise work, takes large blocks throughout.
"""

from __future__ import annotations

import math
from typing import Any

from .. import _validate as check
from .._kernels import _delegation as delegation
from .._kernels import budget
from .._kernels.attention import BlockedOptions
from .._kernels.scores import block_bounds
from .contract import Call

Array = Any


def kernel_options(call: Call, query: Array, key: Array, mask: Array | None, /, *, xp: Any) -> BlockedOptions:
    """The kernels' options for ``call`` (spec DEF-CHUNKED-ALGORITHM, DEF-BLOCKED-BACKWARD).

    An explicit ``block_size`` decides the blocks everywhere. The running
    statistic takes the namespace's fused scan where :mod:`._delegation`
    says it pays, and under symbolic lengths the two-level scan's doubling
    form.
    """
    request = call.request
    native = delegation.native_scan(query, xp=xp)
    lead = task_lead(call.lead, query, key, mask, xp=xp)
    scale_up = budget.ACCELERATOR_SCALE if call.accelerated else 1
    row_bytes = math.prod(lead) * call.n_keys * (xp.finfo(call.dtype).bits // 8) // scale_up
    library = check.library(xp)
    cache_bytes = budget.CACHE_BYTES
    causal_rows = max(budget.MIN_ROWS, budget.rows_within(budget.CAUSAL_BYTES, row_bytes))
    if library == "dask":  # ``lead`` is one chunk's
        cache_bytes, causal_rows = budget.TASK_BYTES, min(causal_rows, budget.DASK_CAUSAL_ROWS)
    streamed = max(budget.MIN_ROWS, budget.rows_within(budget.BACKWARD_BYTES, row_bytes))
    if library == "jax":  # XLA fuses a block's elementwise work: cache-sized blocks only add graph
        streamed = budget.rows_within(budget.BLOCK_BYTES, row_bytes)
    n_queries = call.n_queries
    backward = block_bounds(n_queries, request.block_size or streamed)
    if request.block_size is not None or library == "jax":
        rows, materialize = backward, False
    elif request.causal:
        rows, materialize = block_bounds(n_queries, causal_rows), False
    elif row_bytes * n_queries <= budget.MATERIALIZE_BYTES:
        rows, materialize = block_bounds(n_queries, budget.rows_within(cache_bytes, row_bytes)), True
    else:
        rows, materialize = block_bounds(n_queries, budget.rows_within(budget.BLOCK_BYTES, row_bytes)), False
    return BlockedOptions(
        scheme=request.scheme,
        causal=request.causal,
        n_iter=request.n_iter,
        scale=request.scale,
        rows=rows,
        materialize=materialize,
        backward_rows=rows if request.causal else backward,
        offset=request.offset or 0,
        softcap=request.softcap,
        dropout=request.dropout_p,
        doubling=call.symbolic,
        native_scan=native,
        sink=request.sink,
        attend_current=request.attend_current,
        position=request.first_position,
    )


def task_lead(lead: tuple[int, ...], *arrays: Array | None, xp: Any) -> tuple[int, ...]:
    """The leading shape of the scores one task holds: ``lead`` itself, except for Dask arrays.

    Under Dask the scores of ``query @ key.T`` come in chunks along the
    leading axes, as the inputs do, and every operation on a block of rows
    is a task per chunk: the byte budgets then apply to one chunk, whose
    extent along each leading axis is at most the largest chunk of every
    input that is not broadcast there. A chunk of unknown size counts as the
    whole axis. Reads only chunk sizes: nothing is computed.
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


def symbolic_lengths(xp: Any, /) -> bool:
    """Whether the lengths of this call may be symbols: under ``torch.compile``, which traces them as such.

    The causal scans then take a structure that depends on the lengths only through comparisons
    (:mod:`dnorm._kernels.scan`), so that ``dynamic=True`` keeps one graph between powers of two; eagerly, and
    under ``jax.jit`` (whose shapes are concrete), they take the one with the least work.
    """
    if check.library(xp) != "torch":
        return False
    import torch

    return bool(torch.compiler.is_compiling())
