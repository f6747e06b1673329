"""Causal attention over zigzag shards (spec DEF-ZIGZAG-LAYOUT): every participant meets the same score blocks.

Participant ``r`` of ``P`` holds chunks ``r`` and ``2P - 1 - r`` of the
sequence cut in ``2P`` (:mod:`.sharded_layout`); its queries, keys and values
are those two chunks one after the other, its *low* and *high* halves. Key
blocks travel the ring of :mod:`.ring` as with contiguous shards, and at each
turn a participant meets the same amount of work (:func:`tiles`): at its own
block the two diagonal triangles and one full tile, at any other block two
full tiles, which ones depending only on whether the block comes before it.
Under JAX, where a participant's place is traced, the two tiles are chosen by
selecting their operands, so no device computes a tile it may not see.

The running statistic must meet the queries in position order, which the
ring does not: a key block's low chunk is met by the low chunks in increasing
order and then by the high chunks in decreasing order of their owners. So the
statistic is a two-level scan over chunks (spec THM-ZIGZAG-EQUALS-FULL): a
first sweep collects, into a table that travels with the key block, each
query chunk's column log-sum-exp of the block's keys; at home the owner scans
the table in position order (the exclusive prefix over the ``2P`` chunks);
a second sweep carries these prefixes, from which every tile runs the scan
over its own rows. The backward pass does the same for the reverse
recurrence (:mod:`.sharded_zigzag_backward`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import blocked, rows, schemes
from . import logsumexp as lse
from ._device import device_of
from .bias import widen
from .ring import Turn, sweep
from .scores import Scores, from_projections
from .sharded import Residuals, ShardedOptions, lead

Array = Any
Low = Any  # True: a participant's low chunk, False: its high one, or a boolean array where its place is traced


class Tile(NamedTuple):
    """One chunk of this participant's queries against one chunk of the key block at hand."""

    query_low: Low
    key_low: Low
    diagonal: bool


def tiles(turn: Turn, /) -> tuple[Tile, ...]:
    """The tiles a turn computes: the causal triangle of the whole sequence, restricted to the blocks at hand.

    At its own block ``r``: chunk ``r`` against itself and chunk ``2P - 1 - r`` against both (one full tile, two
    triangles). At block ``s < r``: both query chunks against key chunk ``s``; at ``s > r``: query chunk ``2P - 1 -
    r`` against both key chunks (later than ``s`` and ``2P - 1 - s``).
    """
    if turn.own:
        return Tile(True, True, True), Tile(False, True, False), Tile(False, False, True)
    return Tile(turn.earlier, True, False), Tile(False, turn.earlier, False)


def pick(low: Low, first: Any, second: Any, /, *, xp: Any) -> Any:
    """``first`` where ``low`` else ``second``: arrays, or tuples of them; selected without copies for a bool."""
    if isinstance(low, bool):
        return first if low else second
    if isinstance(first, tuple):
        items = [pick(low, a, b, xp=xp) for a, b in zip(first, second, strict=True)]
        return type(first)(*items) if hasattr(first, "_fields") else tuple(items)
    return xp.where(low, first, second)


def half(x: Array, low: Low, /, *, axis: int, xp: Any) -> Array:
    """The low or the high half of ``x`` along ``axis``."""
    n = x.shape[axis] // 2
    index: list[Any] = [slice(None)] * x.ndim
    index[axis] = slice(0, n)
    first = x[tuple(index)]
    index[axis] = slice(n, 2 * n)
    return pick(low, first, x[tuple(index)], xp=xp)


def into(accumulators: list[Any], low: Low, value: Any, combine: Any, /, *, xp: Any) -> None:
    """Combine ``value`` into ``accumulators[0]`` (low) or ``[1]`` (high); an empty (None) one takes it."""
    if isinstance(low, bool):
        side = 0 if low else 1
        kept = accumulators[side]
        accumulators[side] = value if kept is None else combine(kept, value)
        return
    both = [combine(kept, value) for kept in accumulators]
    accumulators[0] = pick(low, both[0], accumulators[0], xp=xp)
    accumulators[1] = pick(low, accumulators[1], both[1], xp=xp)


