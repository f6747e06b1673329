"""The backward pass of :func:`.sharded.forward`: the gradients of :mod:`.backward`, key block by key block.

The terms are those of the whole sequence (spec THM-DNAS-GRADIENT,
THM-SINKHORN-GRADIENT, THM-CAUSAL-GRADIENT); what changes is who holds what.
A participant's weights of one key block are ``exp(Y - R)``, ``R`` the rows'
statistic over every key that the forward pass kept. Sums over the queries
(``gamma``, the column potentials' gradients, ``dK`` and ``dV``) are collected
by the key block as it travels and come home with it; sums over the keys
(``dQ``, the row potentials' gradients) stay where the queries are:

* a statistic of the key alone: one sweep for ``gamma`` and the biased ``dV``,
  two per earlier Sinkhorn round, then one for ``dS = dZ + (the potentials'
  terms)``;
* the running statistic: the reverse recurrence ``H`` runs up the queries, so
  one backward sweep visits a block's participants from the last to its owner
  and the carry it brings is ``H`` of the later participants' queries.
"""

from __future__ import annotations

from typing import Any

from . import bias, blocked, products, rows, schemes
from . import logsumexp as lse
from ._device import device_of
from .backward import Component, PerKey, step
from .backward_sinkhorn import round_terms
from .ring import Turn, sweep
from .shapes import sum_to
from .sharded import (
    Residuals,
    RowBias,
    ShardedOptions,
    lead,
    per_key_arrays,
    per_key_stat,
    rows_of,
    tile,
    whole,
)
from .sharded_collective import every_key

Array = Any


def backward(
    query: Array,
    key: Array,
    value: Array,
    key_mask: Array | None,
    params: Any,
    out: Array,
    residuals: Residuals,
    grad: Array,
    /,
    *,
    options: ShardedOptions,
    xp: Any,
) -> tuple[Array, Array, Array, Any]:
    """Gradients of ``query``, ``key``, ``value`` (this participant's shards) and of ``params`` (its share).

    ``params`` is ``alpha``, :class:`.schemes.Parameters` with a sink, or sigmoid attention's
    :class:`.sharded.RowBias`, whose gradient is ``sum_j dS_ij`` of its rows. ``alpha``'s gradient is this
    participant's rows' share (None unless hybrid), the sink's ``-sum_i a_i delta_i`` over its rows of the plain
    component (spec THM-SINK-GRADIENT): like any parameter every participant holds, the gradient is the sum of the
    shares. The real keys' gradients need nothing more: the rows' statistics kept by the forward pass include the
    sink.
    """
    given = params
    row_bias = params.bias if isinstance(params, RowBias) else None
    params = schemes.parameters(None if row_bias is not None else params)
    alpha = params.alpha
    q = query * options.scale
    how = schemes.plan(options.scheme, causal=options.causal, n_iter=options.n_iter)
    every = every_key(key, value, key_mask, options)  # the all-gather strategy gathers them again
    outputs = residuals.outputs or (out,)
    weights = rows.shares(alpha) if how.mixed else (None,)
    grads = [grad if w is None else w * grad for w in weights]
    deltas = [xp.sum(g * o, axis=-1, keepdims=True) for g, o in zip(grads, outputs, strict=True)]
    shared = products.shared(q, key)  # grouped heads
    work = _Work(q, *every, grad, weights, grads, deltas, residuals, shared, options, xp)
    d_value = None
    d_columns: list[Array] = []
    d_rows: list[list[Array]] = [[] for _ in options.rows]
    if how.rounds:
        d_value, gamma = work.gamma()
        d_columns, d_rows = work.potentials(-gamma)
    d_query, d_key, d_value_rest, d_bias = work.scores_pass(how, d_columns, d_rows, row_bias)
    if d_value_rest is not None:
        d_value = d_value_rest if d_value is None else d_value + d_value_rest
    d_alpha = None
    if how.mixed:
        d_alpha = sum_to(rows.mix_gradient(grad, outputs[0], outputs[1], xp=xp), tuple(alpha.shape), xp=xp)
    d_params: Any = d_alpha
    if row_bias is not None:
        d_params = RowBias(sum_to(d_bias, tuple(row_bias.shape), xp=xp))
    if isinstance(given, schemes.Parameters):
        d_sink = None
        if params.sink is not None and how.plain:
            stats = residuals.rows[-1]  # the plain component's rows, the sink included
            log_total = blocked.concat_rows([s.max + lse.log_sum(s.sum, xp=xp) for s in stats], xp=xp)
            share = xp.exp(params.sink - log_total) * deltas[-1]  # a_i delta_i
            d_sink = sum_to(-share, tuple(params.sink.shape), xp=xp)
        d_params = schemes.Parameters(d_alpha, d_sink)
    if options.gathered:  # every participant's share of every key's gradient: each key's sum goes to its owner
        d_key, d_value = options.ring.scatter_total(d_key, -2), options.ring.scatter_total(d_value, -2)
    return (
        sum_to(d_query * options.scale, tuple(query.shape), xp=xp),
        sum_to(d_key, tuple(key.shape), xp=xp),
        sum_to(d_value, tuple(value.shape), xp=xp),
        d_params,
    )


