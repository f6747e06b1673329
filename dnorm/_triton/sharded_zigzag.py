"""Fused stops over causal zigzag shards: the tiles of :mod:`dnorm._kernels.sharded_zigzag`, each on the Triton
passes (spec DEF-ZIGZAG-LAYOUT, THM-ZIGZAG-EQUALS-FULL).

A participant's queries and keys are two chunks each, its low and high halves; at every turn it meets the tiles
of :func:`dnorm._kernels.sharded_zigzag.tiles`, a chunk of its queries against a chunk of the block it holds,
the causal triangle on the diagonal (``q_start = 0``) and the whole tile elsewhere (the query chunk comes after
the key chunk: ``q_start`` its length). The running statistic meets the queries in position order through the
same two-level scan: a first sweep collects each tile's column statistic (:func:`.launch.carries` from nothing,
its ``last``) into the table that travels with the key block, the owner scans it, and the second sweep starts
each tile's carries from the table's entry. The tables are the array-API kernels' (``(*lead, 2P, K)``); a
tile's statistics are in the passes' flat layout.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat.torch as xp
import torch
from torch import Tensor

from .._kernels import logsumexp as lse
from .._kernels import rows as row_ops
from .._kernels import sharded
from .._kernels.ring import Turn, sweep
from .._kernels.sharded_zigzag import Tile, add_total, half, position, prefixes, row, tiles
from .launch import Carries, Components, Inputs, Pair, carries
from .sharded import Stops, row_parts


class Residuals(NamedTuple):
    """What the backward sweeps need: per half of this participant's queries (low, high), each component's row
    statistic over every key and the hybrid's components (flat); per turn and tile, the running statistic before
    each block of its queries; the running statistic's tables before and after each query chunk."""

    biased: tuple[Pair, Pair] | None
    plain: tuple[Pair, Pair] | None
    carries: tuple[tuple[Carries | None, ...], ...]
    outputs: tuple[Components, Components] | None
    tables: tuple[lse.LogSumExp, ...]


def tile_inputs(
    stops: Stops, key: Tensor, value: Tensor, key_mask: Tensor | None, tile: Tile, /, *, query: Tensor | None = None
) -> Inputs:
    """The passes' inputs of one tile: a chunk of the queries against a chunk of the block at hand."""
    low = tile.key_low
    mask = None if key_mask is None else half(key_mask, low, axis=-1, xp=xp)
    k, v = half(key, low, axis=-2, xp=xp), half(value, low, axis=-2, xp=xp)
    q = half(stops.query if query is None else query, tile.query_low, axis=-2, xp=xp)
    return stops.inputs(k, v, mask, q_start=0 if tile.diagonal else k.shape[-2], query=q)


def chunk_of(stops: Stops, tile: Tile, /) -> Any:
    """The chunk of the whole sequence a tile's queries are."""
    ring = stops.sharded.ring
    return position(tile.query_low, ring.rank(), ring.size, xp=xp)


def per_key(pair: Pair, stops: Stops, /) -> lse.LogSumExp:
    """A tile's flat per-key statistic as a table row ``(*lead, 1, n)``."""
    return lse.LogSumExp(*(x.reshape(*stops.lead, 1, -1) for x in pair))


def forward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_mask: Tensor | None,
    params: Any,
    /,
    *,
    options: sharded.ShardedOptions,
) -> tuple[Tensor, Residuals]:
    """This participant's rows (its two chunks) of causal attention over the whole sequence, in the compute dtype
    (:func:`dnorm._kernels.sharded_zigzag.forward`, tile by tile on the Triton passes), and the residuals."""
    stops = Stops(query, params, sharded.lead(query, key), options)
    how, params = stops.how, stops.params
    tables = _prefixes(stops, key, key_mask) if how.running else ()
    n_half = stops.rows() // 2
    merged: list[list[Any]] = [[None, None] for _ in range(1 + how.plain if how.biased else 1)]
    kept: list[tuple[Carries | None, ...]] = []

    def visit(turn: Turn, read: tuple[Tensor, ...], added: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        k, v, m, *before = read
        done: list[Carries | None] = []
        for tile in tiles(turn):
            inputs = tile_inputs(stops, k, v, m, tile)
            carry = None
            if how.running:
                start = None
                if not tile.diagonal:  # the statistic of the earlier query chunks, from the owner's scan
                    entry = row(lse.LogSumExp(*before), chunk_of(stops, tile), tile.key_low, xp=xp)
                    start = Pair(*(x.contiguous().reshape(inputs.layout.programs, -1) for x in entry))
                carry = carries(inputs, start)
            done.append(carry)
            side = 0 if tile.query_low else 1
            for n, part in enumerate(row_parts(inputs, None, carry, n_half, round_=False)):
                kept_part = merged[n][side]
                merged[n][side] = part if kept_part is None else row_ops.merge_partial(kept_part, part, xp=xp)
        kept.append(tuple(done))
        return added

    sweep(options.ring, (key, value, key_mask, *(tables[0] if tables else ())), (), visit, home=False)
    rows, dv = query.shape[-2] // 2, value.shape[-1]
    outputs = [torch.cat([s[0].reshape(*stops.lead, rows, dv) for s in component], dim=-2) for component in merged]
    out = row_ops.mix(outputs[0], outputs[1], params.alpha) if how.mixed else outputs[0]
    stats = [(_flat(component[0][1]), _flat(component[1][1])) for component in merged]
    sides: Any = tuple(Components(*(component[s][0] for component in merged)) for s in (0, 1)) if how.mixed else None
    return out, Residuals(
        stats[0] if how.biased else None, stats[-1] if how.plain else None, tuple(kept), sides, tables
    )


def _prefixes(stops: Stops, key: Tensor, key_mask: Tensor | None, /) -> tuple[lse.LogSumExp, lse.LogSumExp]:
    """The running statistic of this participant's keys before and after each of the ``2P`` query chunks
    (:func:`dnorm._kernels.sharded_zigzag.prefixes` of the table one sweep collects)."""
    size = stops.sharded.ring.size
    shape = (*stops.lead, 2 * size, key.shape[-2])
    empty = (
        torch.full(shape, -torch.inf, dtype=stops.acc, device=key.device),
        torch.zeros(shape, dtype=stops.acc, device=key.device),
    )

    def visit(turn: Turn, read: tuple[Tensor, ...], added: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        k, m = read
        table = lse.LogSumExp(*added)
        for tile in tiles(turn):
            inputs = tile_inputs(stops, k, k, m, tile)
            total = per_key(carries(inputs, None).last, stops)  # the tile's column statistic, causal on the diagonal
            table = add_total(table, chunk_of(stops, tile), tile.key_low, total, xp=xp)
        return tuple(table)

    return prefixes(lse.LogSumExp(*sweep(stops.sharded.ring, (key, key_mask), empty, visit)), xp=xp)


def _flat(stat: lse.LogSumExp, /) -> Pair:
    return Pair(stat.max.reshape(-1), stat.sum.reshape(-1))
