"""Attention over a sequence sharded along its positions, every scheme (spec DEF-SHARDED-ATTENTION).

Each participant holds one shard of the queries, keys and values; key blocks
travel around the participants (:mod:`.ring`) and the statistics travel with
them, so that every participant computes its rows of the whole sequence's
attention (spec THM-SHARDED-EQUALS-FULL):

* a statistic of the key alone (doubly, each Sinkhorn round) is collected by
  its key block as the block visits every participant, and comes home
  complete: one sweep of keys per round, and one more for each of Sinkhorn's
  row potentials;
* the running statistic (causal) visits the participants in position order,
  so the carry a block brings to a participant is the statistic of every
  earlier participant's queries (an exclusive scan over the participants):
  causal attention takes the one sweep of ring softmax;
* the row pass merges the partial output of each block by its rows' statistic
  (spec DEF-ONLINE-MERGE), and keeps that statistic for the backward pass.

Inside a turn the queries are processed in blocks of rows (``ShardedOptions.rows``);
nothing of size ``(T, K)`` of the whole sequence exists anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from . import bias, blocked, products, rows, schemes, sinks, unnormalized
from . import logsumexp as lse
from ._device import device_of
from .ring import ALONE, Ring, Turn, sweep
from .scores import Scores, from_projections
from .sharded_collective import every_key, merged_over_participants

Array = Any
Bounds = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ShardedOptions:
    """Everything about a sharded call that is not an array (hashable: a static argument under JAX).

    ``rows`` are the blocks of this participant's queries (of each of its two chunks, zigzag shards under
    causal); ``causal`` is the top-left triangle of the whole sequence (query and key shards of one length).
    ``layout`` is the positions each participant holds (:mod:`.sharded_layout`), ``strategy`` how the keys reach
    the queries: ``"ring"`` (key blocks travel) or ``"all-gather"`` (every participant gathers every key).
    """

    scheme: str
    causal: bool
    n_iter: int
    scale: float
    rows: Bounds
    ring: Ring
    softcap: float | None = None
    layout: str = "contiguous"
    strategy: str = "ring"

    @property
    def gathered(self) -> bool:
        """Whether every participant holds every key (the all-gather strategy): sweeps take one turn."""
        return self.strategy == "all-gather"

    @property
    def sweeps(self) -> Ring:
        """The ring the sweeps go around: the participants, or this one alone when it holds every key."""
        return ALONE if self.gathered else self.ring


class RowBias(NamedTuple):
    """Sigmoid attention's parameter (spec DEF-SIGMOID): the bias ``b_i`` of this participant's rows, ``(...,
    T_local, 1)`` or ``(..., 1, 1)``, added to every score of the row."""

    bias: Any


class Residuals(NamedTuple):
    """What the backward pass needs, O(local T + local K) numbers per head and turn.

    ``rounds``: every round's column statistic of this participant's keys (doubly, Sinkhorn);
    ``potentials``: the rows' statistic of ``S - c`` after every round but the last (Sinkhorn's row potentials);
    ``rows``: each component's row statistic over all keys (biased first), per block of rows (none: sigmoid);
    ``carries``: under causal, per turn, the running statistic before each block of rows;
    ``outputs``: each component's output when the scheme mixes two;
    ``tables``: zigzag shards under the running statistic (:mod:`.sharded_zigzag`), the statistic of this
    participant's keys before and after each query chunk of the whole sequence.
    """

    rounds: tuple[bias.ColumnStat, ...]
    potentials: tuple[tuple[lse.LogSumExp, ...], ...]
    rows: tuple[tuple[lse.LogSumExp, ...], ...]
    carries: tuple[tuple[lse.LogSumExp | None, ...], ...]
    outputs: tuple[Array, ...]
    tables: tuple[lse.LogSumExp, ...] = ()


def forward(
    query: Array, key: Array, value: Array, key_mask: Array | None, params: Any, /, *, options: ShardedOptions, xp: Any
) -> tuple[Array, Residuals]:
    """This participant's rows of attention over the whole sequence, and the residuals of the backward pass.

    ``key_mask`` is a boolean ``(..., 1, K_local)`` mask of the participant's keys (True: may be attended).
    ``params`` is ``alpha`` or :class:`.schemes.Parameters` with a sink (not Sinkhorn's: its column joins every
    round), whose logit joins each row statistic once every key block has visited (:func:`sink_logits`).
    """
    q = query * options.scale
    how = schemes.plan(options.scheme, causal=options.causal, n_iter=options.n_iter)
    if how.rows == "gated":
        return gated(q, key, value, key_mask, params.bias, options=options, xp=xp)
    params = schemes.parameters(params)
    alpha = params.alpha
    key, value, key_mask = every_key(key, value, key_mask, options)
    rounds, potentials = statistics(q, key, key_mask, how, options=options, xp=xp)
    n_parts = 1 + how.plain if how.biased else 1
    merged: list[list[Any]] = [[None] * len(options.rows) for _ in range(n_parts)]
    carries: list[tuple[lse.LogSumExp | None, ...]] = []

    def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
        k, v, m, *per_key = read
        scores = tile(q, k, m, turn, options, xp=xp)
        if scores is None:
            carries.append(())
            return added
        values = rows.with_ones(v, None, xp=xp)
        carry = lse.LogSumExp(*added) if how.running and not turn.own else None
        before = []
        for index, (start, stop_row) in enumerate(options.rows):
            block = scores.rows(start, stop_row, xp=xp)
            before.append(carry)
            stats = (per_key_stat(rounds[-1], per_key),) if how.rounds else ()
            biased, carry = blocked.bias_block(block, how, stats, carry, xp=xp)
            parts = [biased] if biased is not None else []
            parts += [block] if how.plain else []
            width = block.shape[-1]
            for n, y in enumerate(parts):
                part = rows.partial_product(y, values[..., :width, :], xp=xp)
                kept = merged[n][index]
                merged[n][index] = part if kept is None else rows.merge_partial(kept, part, xp=xp)
        carries.append(tuple(before))
        return added if carry is None else tuple(carry)  # the running statistic after these queries travels on

    read = (key, value, key_mask, *per_key_arrays(rounds[-1] if rounds else None))
    sweep(options.sweeps, read, tuple(_empty(q, key, xp=xp)) if how.running else (), visit, home=False)
    if params.sink is not None:
        for index, block_rows in enumerate(options.rows):
            parts = with_sink([part[index] for part in merged], how, params.sink, block_rows, q, options=options, xp=xp)
            for n, part in enumerate(parts):
                merged[n][index] = part
    outputs = tuple(blocked.concat_rows([part[0] for part in component], xp=xp) for component in merged)
    out = rows.mix(outputs[0], outputs[1], alpha) if how.mixed else outputs[0]
    row_stats = tuple(tuple(part[1] for part in component) for component in merged)
    return out, Residuals(rounds, potentials, row_stats, tuple(carries), outputs if how.mixed else ())


def gated(
    q: Array, key: Array, value: Array, key_mask: Array | None, row_bias: Array, /, *, options: ShardedOptions, xp: Any
) -> tuple[Array, Residuals]:
    """Sigmoid attention's rows (spec DEF-SIGMOID): each key weighed alone, ``sigmoid(S_ij + b_i)``, so the
    partial outputs of the key blocks add up; no statistic is kept."""
    totals: list[Any] = [None] * len(options.rows)

    def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
        k, v, m = read
        scores = tile(q, k, m, turn, options, xp=xp)
        if scores is None:
            return added
        for index, (start, stop_row) in enumerate(options.rows):
            block = scores.rows(start, stop_row, xp=xp) + rows_of(row_bias, start, stop_row)
            weights = unnormalized.weights(block, "gated", log=False, xp=xp)
            part = products.matmul(weights, v[..., : block.shape[-1], :], xp=xp)
            totals[index] = part if totals[index] is None else totals[index] + part
        return added

    sweep(options.ring, (key, value, key_mask), (), visit)
    out = blocked.concat_rows(totals, xp=xp)
    return out, Residuals((), (), ((),), (), ())  # one component, without a row statistic


def rows_of(per_row: Array, start: int, stop: int, /) -> Array:
    """Rows ``start:stop`` of an array over this participant's rows, or the array itself where it has one row."""
    return per_row if per_row.shape[-2] == 1 else per_row[..., start:stop, :]


