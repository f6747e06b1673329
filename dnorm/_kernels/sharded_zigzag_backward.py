"""The backward pass of :func:`.sharded_zigzag.forward`: the gradient steps of :mod:`.backward`, tile by tile.

Each turn recomputes the tiles of the forward pass (:func:`.sharded_zigzag.tiles`) and runs
:func:`.backward.step` on them; ``dQ`` stays with the queries, ``dK`` and ``dV`` travel with the key block and
come home. The reverse recurrence of the running statistic, ``H_i = dZ_i + (1 - B_{i+1}) H_{i+1}``
(spec THM-CAUSAL-GRADIENT), runs from the last query to the first, which the ring does not visit in order
either: it is a two-level scan over the query chunks (spec THM-ZIGZAG-EQUALS-FULL). Over query chunk ``a`` the
recurrence maps the carry ``g`` from the chunk after to ``u_a + m_a g``, ``u_a`` its carry from ``g = 0`` and
``m_a = prod_{i in a} (1 - B_i) = exp(C_before - C_after)`` (the running statistic before and after the chunk);
a first sweep collects every ``u_a`` into a table that travels with the key block, its owner composes the maps
from the last chunk to the first, and a second sweep carries each chunk's incoming ``g`` to its tiles.
"""

from __future__ import annotations

from typing import Any

from . import blocked, products, rows, schemes
from . import logsumexp as lse
from ._device import device_of
from .backward import Component, PerKey, step
from .backward_causal import reverse_scan
from .ring import Turn, sweep
from .shapes import pad, sum_to
from .sharded import Residuals, ShardedOptions, lead
from .sharded_zigzag import entry, half, into, pick, position, scores_of, spread, tiles

Array = Any


def backward(
    query: Array,
    key: Array,
    value: Array,
    key_mask: Array | None,
    alpha: Array,
    out: Array,
    residuals: Residuals,
    grad: Array,
    /,
    *,
    options: ShardedOptions,
    xp: Any,
) -> tuple[Array, Array, Array, Array | None]:
    """Gradients of ``query``, ``key``, ``value`` (this participant's zigzag shards) and ``alpha`` (its share)."""
    work = _Tiles((query * options.scale, key, value, key_mask, alpha, out, grad), residuals, options, xp)
    incoming = work.incoming() if work.how.running else None
    d_query: list[list[Any]] = [[None, None] for _ in options.rows]

    def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
        k, v, m, *g = read
        d_key, d_value = added
        for number, tile in enumerate(tiles(turn)):
            after = work.entry(g[0], tile) if g else None
            shares = work.tile(turn, number, tile, k, v, m, after, full=True)
            for index, share in enumerate(shares[0]):
                into(d_query[index], tile.query_low, share, lambda a, b: a + b, xp=xp)
            d_key = d_key + spread(shares[1], tile.key_low, 0.0, axis=-2, xp=xp)
            d_value = d_value + spread(shares[2], tile.key_low, 0.0, axis=-2, xp=xp)
        return d_key, d_value

    start = (work.accumulator(key.shape[-1]), work.accumulator(value.shape[-1]))
    read = (key, value, key_mask, *(() if incoming is None else (incoming,)))
    d_key, d_value = sweep(options.ring, read, start, visit)
    ordered = [d_query[index][side] for side in (0, 1) for index in range(len(options.rows))]
    d_alpha = None
    if work.how.mixed:
        d_alpha = sum_to(rows.mix_gradient(grad, work.outputs[0], work.outputs[1], xp=xp), tuple(alpha.shape), xp=xp)
    return (
        sum_to(blocked.concat_rows(ordered, xp=xp) * options.scale, tuple(query.shape), xp=xp),
        sum_to(d_key, tuple(key.shape), xp=xp),
        sum_to(d_value, tuple(value.shape), xp=xp),
        d_alpha,
    )