def position(low: Low, rank: Any, size: int, /, *, xp: Any) -> Any:
    """The chunk of the whole sequence a participant's low or high half is."""
    return pick(low, rank, 2 * size - 1 - rank, xp=xp)


def scores_of(q: Array, key: Array, key_mask: Array | None, tile: Tile, softcap: float | None, /, *, xp: Any) -> Scores:
    """The scores of one tile: its query chunk (``q`` scaled) against its key chunk, a triangle on the diagonal."""
    mask = None if key_mask is None else half(key_mask, tile.key_low, axis=-1, xp=xp)
    return from_projections(
        half(q, tile.query_low, axis=-2, xp=xp),
        half(key, tile.key_low, axis=-2, xp=xp),
        mask=mask,
        causal=tile.diagonal,
        softcap=softcap,
    )


def _hot(table: Array, chunk: Any, /, *, xp: Any) -> Array:
    """``(2P, 1)``: True at row ``chunk`` of a table of the ``2P`` query chunks."""
    rows_ = xp.arange(table.shape[-2], device=device_of(table))
    return xp.reshape(rows_ == chunk, (table.shape[-2], 1))


def row(table: lse.LogSumExp, chunk: Any, key_low: Low, /, *, xp: Any) -> lse.LogSumExp:
    """A statistic table's entry for query chunk ``chunk`` and the key chunk ``key_low``, ``(..., 1, n)``."""
    hot = _hot(table.max, chunk, xp=xp)
    top = xp.max(xp.where(hot, table.max, -xp.inf), axis=-2, keepdims=True)
    return lse.LogSumExp(half(top, key_low, axis=-1, xp=xp), entry(table.sum, chunk, key_low, xp=xp))


def entry(table: Array, chunk: Any, key_low: Low, /, *, xp: Any) -> Array:
    """A table of sums' entry for query chunk ``chunk`` and the key chunk ``key_low``, ``(..., 1, n)``."""
    total = xp.sum(xp.where(_hot(table, chunk, xp=xp), table, 0.0), axis=-2, keepdims=True)
    return half(total, key_low, axis=-1, xp=xp)


def spread(x: Array, key_low: Low, fill: float, /, *, axis: int, xp: Any) -> Array:
    """Entries of one key chunk placed among the block's ``2n`` keys along ``axis``, ``fill`` for the other chunk."""
    other = xp.full(x.shape, fill, dtype=x.dtype, device=device_of(x))
    return pick(key_low, xp.concat((x, other), axis=axis), xp.concat((other, x), axis=axis), xp=xp)


def add_total(table: lse.LogSumExp, chunk: Any, key_low: Low, stat: lse.LogSumExp, /, *, xp: Any) -> lse.LogSumExp:
    """The table with ``stat`` (one tile's column statistic) merged into its entry (chunk, key chunk)."""
    hot = _hot(table.max, chunk, xp=xp)
    top = xp.where(hot, spread(stat.max, key_low, -xp.inf, axis=-1, xp=xp), -xp.inf)
    total = xp.where(hot, spread(stat.sum, key_low, 0.0, axis=-1, xp=xp), 0.0)
    return lse.merge(table, lse.LogSumExp(top, total), xp=xp)


def prefixes(table: lse.LogSumExp, /, *, xp: Any) -> tuple[lse.LogSumExp, lse.LogSumExp]:
    """Each query chunk's running statistic before and after it: the scan of the table in position order."""
    before, after = [], []
    running = lse.LogSumExp(xp.full_like(table.max[..., :1, :], -xp.inf), xp.zeros_like(table.sum[..., :1, :]))
    for chunk in range(table.max.shape[-2]):
        before.append(running)
        entry = lse.LogSumExp(table.max[..., chunk : chunk + 1, :], table.sum[..., chunk : chunk + 1, :])
        running = lse.merge(running, entry, xp=xp)
        after.append(running)
    return _stack(before, xp=xp), _stack(after, xp=xp)


def _stack(entries: list[lse.LogSumExp], /, *, xp: Any) -> lse.LogSumExp:
    """Table rows ``(..., 1, n)`` as one table ``(..., rows, n)``."""
    return lse.LogSumExp(xp.concat([e.max for e in entries], axis=-2), xp.concat([e.sum for e in entries], axis=-2))