def with_sink(
    parts: list[tuple[Array, lse.LogSumExp]],
    how: schemes.Plan,
    sink: Array,
    block_rows: tuple[int, int],
    q: Array,
    /,
    *,
    options: ShardedOptions,
    xp: Any,
) -> list[tuple[Array, lse.LogSumExp]]:
    """Each component's output and row statistic over every key of a block of rows (the biased component first),
    with the sink joined: one more key, of value 0 (spec DEF-SINK), its logit from :func:`sink_logits`."""
    logits = [x for x in sink_logits(how, sink, block_rows, q, options=options, xp=xp) if x is not None]
    joined = []
    for (out_part, stat), logit in zip(parts, logits, strict=True):
        logit = logit + xp.zeros_like(stat.max)
        term = (xp.zeros_like(out_part), lse.LogSumExp(logit, xp.ones_like(logit)))
        joined.append(rows.merge_partial((out_part, stat), term, xp=xp))
    return joined


def sink_logits(
    how: schemes.Plan, sink: Array, block_rows: tuple[int, int], q: Array, /, *, options: ShardedOptions, xp: Any
) -> tuple[Array | None, Array | None]:
    """The sink logits of a block of this participant's rows (spec THM-SINK-IN-EVERY-ROUND), of the biased
    component and of the plain one: ``-log T`` over the whole sequence's queries, or ``-log(p_i + 1)`` at the
    rows' positions under causal, and the sink itself."""
    biased = None
    if how.running:
        start, stop = block_rows
        first = options.ring.rank() * q.shape[-2] + start + 1
        biased = -xp.log(xp.arange(1, stop - start + 1, dtype=q.dtype, device=device_of(q))[:, None] + (first - 1))
    elif how.biased:
        biased = sinks.first_round(q.shape[-2] * options.ring.size, q, xp=xp)
    return biased, sink if how.plain else None