class _Tiles:
    """What every tile of the backward pass reads, and the gradient of one tile."""

    def __init__(self, arrays: tuple[Array, ...], residuals: Residuals, options: ShardedOptions, xp: Any) -> None:
        """``arrays``: the scaled queries, the keys, values, key mask, ``alpha``, the output and its gradient."""
        q, key, value, key_mask, alpha, out, grad = arrays
        self.q, self.key, self.value, self.key_mask, self.grad = q, key, value, key_mask, grad
        self.residuals, self.options, self.xp = residuals, options, xp
        self.how = schemes.plan(options.scheme, causal=True, n_iter=options.n_iter)
        self.outputs = residuals.outputs or (out,)
        self.weights = rows.shares(alpha) if self.how.mixed else (None,)
        self.grads = [grad if w is None else w * grad for w in self.weights]
        self.deltas = [xp.sum(g * o, axis=-1, keepdims=True) for g, o in zip(self.grads, self.outputs, strict=True)]
        self.shared = products.shared(q, key)  # grouped heads
        self.rank, self.size = options.ring.rank(), options.ring.size

    def accumulator(self, width: int) -> Array:
        """Zeros for a per-key sum ``(..., K_local, width)`` over the queries, per key head."""
        shape = list(lead(self.q, self.key))
        if self.shared:
            shape[-1] = 1
        return self.zeros(*shape, self.key.shape[-2], width)

    def zeros(self, *shape: int) -> Array:
        return self.xp.zeros(shape, dtype=self.q.dtype, device=device_of(self.q))

    def entry(self, table: Array, tile: Any) -> Array:
        """A table of sums' entry for the tile's query chunk and key chunk."""
        return entry(table, position(tile.query_low, self.rank, self.size, xp=self.xp), tile.key_low, xp=self.xp)

    def incoming(self) -> Array:
        """``g`` of every query chunk for this participant's keys, ``(..., 2P, K_local)``: one sweep collects each
        tile's ``u``, then the owner composes the chunks' maps from the last to the first."""
        xp, size = self.xp, self.size

        def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
            k, v, m = read
            (table,) = added
            for number, tile in enumerate(tiles(turn)):
                u = pad(self.tile(turn, number, tile, k, v, m, None, full=False), k.shape[-2] // 2, 0.0, axis=-1, xp=xp)
                chunk = position(tile.query_low, self.rank, size, xp=xp)
                rows_ = xp.reshape(xp.arange(2 * size, device=device_of(table)) == chunk, (2 * size, 1))
                table = table + xp.where(rows_, spread(u, tile.key_low, 0.0, axis=-1, xp=xp), 0.0)
            return (table,)

        start = self.zeros(*lead(self.q, self.key), 2 * size, self.key.shape[-2])
        (table,) = sweep(self.options.ring, (self.key, self.value, self.key_mask), (start,), visit)
        return composed(table, self.residuals.tables, xp=xp)

    def tile(
        self,
        turn: Turn,
        number: int,
        tile: Any,
        k: Array,
        v: Array,
        m: Array | None,
        after: Array | None,
        *,
        full: bool,
    ) -> Any:
        """One tile's gradient, its row blocks from the last up: with ``full``, ``(dQ per block of rows, dK, dV)``
        of its chunks; else the carry ``u`` the recurrence hands the chunk before (``after`` None)."""
        xp, options, how = self.xp, self.options, self.how
        n_rows = len(options.rows)
        low = tile.query_low
        scores = scores_of(self.q, k, m, tile, options.softcap, xp=xp)
        values, keys = half(v, tile.key_low, axis=-2, xp=xp), half(k, tile.key_low, axis=-2, xp=xp)
        grad = half(self.grad, low, axis=-2, xp=xp)
        grads = [half(g, low, axis=-2, xp=xp) for g in self.grads]
        deltas = [half(d, low, axis=-2, xp=xp) for d in self.deltas]
        queries = half(self.q, low, axis=-2, xp=xp)
        carries = self.residuals.carries[turn.step][number * n_rows : (number + 1) * n_rows]
        d_query: list[Any] = [None] * n_rows
        key_share, value_share = PerKey(), PerKey()
        for index in range(n_rows - 1, -1, -1):
            start, stop = options.rows[index]
            block, slope = scores.rows_with_slope(start, stop, xp=xp)
            width = block.shape[-1]
            dp = products.matmul(grad[..., start:stop, :], xp.matrix_transpose(values[..., :width, :]), xp=xp)
            biased, _ = blocked.bias_block(block, how, (), carries[index], xp=xp)
            stats = [pick(low, kept[index], kept[n_rows + index], xp=xp) for kept in self.residuals.rows]
            if not full:  # the recurrence alone: the biased component's dZ, no products for the gradients
                weight, g = self.weights[0], xp.exp(lse.subtract(biased, stats[0], xp=xp))
                dz = g * ((dp if weight is None else weight * dp) - deltas[0][..., start:stop, :])
                after = reverse_scan(dz, xp.exp(biased), after, doubling=how.doubling, xp=xp)[1]
                continue
            components = tuple(
                Component(g[..., start:stop, :], d[..., start:stop, :], w, stat)
                for g, d, w, stat in zip(grads, deltas, self.weights, stats, strict=True)
            )
            tile_step = step(
                block, biased, dp, components, how=how, terms=None, after=after, keep=None, shared=self.shared, xp=xp
            )
            after = tile_step.after
            ds = tile_step.ds if slope is None else tile_step.ds * slope
            if tile_step.value is not None:
                value_share.add(tile_step.value, xp=xp)
            d_query[index] = products.matmul(ds, keys[..., :width, :], xp=xp)
            key_share.add(products.t_matmul(ds, queries[..., start:stop, :], fold=self.shared, xp=xp), xp=xp)
        if not full:
            return after
        n = k.shape[-2] // 2
        return d_query, key_share.total(n, xp=xp), value_share.total(n, xp=xp)


def composed(table: Array, tables: tuple[lse.LogSumExp, ...], /, *, xp: Any) -> Array:
    """``g`` of every query chunk, ``(..., 2P, K)``, from each chunk's carry ``u`` from ``g = 0`` (``table``) and
    the running statistic before and after each chunk (``tables``): the chunks' maps ``g -> u + m g`` composed
    from the last chunk to the first (spec THM-ZIGZAG-EQUALS-FULL)."""
    before, after = tables
    g = xp.zeros_like(table[..., :1, :])
    out: list[Array] = [g] * table.shape[-2]
    for chunk in range(table.shape[-2] - 1, -1, -1):
        out[chunk] = g
        g = table[..., chunk : chunk + 1, :] + _ratio(before, after, chunk, xp=xp) * g
    return xp.concat(out, axis=-2)


def _ratio(before: lse.LogSumExp, after: lse.LogSumExp, chunk: int, /, *, xp: Any) -> Array:
    """``m = exp(C_before - C_after)`` over query chunk ``chunk``: the product of ``1 - B`` over its rows (1 for
    keys no row up to the chunk's last sees, 0 for those it sees first)."""
    b_max, b_sum = before.max[..., chunk : chunk + 1, :], before.sum[..., chunk : chunk + 1, :]
    a_max, a_sum = after.max[..., chunk : chunk + 1, :], after.sum[..., chunk : chunk + 1, :]
    seen = a_sum > 0
    ratio = b_sum * xp.exp(b_max - lse.finite(a_max, xp=xp)) / xp.where(seen, a_sum, 1.0)
    return xp.where(seen, ratio, 1.0)