class _Work:
    """The arrays every sweep of the backward pass reads, and its three kinds of sweep."""

    def __init__(
        self,
        q: Array,
        key: Array,
        value: Array,
        key_mask: Array | None,
        grad: Array,
        weights: tuple[Array | None, ...],
        grads: list[Array],
        deltas: list[Array],
        residuals: Residuals,
        shared: bool,
        options: ShardedOptions,
        xp: Any,
    ) -> None:
        self.q, self.key, self.value, self.key_mask = q, key, value, key_mask
        self.grad, self.weights, self.grads, self.deltas, self.residuals = grad, weights, grads, deltas, residuals
        self.shared, self.options, self.xp = shared, options, xp
        self.rows = options.rows

    def accumulator(self, width: int, *, per_query_head: bool = False) -> Array:
        """Zeros for a per-key sum ``(..., K_local, width)`` over the queries: per key head (a group of query
        heads summed), or ``per_query_head``."""
        shape = list(lead(self.q, self.key))
        if self.shared and not per_query_head:
            shape[-1] = 1
        return self.zeros(*shape, self.key.shape[-2], width)

    def zeros(self, *shape: int) -> Array:
        xp = self.xp
        return xp.zeros(shape, dtype=self.q.dtype, device=device_of(self.q))

    def gamma(self) -> tuple[Array, Array]:
        """The biased component's ``dV`` and ``gamma = v . dV - A^T delta`` of this participant's keys (one sweep).

        Per query head: ``gamma`` is, and ``dV`` is summed over a group of heads at home.
        """
        xp, stat, row_stats = self.xp, self.residuals.rounds[-1], self.residuals.rows[0]
        both_rows = [
            xp.concat((self.grads[0][..., a:b, :], self.deltas[0][..., a:b, :]), axis=-1) for a, b in self.rows
        ]

        def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
            k, m, *per_key = read
            scores = whole(self.q, k, m, self.options)
            (both,) = added
            for index, (start, stop_row) in enumerate(self.rows):
                biased = bias.subtract(per_key_stat(stat, per_key), scores.rows(start, stop_row, xp=xp), xp=xp)
                a = xp.exp(lse.subtract(biased, row_stats[index], xp=xp))
                both = both + xp.matmul(xp.matrix_transpose(a), both_rows[index])
            return (both,)

        start = self.accumulator(self.value.shape[-1] + 1, per_query_head=True)
        read = (self.key, self.key_mask, *per_key_arrays(stat))
        (both,) = sweep(self.options.sweeps, read, (start,), visit)
        d_value = both[..., :-1]
        gamma = xp.sum(self.value * d_value, axis=-1) - both[..., -1]
        if self.options.gathered:  # linear in the shares: each participant's, summed
            gamma = self.options.ring.total(gamma)
        return (xp.sum(d_value, axis=-3, keepdims=True) if self.shared else d_value), gamma[..., None, :]

    def potentials(self, d_last: Array) -> tuple[list[Array], list[list[Array]]]:
        """Every round's column and row potential gradients (:func:`.backward_sinkhorn.potentials`), two sweeps a
        round: the row sums ``dr = -P dc`` over every key, then the column sums ``dc = -R^T dr`` over every query."""
        rounds, potentials = self.residuals.rounds, self.residuals.potentials
        d_columns = [d_last]
        d_rows: list[list[Array]] = [[] for _ in self.rows]
        for t in range(len(rounds) - 1, 0, -1):
            sums = self._row_sums(rounds[t], potentials[t - 1], d_columns[0])
            d_columns.insert(0, self._column_sums(rounds[t - 1], potentials[t - 1], sums))
            for index, share in enumerate(sums):
                d_rows[index].insert(0, share)
        return d_columns, d_rows

    def _row_sums(self, later: bias.ColumnStat, row: tuple[lse.LogSumExp, ...], d_column: Array) -> list[Array]:
        """``dr_i = -sum_j P_ij dc_j`` per block of rows, ``P = exp(S - c^later - r)``, over every key."""
        xp = self.xp
        sums: list[Any] = [None] * len(self.rows)

        def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
            k, m, *per_key = read
            stat = per_key_stat(later, per_key[:-1])
            scores = whole(self.q, k, m, self.options)
            for index, (start, stop_row) in enumerate(self.rows):
                block = scores.rows(start, stop_row, xp=xp)
                p = xp.exp(lse.subtract(bias.subtract(stat, block, xp=xp), row[index], xp=xp))
                share = -xp.sum(p * per_key[-1], axis=-1, keepdims=True)
                sums[index] = share if sums[index] is None else sums[index] + share
            return added

        sweep(self.options.sweeps, (self.key, self.key_mask, *per_key_arrays(later), d_column), (), visit)
        return sums

    def _column_sums(self, earlier: bias.ColumnStat, row: tuple[lse.LogSumExp, ...], sums: list[Array]) -> Array:
        """``dc_j = -sum_i R_ij dr_i`` of this participant's keys, ``R = exp(S - c^earlier - r)``, over every query."""
        xp = self.xp

        def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
            k, m, *per_key = read
            stat = per_key_stat(earlier, per_key)
            scores = whole(self.q, k, m, self.options)
            (total,) = added
            for index, (start, stop_row) in enumerate(self.rows):
                biased = bias.subtract(stat, scores.rows(start, stop_row, xp=xp), xp=xp)
                r = xp.exp(lse.subtract(biased, row[index], xp=xp))
                total = total - xp.matrix_transpose(xp.matmul(xp.matrix_transpose(r), sums[index]))
            return (total,)

        start = self.zeros(*lead(self.q, self.key), 1, self.key.shape[-2])
        (total,) = sweep(self.options.sweeps, (self.key, self.key_mask, *per_key_arrays(earlier)), (start,), visit)
        return self.options.ring.total(total) if self.options.gathered else total

    def scores_pass(
        self, how: schemes.Plan, d_columns: list[Array], d_rows: list[list[Array]], row_bias: Array | None
    ) -> tuple[Array, Array, Array | None, Array | None]:
        """``dS`` block by block, and from it ``dQ``, ``dK``, the ``dV`` not found yet and the gradient ``sum_j
        dS_ij`` of sigmoid attention's ``row_bias`` (one sweep; backwards under the running statistic, whose
        reverse recurrence comes from the later participants)."""
        xp, options, residuals = self.xp, self.options, self.residuals
        rounds, potentials, row_stats = residuals.rounds, residuals.potentials, residuals.rows
        n_round = [len(per_key_arrays(stat)) for stat in rounds]
        d_query: list[Any] = [None] * len(self.rows)
        d_bias: list[Any] = [None] * len(self.rows)
        values_grad = how.plain or how.running  # the biased component's dV came with gamma otherwise
        size = options.sweeps.size

        def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
            k, v, m, *per_key = read
            scores = tile(self.q, k, m, turn, options, xp=xp)
            if scores is None:
                return added
            stats, at = [], 0
            for stat, n in zip(rounds, n_round, strict=True):
                stats.append(per_key_stat(stat, per_key[at : at + n]))
                at += n
            d_cols = per_key[at:]
            after = added[0] if how.running else None
            d_key = added[1] if how.running else added[0]
            carries = residuals.carries[size - 1 - turn.step] if how.running else ()
            key_share, value_share = PerKey(), PerKey()
            order = range(len(self.rows) - 1, -1, -1) if options.causal else range(len(self.rows))  # widths shrink
            for index in order:
                start, stop_row = self.rows[index]
                block, slope = scores.rows_with_slope(start, stop_row, xp=xp)
                if row_bias is not None:
                    block = block + rows_of(row_bias, start, stop_row)
                width = block.shape[-1]
                dp = xp.matmul(self.grad[..., start:stop_row, :], xp.matrix_transpose(v[..., :width, :]))
                carry = carries[index] if how.running else None
                biased, _ = blocked.bias_block(block, how, tuple(stats[-1:]), carry, xp=xp)
                terms = None
                if how.rounds:
                    potential = [row_stat[index] for row_stat in potentials]
                    terms = round_terms(block, biased, tuple(stats), d_cols, d_rows[index], row_stats=potential, xp=xp)
                components = tuple(
                    Component(g[..., start:stop_row, :], d[..., start:stop_row, :], w, stat[index] if stat else None)
                    for g, d, w, stat in zip(self.grads, self.deltas, self.weights, row_stats, strict=True)
                )
                tile_step = step(
                    block, biased, dp, components, how=how, terms=terms, after=after, keep=None, shared=self.shared,
                    xp=xp,
                )  # fmt: skip
                ds, after = tile_step.ds, tile_step.after
                if row_bias is not None:
                    share = xp.sum(ds, axis=-1, keepdims=True)
                    d_bias[index] = share if d_bias[index] is None else d_bias[index] + share
                if tile_step.value is not None:
                    value_share.add(tile_step.value, xp=xp)
                if slope is not None:
                    ds = ds * slope
                share = products.matmul(ds, k[..., :width, :], xp=xp)
                d_query[index] = share if d_query[index] is None else d_query[index] + share
                key_share.add(self._t(ds, self.q[..., start:stop_row, :]), xp=xp)
            n_keys = k.shape[-2]
            sums: tuple[Array, ...] = (d_key + key_share.total(n_keys, xp=xp),)
            if values_grad:
                sums += (added[-1] + value_share.total(n_keys, xp=xp),)
            return (after, *sums) if how.running else sums

        added: tuple[Array, ...] = (self.accumulator(self.key.shape[-1]),)
        if values_grad:
            added += (self.accumulator(self.value.shape[-1]),)
        if how.running:
            added = (self.zeros(*lead(self.q, self.key), 1, self.key.shape[-2]), *added)
        read = (self.key, self.value, self.key_mask, *(a for stat in rounds for a in per_key_arrays(stat)), *d_columns)
        result = sweep(options.sweeps, read, added, visit, backwards=how.running)
        if how.running:
            result = result[1:]
        d_value = result[1] if values_grad else None
        d_row_bias = None if row_bias is None else blocked.concat_rows(d_bias, xp=xp)
        return blocked.concat_rows(d_query, xp=xp), result[0], d_value, d_row_bias

    def _dp(self, dp: Array, component: int) -> Array:
        """``dO V^T`` of one component: scaled by its share of the hybrid."""
        weight = self.weights[component]
        return dp if weight is None else weight * dp

    def _t(self, a: Array, b: Array) -> Array:
        """``a^T b``, summed over a group of query heads for the keys and values they share."""
        return products.t_matmul(a, b, fold=self.shared, xp=self.xp)