def statistics(
    q: Array, key: Array, key_mask: Array | None, how: schemes.Plan, /, *, options: ShardedOptions, xp: Any
) -> tuple[tuple[bias.ColumnStat, ...], tuple[tuple[lse.LogSumExp, ...], ...]]:
    """The column statistic of every round for this participant's keys, and Sinkhorn's row potentials.

    Round one is the log-sum-exp of each key's column over every participant's queries, collected by the key
    block as it travels (:func:`.bias.columns` over the whole sequence). A later Sinkhorn round takes a sweep for
    the row potentials ``r = LSE_j (S - c)`` of this participant's queries, then one for the next ``LSE_i (S -
    r)``, on the column-centred scores of :func:`.bias.sinkhorn`.
    """
    if not how.rounds:
        return (), ()
    rounds = [bias.ColumnStat(None, column_pass(q, key, key_mask, None, None, options=options, xp=xp))]
    shift = bias.zero_if_empty(rounds[0].stats.max, xp=xp)
    potentials = []
    for _ in range(how.rounds - 1):
        potential = row_pass(q, key, key_mask, rounds[-1], options=options, xp=xp)
        potentials.append(potential)
        rounds.append(bias.ColumnStat(shift, column_pass(q, key, key_mask, shift, potential, options=options, xp=xp)))
    return tuple(rounds), tuple(potentials)


