"""Routing of :func:`dnorm.distributed.attention`: the sharded kernels, through the framework's autodiff adapter.

The sharded call has two implementations, each satisfying :class:`.contract.Differentiable`, so the autodiff
adapters wrap them as they wrap those of :mod:`.implementations` (neither is a :class:`.contract.Implementation`:
they take a ring):

* :data:`SHARDED`, the array-API kernels of :mod:`dnorm._kernels.sharded` (and of
  :mod:`dnorm._kernels.sharded_zigzag` for causal zigzag shards), every scheme on every backend;
* :data:`FUSED`, the same sweeps with each stop on the Triton passes (:mod:`dnorm._triton.sharded`,
  :mod:`dnorm._triton.sharded_zigzag`): torch tensors on a CUDA device (or, asked for, under Triton's
  interpreter).

``kernel="auto"`` takes the fused stops where the single-device Triton kernels would serve the call and they
do not refuse it (:func:`fused_refusal`); a forced ``kernel="triton"`` they refuse raises, naming why.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
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
from .contract import Call
from .implementations import TRITON
from .plan import symbolic_lengths

Array = Any

#: The ``kernel=`` names a sharded call takes: the array-API kernels, or the fused stops of the Triton kernels.
KERNELS = ("auto", "array-api", "triton")


@dataclass(frozen=True)
class Sharded:
    """The sharded computation, every scheme, forward and backward, over the participants of a :class:`Ring`: its
    stops on the array-API kernels, or ``fused`` on the Triton passes (torch tensors; CPU ones under Triton's
    interpreter)."""

    fused: bool

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
    ) -> tuple[Array, Any]:
        forward, _ = self.passes(options, xp=xp)
        out, residuals = forward(query, key, value, key_mask, alpha, options=options)
        return out, residuals

    def backward(
        self,
        query: Array,
        key: Array,
        value: Array,
        key_mask: Array | None,
        alpha: Array,
        seed: None,
        out: Array,
        residuals: Any,
        grad: Array,
        /,
        *,
        options: sharded.ShardedOptions,
        mask_grad: bool,
        xp: Any,
    ) -> tuple[Array, Array, Array, None, Array | None]:
        _, backward = self.passes(options, xp=xp)
        d_query, d_key, d_value, d_alpha = backward(
            query, key, value, key_mask, alpha, out, residuals, grad, options=options
        )
        return d_query, d_key, d_value, None, _shared(d_alpha, alpha, options)

    def passes(self, options: sharded.ShardedOptions, /, *, xp: Any) -> tuple[Any, Any]:
        """The forward and backward functions of a call: contiguous or causal zigzag shards, array-API or fused."""
        zigzag = _zigzag(options)
        if self.fused:
            from .._triton import sharded as fused
            from .._triton import sharded_backward as fused_backward
            from .._triton import sharded_zigzag as fused_zigzag
            from .._triton import sharded_zigzag_backward as fused_zigzag_backward

            if zigzag:
                return fused_zigzag.forward, fused_zigzag_backward.backward
            return fused.forward, fused_backward.backward
        forward = sharded_zigzag.forward if zigzag else sharded.forward
        backward = sharded_zigzag_backward.backward if zigzag else sharded_backward.backward
        return functools.partial(forward, xp=xp), functools.partial(backward, xp=xp)


SHARDED = Sharded(fused=False)
FUSED = Sharded(fused=True)


def _shared(d_params: Any, params: Any, options: sharded.ShardedOptions, /) -> Any:
    """The gradient of what every participant holds (``alpha``; the sink, the sigmoid's bias: each field of a named
    tuple), from this participant's share (:meth:`.ring.Ring.shared_gradient`)."""
    if isinstance(d_params, tuple):
        pairs = zip(d_params, params, strict=True)
        fields = [None if d is None else options.ring.shared_gradient(d, x) for d, x in pairs]
        kind: Any = type(d_params)  # a named tuple: its fields in order
        return kind(*fields)
    return None if d_params is None else options.ring.shared_gradient(d_params, params)


def fused_refusal(query: Array, key: Array, value: Array, request: check.Request, /, *, xp: Any) -> str | None:
    """Why the fused stops cannot serve a sharded call (None: they can): the single-device Triton kernels' reasons
    (:meth:`.triton.Triton.refuses`)."""
    call = Call(
        "attention", check.library(xp), request, (), query.shape[-2], key.shape[-2], query.dtype, training=True,
        symbolic=symbolic_lengths(xp), accelerated=check.accelerated(query, xp), seeded=False,
    )  # fmt: skip
    return TRITON.refuses(call, query, key, value, None)


def _implementation(query: Array, key: Array, value: Array, request: check.Request, /, *, xp: Any) -> Sharded:
    """The implementation a call takes: ``kernel=`` forced, or under ``"auto"`` the fused stops where they serve."""
    if request.kernel == "array-api":
        return SHARDED
    refused = fused_refusal(query, key, value, request, xp=xp)
    if request.kernel == "triton":
        if refused is not None:
            msg = f"kernel='triton' cannot serve this sharded call: {refused}"
            raise ValueError(msg)
        return FUSED
    return SHARDED if refused is not None else FUSED


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
    differentiates. Half precision computes in float32: the array-API kernels take the arrays cast, the fused stops
    read them as they are (a length scale scales the queries in float32, read back in their dtype) and accumulate
    in float32.
    """
    implementation = _implementation(query, key, value, request, xp=xp)
    work, out_dtype = budget.compute_dtype(query.dtype, xp=xp)
    q, k, v = query, key, value
    if implementation is SHARDED:  # the fused stops read half precision as is
        q, k, v = (budget.cast(x, work, xp=xp) for x in (query, key, value))
    like = budget.cast(q[..., :1], work, xp=xp)  # the dtype and rows of the family's numbers
    gated = check.described(request.scheme).rows == "gated"
    n = None
    if per_head.length_scale is not None or (gated and per_head.bias is None):
        n = sharded_collective.counts(like, key_mask, key.shape[-2], ring=ring, causal=request.causal, xp=xp)
    if per_head.length_scale is not None:  # scaled in the compute dtype, then read in the queries' own
        factor = family.length_factor(per_head.length_scale, n, like, xp=xp)
        q = budget.cast(budget.cast(q, work, xp=xp) * factor, q.dtype, xp=xp)
    params = family.parameters(per_head, work, query, xp=xp)
    if gated:  # the bias of every row rides where the sink would: the sigmoid takes no sink
        row_bias = family.row_bias(per_head.bias, n, like, xp=xp)
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
    training = adapt.training(xp, q, k, v, a, sink)
    out = adapt.run(implementation, training, q, k, v, m, given, None, options=options, xp=xp)
    return budget.cast(heads.merge(out, request.groups, xp=xp), out_dtype, xp=xp)


def _rows(q: Array, k: Array, width: int, dtype: Any, /, *, causal: bool, xp: Any) -> int:
    """Query rows per block of one participant's scores against ``width`` keys (the budgets of :mod:`.plan`)."""
    lead = sharded.lead(q, k)
    scale_up = budget.ACCELERATOR_SCALE if check.accelerated(q, xp) else 1
    row_bytes = math.prod(lead) * width * (xp.finfo(dtype).bits // 8) // scale_up
    if check.library(xp) == "jax":  # XLA fuses a block's elementwise work
        return budget.rows_within(budget.BLOCK_BYTES, row_bytes)
    return max(budget.MIN_ROWS, budget.rows_within(budget.CAUSAL_BYTES if causal else budget.BLOCK_BYTES, row_bytes))
