"""The backward pass through the column statistics of the key alone: doubly's and every Sinkhorn round's.

A statistic ``c`` of the key alone adds ``-B * gamma`` to the gradient of
the scores, ``B = exp(S - c)`` and ``gamma_j = sum_i dZ_ij`` (spec
THM-DNAS-GRADIENT): one pass over the blocks first, for ``gamma = v . dV -
A^T delta``, with the biased component's ``dV`` in the same products.
Sinkhorn's earlier rounds add one pass each, back through the row and column
potentials (spec THM-SINKHORN-GRADIENT); doubly is the case of one round.
A sink's column joins every round (spec THM-SINK-IN-EVERY-ROUND): its logit
is in each round's :class:`.bias.ColumnStat`, and its potentials' gradients
travel beside the keys'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import bias, rows, sinks
from . import logsumexp as lse
from .dropout import Dropout, factor
from .scores import Scores

Array = Any
Bounds = Sequence[tuple[int, int]]


def gamma_pass(
    scores: Scores,
    value: Array,
    bounds: Bounds,
    stat: bias.ColumnStat,
    grad: Array,
    delta: Array,
    drop: Dropout | None,
    /,
    *,
    xp: Any,
) -> tuple[Array, Array, Array | None]:
    """``dV`` of the biased component, ``gamma = v . dV - A^T delta`` (shape ``(..., 1, K)``) and the sink's
    ``gamma = -a_sink^T delta`` (``(..., 1, 1)``, None without a sink), one pass.

    Without dropout one product gives both; with it, ``dV`` takes the dropped weights and ``A^T delta`` not.
    """
    both: Array = None
    gamma_sink = None
    for start, stop in bounds:
        block = scores.rows(start, stop, xp=xp)
        y = bias.subtract(stat, block, xp=xp)
        if stat.sink is None:
            a = rows.softmax(y, xp=xp)
        else:
            a, a_sink = rows.with_sink(y, stat.sink, xp=xp)
            share_sink = -xp.sum(a_sink * delta[..., start:stop, :], axis=-2, keepdims=True)
            gamma_sink = share_sink if gamma_sink is None else gamma_sink + share_sink
        keep = factor(drop, start, stop, block.shape[-1], tuple(block.shape[:-2]), xp=xp, like=block)
        if keep is None:
            share = _t_matmul(a, xp.concat((grad[..., start:stop, :], delta[..., start:stop, :]), axis=-1), xp=xp)
        else:
            share = xp.concat(
                (_t_matmul(a * keep, grad[..., start:stop, :], xp=xp), _t_matmul(a, delta[..., start:stop, :], xp=xp)),
                axis=-1,
            )
        both = share if both is None else both + share
    d_value = both[..., :-1]
    gamma = xp.sum(value * d_value, axis=-1) - both[..., -1]
    return d_value, gamma[..., None, :], gamma_sink


def potentials(
    scores: Scores,
    bounds: Bounds,
    rounds: tuple[bias.ColumnStat, ...],
    d_last: Array,
    /,
    *,
    xp: Any,
    d_sink: Array | None = None,
) -> tuple[list[Array], list[list[Array]]]:
    """The gradients of every round's column and row potentials, from that of the last column potential.

    ``c^t_j = LSE_i (S_ij - r^(t-1)_i)`` and ``r^t_i = LSE_j (S_ij - c^t_j)``:
    ``dr^(t-1) = -P^t dc^t`` (row sums, block-local) and ``dc^(t-1) = -R^(t-1)^T
    dr^(t-1)`` (column sums, over every block), one pass per round back.
    Returns ``dc^1 .. dc^n`` (each ``(..., 1, K)``) and, per block, ``dr^1 ..
    dr^(n-1)`` (each ``(..., block, 1)``). With a sink, ``d_sink`` is its
    last column potential's gradient, and the sink's column takes its part in
    every row potential's.
    """
    n = len(rounds)
    d_columns = [d_last]
    d_sinks = [d_sink]
    d_rows: list[list[Array]] = [[] for _ in bounds]
    for t in range(n - 1, 0, -1):  # from the last round back to the first; t indexes round t + 1
        total = None
        sink_total = None
        for index, (start, stop) in enumerate(bounds):
            block = scores.rows(start, stop, xp=xp)
            earlier = bias.subtract(rounds[t - 1], block, xp=xp)
            row = sinks.with_sink(lse.reduce(earlier, axis=-1, xp=xp), rounds[t - 1].sink, xp=xp)
            p = xp.exp(lse.subtract(bias.subtract(rounds[t], block, xp=xp), row, xp=xp))
            d_row = -xp.sum(p * d_columns[0], axis=-1, keepdims=True)
            if d_sinks[0] is not None:  # the sink's column of P and of R (spec THM-SINK-IN-EVERY-ROUND)
                d_row = d_row - _in_row(rounds[t].sink, row, xp=xp) * d_sinks[0]
                share_sink = -xp.sum(_in_row(rounds[t - 1].sink, row, xp=xp) * d_row, axis=-2, keepdims=True)
                sink_total = share_sink if sink_total is None else sink_total + share_sink
            d_rows[index].insert(0, d_row)
            r = xp.exp(lse.subtract(earlier, row, xp=xp))
            share = -xp.matrix_transpose(_t_matmul(r, d_row, xp=xp))
            total = share if total is None else total + share
        d_columns.insert(0, total)
        d_sinks.insert(0, sink_total)
    return d_columns, d_rows


def _in_row(logit: Array, row: lse.LogSumExp, /, *, xp: Any) -> Array:
    """``exp(logit - r)``: the sink's entry of a row normalized by its potential ``r``."""
    return xp.exp(lse.subtract(logit + xp.zeros_like(row.max), row, xp=xp))


def round_terms(
    block: Array,
    last: Array,
    rounds: tuple[bias.ColumnStat, ...],
    d_columns: list[Array],
    d_rows: list[Array],
    /,
    *,
    xp: Any,
    row_stats: Sequence[lse.LogSumExp] | None = None,
) -> Array:
    """``sum_t P^t * dc^t + sum_(t < n) R^t * dr^t``: what the potentials add to ``dS`` in one block.

    ``last`` is the block's ``S - c^n``, already at hand; for doubly the sum is
    ``exp(S - c) * dc = -B * gamma``. The row potentials ``r^t`` are those of
    the block's rows, unless ``row_stats`` gives them (the block then holds
    some of the keys: a sharded sequence, spec DEF-SHARDED-ATTENTION).
    """
    total = None
    row = None
    for t, stat in enumerate(rounds):
        biased = last if t == len(rounds) - 1 else bias.subtract(stat, block, xp=xp)
        p = xp.exp(biased if row is None else lse.subtract(biased, row, xp=xp))
        term = p * d_columns[t]
        if t < len(rounds) - 1:
            row = (
                sinks.with_sink(lse.reduce(biased, axis=-1, xp=xp), stat.sink, xp=xp)
                if row_stats is None
                else row_stats[t]
            )
            term = term + xp.exp(lse.subtract(biased, row, xp=xp)) * d_rows[t]
        total = term if total is None else total + term
    return total


def _t_matmul(a: Array, b: Array, /, *, xp: Any) -> Array:
    """``a^T @ b`` over the last two axes."""
    return xp.matmul(xp.matrix_transpose(a), b)
