"""The backward sweeps of :func:`.sharded_zigzag.forward`: those of :mod:`dnorm._kernels.sharded_zigzag_backward`,
tile by tile on the Triton backward passes (:mod:`.gradients`).

Under the running statistic a first sweep runs each tile's key pass from ``G = 0`` below its last query
(``G_AFTER``) and collects the reverse scan at its first query, ``u``, into the table that travels with the key
block; the owner composes the chunks' maps (:func:`dnorm._kernels.sharded_zigzag_backward.composed`), and the
second sweep runs each tile's key and query passes from its chunk's incoming ``G``. ``dQ`` stays with the
queries; ``dK`` and ``dV`` travel with the key block and come home.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.torch as xp
import torch
from torch import Tensor

from .._kernels import rows as row_ops
from .._kernels import sharded
from .._kernels.ring import Turn, sweep
from .._kernels.shapes import sum_to
from .._kernels.sharded_zigzag import Tile, entry, half, spread, tiles
from .._kernels.sharded_zigzag_backward import composed
from . import launch
from .backward import keys
from .gradients import arguments, deltas, grids, keys_buffers, queries_pass
from .launch import Inputs
from .sharded import Stops
from .sharded_zigzag import Residuals, chunk_of, tile_inputs


def backward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_mask: Tensor | None,
    alpha: Tensor,
    out: Tensor,
    residuals: Residuals,
    grad: Tensor,
    /,
    *,
    options: sharded.ShardedOptions,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Gradients of this participant's ``query``, ``key`` and ``value`` zigzag shards and its share of
    ``alpha``'s (None unless hybrid)."""
    stops = Stops(query, alpha, sharded.lead(query, key), options)
    work = _Tiles(stops, residuals, grad.to(value.dtype), out)
    incoming = work.incoming(key, value, key_mask) if stops.how.running else None
    d_query: list[Tensor | None] = [None, None]

    def visit(turn: Turn, read: tuple[Tensor, ...], added: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        k, v, m, *g = read
        d_key, d_value = added
        for number, tile in enumerate(tiles(turn)):
            after = None
            if g:
                after = entry(g[0], chunk_of(stops, tile), tile.key_low, xp=xp).reshape(-1)
            d_q, d_k, d_v = work.tile(turn, number, tile, k, v, m, after)
            side = 0 if tile.query_low else 1
            kept = d_query[side]
            d_query[side] = d_q if kept is None else kept + d_q
            d_key = d_key + spread(d_k, tile.key_low, 0.0, axis=-2, xp=xp)
            d_value = d_value + spread(d_v, tile.key_low, 0.0, axis=-2, xp=xp)
        return d_key, d_value

    probe = stops.inputs(key, value, key_mask)
    d_k, d_v, _ = keys_buffers(probe)
    start = (d_k.reshape(*stops.lead, key.shape[-2], -1), d_v.reshape(*stops.lead, key.shape[-2], -1))
    read = (key, value, key_mask, *(() if incoming is None else (incoming,)))
    d_key, d_value = sweep(options.ring, read, start, visit)
    d, dv = key.shape[-1], value.shape[-1]
    rows = query.shape[-2] // 2
    parts = [x[:, :d].reshape(*stops.lead, rows, d) for x in d_query if x is not None]
    d_alpha = None
    if stops.how.mixed:
        assert residuals.outputs is not None
        biased, plain = (
            torch.cat([side[n].reshape(*stops.lead, rows, dv) for side in residuals.outputs], dim=-2) for n in (0, 1)
        )
        mixed = row_ops.mix_gradient(grad.to(biased.dtype), biased, plain, xp=xp)
        d_alpha = sum_to(mixed, tuple(alpha.shape), xp=xp)
    return (
        sum_to(torch.cat(parts, dim=-2), tuple(query.shape), xp=xp).to(query.dtype),
        sum_to(d_key[..., :d], tuple(key.shape), xp=xp).to(key.dtype),
        sum_to(d_value[..., :dv], tuple(value.shape), xp=xp).to(value.dtype),
        d_alpha,
    )


class _Tiles:
    """What every tile of the backward sweeps reads, per half of this participant's queries, and one tile's
    launches."""

    def __init__(self, stops: Stops, residuals: Residuals, grad: Tensor, out: Tensor) -> None:
        self.stops, self.residuals = stops, residuals
        query = stops.query
        self.grads = [half(grad, low, axis=-2, xp=xp).reshape(-1, grad.shape[-1]).contiguous() for low in (True, False)]
        self.deltas = []
        for side, low in enumerate((True, False)):
            inputs = stops.inputs(query, query, None, query=half(query, low, axis=-2, xp=xp))
            mine = half(out, low, axis=-2, xp=xp).reshape(-1, out.shape[-1])
            outputs = residuals.outputs[side] if residuals.outputs is not None else None
            self.deltas.append(deltas(inputs, mine, outputs, self.grads[side])[:2])

    def launches(
        self, inputs: Inputs, tile: Tile, carry: launch.Carries | None, g_after: Tensor | None
    ) -> tuple[dict[str, Any], Tensor, Tensor, Tensor | None]:
        """A tile's key pass, from ``g_after`` below its last query: its arguments, ``dK``, ``dV``, and the reverse
        scan at its first query (under the running statistic)."""
        r, side = self.residuals, 0 if tile.query_low else 1
        biased = None if r.biased is None else r.biased[side]
        stats = launch.Residuals((), (), biased, None if r.plain is None else r.plain[side], carry, None)
        acc, device = inputs.acc, inputs.q.device
        dc = torch.zeros(1, inputs.layout.k_rows, dtype=acc, device=device)
        dr = torch.zeros(1, inputs.layout.q_rows, dtype=acc, device=device)
        delta_b, delta_p = self.deltas[side]
        shared = arguments(inputs, stats, self.grads[side], delta_b, delta_p, dc=dc, dr=dr, g_after=g_after)
        d_k, d_v, gamma = keys_buffers(inputs)
        grid_k, _ = grids(inputs)
        keys[grid_k](**keys.bind(shared, DK=d_k, DV=d_v, GAMMA=gamma, GAMMA_ONLY=False, FULL_DS=False))
        first = None
        if carry is not None:
            first = shared["G_CARRY"].reshape(inputs.layout.programs, -1, inputs.layout.n_k)[:, 0, :]
        return shared, d_k, d_v, first

    def tile(
        self, turn: Turn, number: int, tile: Tile, k: Tensor, v: Tensor, m: Tensor | None, after: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One tile's ``dQ`` (flat) and its key chunk's ``dK``, ``dV`` (``(*lead, n, padded head size)``)."""
        inputs = tile_inputs(self.stops, k, v, m, tile)
        carry = self.residuals.carries[turn.step][number]
        shared, d_k, d_v, _ = self.launches(inputs, tile, carry, after)
        d_q, _, _ = queries_pass(inputs, shared, mask_grad=False)
        n = inputs.layout.n_k
        return d_q, d_k.reshape(*self.stops.lead, n, -1), d_v.reshape(*self.stops.lead, n, -1)

    def incoming(self, key: Tensor, value: Tensor, key_mask: Tensor | None) -> Tensor:
        """``G`` below every query chunk for this participant's keys, ``(*lead, 2P, K)``: one sweep collects each
        tile's ``u`` (its reverse scan from ``G = 0``), then the owner composes the chunks' maps."""
        stops = self.stops
        size = stops.sharded.ring.size

        def visit(turn: Turn, read: tuple[Tensor, ...], added: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            k, v, m = read
            (table,) = added
            for number, tile in enumerate(tiles(turn)):
                inputs = tile_inputs(stops, k, v, m, tile)
                _, _, _, u = self.launches(inputs, tile, self.residuals.carries[turn.step][number], None)
                assert u is not None  # the running statistic's sweep
                at = torch.arange(2 * size, device=table.device).reshape(2 * size, 1) == chunk_of(stops, tile)
                u_row = spread(u.reshape(*stops.lead, 1, -1), tile.key_low, 0.0, axis=-1, xp=xp)
                table = table + torch.where(at, u_row, 0.0)
            return (table,)

        start = torch.zeros(*stops.lead, 2 * size, key.shape[-2], dtype=stops.acc, device=key.device)
        (table,) = sweep(stops.sharded.ring, (key, value, key_mask), (start,), visit)
        return composed(table, self.residuals.tables, xp=xp)