def column_pass(
    q: Array,
    key: Array,
    key_mask: Array | None,
    shift: Array | None,
    potential: tuple[lse.LogSumExp, ...] | None,
    /,
    *,
    options: ShardedOptions,
    xp: Any,
) -> lse.LogSumExp:
    """``LSE_i`` of each of this participant's keys over every participant's queries: of ``S``, or of ``S - shift -
    r`` with the row potentials ``r`` of this participant's queries."""

    def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
        k, m, *centre = read
        scores = whole(q, k, m, options)
        total = lse.LogSumExp(*added)
        for index, (start, stop_row) in enumerate(options.rows):
            block = scores.rows(start, stop_row, xp=xp)
            if potential is not None:
                block = lse.subtract(block - centre[0], potential[index], xp=xp)
            total = lse.merge(total, lse.reduce(block, axis=-2, xp=xp), xp=xp)
        return tuple(total)

    read = (key, key_mask) if shift is None else (key, key_mask, shift)
    mine = lse.LogSumExp(*sweep(options.sweeps, read, tuple(_empty(q, key, xp=xp)), visit))
    return merged_over_participants(mine, options, xp=xp) if options.gathered else mine


def row_pass(
    q: Array, key: Array, key_mask: Array | None, stat: bias.ColumnStat, /, *, options: ShardedOptions, xp: Any
) -> tuple[lse.LogSumExp, ...]:
    """``LSE_j (S - c)`` of this participant's queries over every key, per block of rows."""
    totals: list[Any] = [None] * len(options.rows)

    def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
        k, m, *per_key = read
        scores = whole(q, k, m, options)
        for index, (start, stop_row) in enumerate(options.rows):
            biased = bias.subtract(per_key_stat(stat, per_key), scores.rows(start, stop_row, xp=xp), xp=xp)
            share = lse.reduce(biased, axis=-1, xp=xp)
            totals[index] = share if totals[index] is None else lse.merge(totals[index], share, xp=xp)
        return added

    sweep(options.sweeps, (key, key_mask, *per_key_arrays(stat)), (), visit)
    return tuple(totals)


def whole(q: Array, key: Array, key_mask: Array | None, options: ShardedOptions, /) -> Scores:
    """The scores of this participant's queries against a key block, all seen (the passes of a statistic of the
    key alone: doubly and Sinkhorn have no causal form there)."""
    return from_projections(q, key, mask=key_mask, causal=False, softcap=options.softcap)


def tile(
    q: Array, key: Array, key_mask: Array | None, turn: Turn, options: ShardedOptions, /, *, xp: Any
) -> Scores | None:
    """The scores of this participant's queries against the key block it holds; None where none may see it.

    Under causal the own block is the diagonal one (the top-left triangle), an earlier block is seen whole and a
    later one not at all; where the participant's place is traced, a later block is hidden by its mask.
    """
    visible = True if not options.causal or turn.own else turn.earlier
    if visible is False:
        return None
    mask = key_mask
    if visible is not True:
        hidden = xp.reshape(visible, (1, 1))
        mask = hidden if mask is None else mask & hidden
    return from_projections(q, key, mask=mask, causal=options.causal and turn.own, softcap=options.softcap)


def lead(q: Array, key: Array, /) -> tuple[int, ...]:
    """The leading shape of the scores of ``q`` against ``key`` (their leading shapes broadcast)."""
    a, b = tuple(q.shape[:-2]), tuple(key.shape[:-2])
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    return tuple(max(x, y) for x, y in zip(a, b, strict=True))


def _empty(q: Array, key: Array, /, *, xp: Any) -> lse.LogSumExp:
    """The empty per-key statistic ``(..., 1, K_local)`` in the scores' leading shape."""
    shape = (*lead(q, key), 1, key.shape[-2])
    device = device_of(q)
    return lse.LogSumExp(
        xp.full(shape, -xp.inf, dtype=q.dtype, device=device), xp.zeros(shape, dtype=q.dtype, device=device)
    )


def per_key_arrays(stat: bias.ColumnStat | None, /) -> tuple[Array, ...]:
    """A column statistic as the arrays that travel with its key block."""
    if stat is None:
        return ()
    return tuple(stat.stats) if stat.shift is None else (stat.shift, *stat.stats)


def per_key_stat(like: bias.ColumnStat, arrays: list[Array], /) -> bias.ColumnStat:
    """The column statistic of the block at hand, from the arrays it travelled with (:func:`per_key_arrays`)."""
    if like.shift is None:
        return bias.ColumnStat(None, lse.LogSumExp(*arrays))
    return bias.ColumnStat(arrays[0], lse.LogSumExp(*arrays[1:]))
