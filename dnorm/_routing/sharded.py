"""Routing of :func:`dnorm.distributed.attention`: the sharded kernels, through the framework's autodiff adapter.

The sharded call has one implementation, :class:`Sharded` (the array-API kernels of
:mod:`dnorm._kernels.sharded`, and of :mod:`dnorm._kernels.sharded_zigzag` for causal zigzag shards, whose
collectives are the ring the public layer built); it satisfies
:class:`.contract.Differentiable`, so the autodiff adapters wrap it as they wrap the implementations of
:mod:`.implementations` (it is no :class:`.contract.Implementation`: ``kernel=`` does not choose it).
"""

from __future__ import annotations

import math
from typing import Any

from .. import _validate as check
from .._kernels import (
    budget,
    schemes,
    sharded,
    sharded_backward,
    sharded_collective,
    sharded_zigzag,
    sharded_zigzag_backward,
)
from .._kernels.ring import Ring
from .._kernels.scores import block_bounds
from . import adapt, family, heads

Array = Any

#: The ``kernel=`` names a sharded call takes: the array-API kernels compute every participant's blocks.
KERNELS = ("auto", "array-api")


class Sharded:
    """The sharded kernels: every scheme, forward and backward, over the participants of a :class:`Ring`."""

    def infer(self, *inputs: Array, options: sharded.ShardedOptions, xp: Any) -> Array:
        return self.forward(*inputs, options=options, xp=xp)[0]

    def forward(
        self,
        query: Array,
        key: Array,
        value: Array,
        key_mask: Array | None,
        alpha: Array,
        seed: None,
        /,
        *,
        options: sharded.ShardedOptions,
        xp: Any,
    ) -> tuple[Array, sharded.Residuals]:
        if _zigzag(options):
            return sharded_zigzag.forward(query, key, value, key_mask, alpha, options=options, xp=xp)
        return sharded.forward(query, key, value, key_mask, alpha, options=options, xp=xp)

    def backward(
        self,
        query: Array,
        key: Array,
        value: Array,
        key_mask: Array | None,
        alpha: Array,
        seed: None,
        out: Array,
        residuals: sharded.Residuals,
        grad: Array,
        /,
        *,
        options: sharded.ShardedOptions,
        mask_grad: bool,
        xp: Any,
    ) -> tuple[Array, Array, Array, None, Array | None]:
        passes = sharded_zigzag_backward if _zigzag(options) else sharded_backward
        d_query, d_key, d_value, d_alpha = passes.backward(
            query, key, value, key_mask, alpha, out, residuals, grad, options=options, xp=xp
        )
        if isinstance(d_alpha, tuple):  # alpha and the sink, or the sigmoid's bias: each field shared
            pairs = zip(d_alpha, alpha, strict=True)
            fields = [None if d is None else options.ring.shared_gradient(d, x) for d, x in pairs]
            kind: Any = type(d_alpha)  # a named tuple: its fields in order
            return d_query, d_key, d_value, None, kind(*fields)
        if d_alpha is not None:
            d_alpha = options.ring.shared_gradient(d_alpha, alpha)
        return d_query, d_key, d_value, None, d_alpha


SHARDED = Sharded()


def _zigzag(options: sharded.ShardedOptions, /) -> bool:
    """Whether the call takes the tiles of causal zigzag shards (without causal the positions' order is moot)."""
    return options.causal and options.layout == "zigzag"


def attention(
    query: Array,
    key: Array,
    value: Array,
    key_mask: Array | None,
    per_head: check.PerHead,
    request: check.Request,
    ring: Ring,
    /,
    *,
    layout: str,
    strategy: str,
    xp: Any,
) -> Array:
    """This participant's shard of the output of :func:`dnorm.distributed.attention`, for checked arguments.

    ``key_mask`` is boolean, ``(..., 1, 1, K_local)`` with the key heads' axis of size 1, or None.
    ``per_head`` holds ``alpha``, the sink (spec DEF-SINK), the length scale, which multiplies the queries by
    ``length_scale * log n_i`` (spec DEF-LENGTH-SCALE), ``n_i`` counted over the whole sequence, and the sigmoid's
    bias (spec DEF-SIGMOID: by default ``-log n_i``), both before the sharded kernels, in operations that autodiff
    differentiates.
    """
    work, out_dtype = budget.compute_dtype(query.dtype, xp=xp)
    q, k, v = (budget.cast(x, work, xp=xp) for x in (query, key, value))
    gated = check.described(request.scheme).rows == "gated"
    n = None
    if per_head.length_scale is not None or (gated and per_head.bias is None):
        n = sharded_collective.counts(q, key_mask, key.shape[-2], ring=ring, causal=request.causal, xp=xp)
    if per_head.length_scale is not None:
        q = q * family.length_factor(per_head.length_scale, n, q, xp=xp)
    params = family.parameters(per_head, work, query, xp=xp)
    if gated:  # the bias of every row rides where the sink would: the sigmoid takes no sink
        row_bias = family.row_bias(per_head.bias, n, q, xp=xp)
        params = schemes.Parameters(params.alpha, row_bias)
    (q, a, sink), (k, v, m) = heads.split((q, *params), (k, v, key_mask), request.groups, xp=xp)
    halves = 2 if request.causal and layout == "zigzag" else 1  # tiles of one chunk against one
    chunk, width = q.shape[-2] // halves, k.shape[-2] // halves
    if strategy == "all-gather":
        width *= ring.size
    options = sharded.ShardedOptions(
        scheme=request.scheme,
        causal=request.causal,
        n_iter=request.n_iter,
        scale=request.scale,
        rows=block_bounds(chunk, _rows(q, k, width, work, causal=request.causal, xp=xp)),
        ring=ring,
        softcap=request.softcap,
        layout=layout,
        strategy=strategy,
    )
    given = a if sink is None else sharded.RowBias(sink) if gated else schemes.Parameters(a, sink)
    out = adapt.run(SHARDED, adapt.training(xp, q, k, v, a, sink), q, k, v, m, given, None, options=options, xp=xp)
    return budget.cast(heads.merge(out, request.groups, xp=xp), out_dtype, xp=xp)


def _rows(q: Array, k: Array, width: int, dtype: Any, /, *, causal: bool, xp: Any) -> int:
    """Query rows per block of one participant's scores against ``width`` keys (the budgets of :mod:`.plan`)."""
    lead = sharded.lead(q, k)
    scale_up = budget.ACCELERATOR_SCALE if check.accelerated(q, xp) else 1
    row_bytes = math.prod(lead) * width * (xp.finfo(dtype).bits // 8) // scale_up
    if check.library(xp) == "jax":  # XLA fuses a block's elementwise work
        return budget.rows_within(budget.BLOCK_BYTES, row_bytes)
    return max(budget.MIN_ROWS, budget.rows_within(budget.CAUSAL_BYTES if causal else budget.BLOCK_BYTES, row_bytes))