def forward(
    query: Array, key: Array, value: Array, key_mask: Array | None, alpha: Array, /, *, options: ShardedOptions, xp: Any
) -> tuple[Array, Residuals]:
    """This participant's rows (its two chunks) of causal attention over the whole sequence, and the residuals.

    ``options.rows`` are the blocks of rows of one chunk.
    """
    q = query * options.scale
    how = schemes.plan(options.scheme, causal=True, n_iter=options.n_iter)
    tables = _statistic_prefixes(q, key, key_mask, options, xp=xp) if how.running else ()
    n_rows = len(options.rows)
    merged: list[list[list[Any]]] = [
        [[None, None] for _ in options.rows] for _ in range(1 + how.plain if how.biased else 1)
    ]
    carries: list[tuple[lse.LogSumExp | None, ...]] = []
    rank, size = options.ring.rank(), options.ring.size

    def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
        k, v, m, *before = read
        kept: list[lse.LogSumExp | None] = []
        for tile in tiles(turn):
            scores = scores_of(q, k, m, tile, options.softcap, xp=xp)
            values = rows.with_ones(half(v, tile.key_low, axis=-2, xp=xp), None, xp=xp)
            carry = None
            if before and not tile.diagonal:
                carry = row(lse.LogSumExp(*before), position(tile.query_low, rank, size, xp=xp), tile.key_low, xp=xp)
            for index, (start, stop) in enumerate(options.rows):
                block = scores.rows(start, stop, xp=xp)
                kept.append(carry)
                biased, carry = blocked.bias_block(block, how, (), carry, xp=xp)
                parts = ([biased] if biased is not None else []) + ([block] if how.plain else [])
                width = block.shape[-1]
                for n, y in enumerate(parts):
                    part = rows.partial_product(y, values[..., :width, :], xp=xp)
                    into(merged[n][index], tile.query_low, part, _merge(xp), xp=xp)
        carries.append(tuple(kept))
        return added

    sweep(options.ring, (key, value, key_mask, *(tables[0] if tables else ())), (), visit, home=False)
    outputs = tuple(
        blocked.concat_rows([component[index][side][0] for side in (0, 1) for index in range(n_rows)], xp=xp)
        for component in merged
    )
    out = rows.mix(outputs[0], outputs[1], alpha) if how.mixed else outputs[0]
    row_stats = tuple(
        tuple(component[index][side][1] for side in (0, 1) for index in range(n_rows)) for component in merged
    )
    return out, Residuals((), (), row_stats, tuple(carries), outputs if how.mixed else (), tables)


def _merge(xp: Any) -> Any:
    return lambda a, b: rows.merge_partial(a, b, xp=xp)


def _statistic_prefixes(
    q: Array, key: Array, key_mask: Array | None, options: ShardedOptions, /, *, xp: Any
) -> tuple[lse.LogSumExp, lse.LogSumExp]:
    """The running statistic of this participant's keys before and after each of the ``2P`` query chunks.

    One sweep: the key block collects every tile's column log-sum-exp into its table, row by query chunk; at home
    the table is scanned in position order (:func:`prefixes`).
    """
    rank, size = options.ring.rank(), options.ring.size
    shape = (*lead(q, key), 2 * size, key.shape[-2])
    device = device_of(q)
    empty = (xp.full(shape, -xp.inf, dtype=q.dtype, device=device), xp.zeros(shape, dtype=q.dtype, device=device))

    def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
        k, m = read
        table = lse.LogSumExp(*added)
        for tile in tiles(turn):
            scores = scores_of(q, k, m, tile, options.softcap, xp=xp)
            n = scores.n_keys
            shares = [widen(lse.reduce(scores.rows(a, b, xp=xp), axis=-2, xp=xp), n, xp=xp) for a, b in options.rows]
            total = shares[0]
            for share in shares[1:]:
                total = lse.merge(total, share, xp=xp)
            table = add_total(table, position(tile.query_low, rank, size, xp=xp), tile.key_low, total, xp=xp)
        return tuple(table)

    return prefixes(lse.LogSumExp(*sweep(options.ring, (key, key_mask), empty, visit)), xp=xp)
