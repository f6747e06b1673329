"""Fused stops of a sharded sweep: each turn of :mod:`dnorm._kernels.sharded` as launches of the Triton passes.

The sweeps are those of the array-API sharded kernels (spec DEF-SHARDED-ATTENTION, THM-SHARDED-EQUALS-FULL;
:func:`dnorm._kernels.ring.sweep` moves the blocks), and what travels with a key block is the same: its
column statistic being collected, the running statistic in position order, and on the way back the key
gradients. What changes is the work at a stop, the participant's queries against the block it holds, which
runs the single-device passes (:mod:`.launch`) on that pair:

* a round's column statistic is :func:`.launch.column_stats` over this participant's queries, merged into the
  travelling one;
* the running statistic is :func:`.launch.carries` from the carry the block brings (``start``): an earlier
  block is seen whole, the own block is the causal triangle, which the passes tell apart by ``q_start`` (where
  the queries begin among the block's positions);
* the row pass returns each component's partial output and row statistic over the block, merged by
  :func:`dnorm._kernels.rows.merge_partial` (spec DEF-ONLINE-MERGE).

Every array of a stop is in the passes' flat layout (``q_rows`` and ``k_rows`` entries, leading index-major);
the backward sweeps are in :mod:`.sharded_backward`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import array_api_compat.torch as xp
import torch
from torch import Tensor

from .._kernels import logsumexp as lse
from .._kernels import rows as row_ops
from .._kernels import schemes, sharded
from .._kernels.ring import Turn, sweep
from .._kernels.sharded_collective import every_key, merged_over_participants
from . import configs
from .launch import Carries, Components, Inputs, LaunchOptions, Pair, Round, carries, column_stats, row_pass
from .layout import dense


class Residuals(NamedTuple):
    """What the backward sweeps need, in the passes' flat layout.

    ``columns``: each round's column statistic of this participant's keys (complete); ``rows``: Sinkhorn's row
    potentials of its queries, per round but the last; ``biased`` and ``plain``: each component's row statistic
    over every key (the sink included); ``carries``: per turn of the forward sweep, the running statistic before
    each block of queries (None where the block was not seen); ``outputs``: the hybrid's two components.
    """

    columns: tuple[Round, ...]
    rows: tuple[Pair, ...]
    biased: Pair | None
    plain: Pair | None
    carries: tuple[Carries | None, ...]
    outputs: Components | None


class Stops:
    """The launches of one participant's stops: its queries against any key block of the sweep."""

    def __init__(
        self,
        query: Tensor,
        params: Any,
        lead: tuple[int, ...],
        options: sharded.ShardedOptions,
    ) -> None:
        """``params``: ``alpha``, :class:`dnorm._kernels.schemes.Parameters`, or sigmoid attention's
        :class:`dnorm._kernels.sharded.RowBias` (its bias per row flat, :attr:`row_bias`)."""
        self.query, self.lead, self.sharded = query, lead, options
        self.how = schemes.plan(options.scheme, causal=options.causal, n_iter=options.n_iter)
        self.row_bias = None
        if isinstance(params, sharded.RowBias):
            rows = (*lead, query.shape[-2], 1)
            self.row_bias = torch.broadcast_to(params.bias, rows).reshape(-1).to(self.acc).contiguous()
            params = torch.zeros((), dtype=self.acc, device=query.device)  # no alpha: the kernels read none
        self.params = schemes.parameters(params)
        self.alpha = self.params.alpha
        heavy = self.how.layered or options.softcap is not None
        self.launch = LaunchOptions(
            scheme=options.scheme,
            causal=options.causal,
            n_iter=options.n_iter,
            scale=options.scale,
            softcap=options.softcap,
            blocks=configs.blocks_for(str(query.dtype), query.shape[-1], heavy=heavy),
            lead=lead,
        )

    def inputs(
        self, key: Tensor, value: Tensor, key_mask: Tensor | None, /, *, q_start: int = 0, query: Tensor | None = None
    ) -> Inputs:
        """The passes' inputs of this participant's queries (or of ``query``, a part of them) against a key block,
        the queries ``q_start`` positions after the block's first key (0: the causal triangle of the own block)."""
        q, alpha = self.query if query is None else query, self.alpha
        layout = dense(q, key, value, key_mask, alpha, None, self.lead)
        if query is not None and self.row_bias is not None:  # a part of the rows would need its part of the bias
            msg = "sigmoid attention's row bias is per row of every query: its stops take the queries whole"
            raise ValueError(msg)
        return Inputs(q, key, value, key_mask, alpha, layout, replace(self.launch, q_start=q_start), self.row_bias)

    def seen(self, turn: Turn, key: Tensor, /) -> int | None:
        """Where this participant's queries begin among the positions of the block a turn holds (``q_start``),
        or None where none of them sees it (causal: a later block)."""
        if not self.sharded.causal or turn.own:
            return 0
        if turn.earlier is not True:
            return None
        return key.shape[-2]  # an earlier block: every query comes after every key

    def rows(self) -> int:
        return int(torch.Size(self.lead).numel()) * self.query.shape[-2]

    def keys(self, key: Tensor, /) -> int:
        return int(torch.Size(self.lead).numel()) * key.shape[-2]

    def pair(self, n: int, /) -> Pair:
        """The empty statistic of ``n`` entries."""
        acc = self.acc
        device = self.query.device
        return Pair(torch.full((n,), -torch.inf, dtype=acc, device=device), torch.zeros(n, dtype=acc, device=device))

    @property
    def acc(self) -> torch.dtype:
        return torch.float64 if self.query.dtype == torch.float64 else torch.float32


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
    """This participant's rows of attention over the whole sequence (:func:`dnorm._kernels.sharded.forward`,
    stop by stop on the Triton passes), in the compute dtype, and the residuals of the backward sweeps."""
    key, value, key_mask = every_key(key, value, key_mask, options)
    lead = sharded.lead(query, key)
    stops = Stops(query, params, lead, options)
    how, params = stops.how, stops.params
    if how.rows == "gated":
        return _gated(stops, key, value, key_mask), Residuals((), (), None, None, (), None)
    columns, potentials = _statistics(stops, key, key_mask)
    n_rows = stops.rows()
    n_parts = 1 + how.plain if how.biased else 1
    merged: list[tuple[Tensor, lse.LogSumExp] | None] = [None] * n_parts
    kept: list[Carries | None] = []
    last = columns[-1] if columns else None

    def visit(turn: Turn, read: tuple[Tensor, ...], added: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        k, v, m, *per_key = read
        q_start = stops.seen(turn, k)
        if q_start is None:
            kept.append(None)
            return added
        inputs = stops.inputs(k, v, m, q_start=q_start)
        carry = None
        if how.running:
            start = None if turn.own else Pair(*(x.reshape(inputs.layout.programs, -1) for x in added))
            carry = carries(inputs, start)
        kept.append(carry)
        column = Round(per_key[0], Pair(per_key[1], per_key[2])) if per_key else None
        parts = row_parts(inputs, column, carry, n_rows, round_=len(columns) > 1)
        for n, part in enumerate(parts):
            previous = merged[n]
            merged[n] = part if previous is None else row_ops.merge_partial(previous, part, xp=xp)
        return added if carry is None else tuple(carry.last)  # the running statistic after these queries travels on

    read = (key, value, key_mask, *((last.shift, *last.stat) if last is not None else ()))
    begin = tuple(stops.pair(stops.keys(key))) if how.running else ()
    sweep(options.sweeps, read, begin, visit, home=False)
    parts = [_shaped(part, stops) for part in merged if part is not None]
    if params.sink is not None:
        parts = sharded.with_sink(parts, how, params.sink, (0, query.shape[-2]), query, options=options, xp=xp)
    outputs = tuple(out for out, _ in parts)
    out = row_ops.mix(outputs[0], outputs[1], params.alpha) if how.mixed else outputs[0]
    stats = [_flat(stat) for _, stat in parts]
    biased = stats[0] if how.biased else None
    plain = stats[-1] if how.plain else None
    components = Components(*(o.reshape(n_rows, -1) for o in outputs)) if how.mixed else None
    return out, Residuals(columns, potentials, biased, plain, tuple(kept), components)


def _gated(stops: Stops, key: Tensor, value: Tensor, key_mask: Tensor | None, /) -> Tensor:
    """Sigmoid attention's rows (spec DEF-SIGMOID): each key weighed alone, ``sigmoid(S_ij + b_i)``, so the
    partial outputs of the key blocks add up."""
    total: list[Tensor | None] = [None]

    def visit(turn: Turn, read: tuple[Tensor, ...], added: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        k, v, m = read
        q_start = stops.seen(turn, k)
        if q_start is None:
            return added
        ((part, _),) = row_parts(stops.inputs(k, v, m, q_start=q_start), None, None, stops.rows(), round_=False)
        total[0] = part if total[0] is None else total[0] + part
        return added

    sweep(stops.sharded.sweeps, (key, value, key_mask), (), visit)
    out = total[0]
    assert out is not None  # the own block is always seen
    return out.reshape(*stops.lead, stops.query.shape[-2], -1)


def _statistics(stops: Stops, key: Tensor, key_mask: Tensor | None, /) -> tuple[tuple[Round, ...], tuple[Pair, ...]]:
    """Every round's column statistic of this participant's keys and Sinkhorn's row potentials of its queries
    (:func:`dnorm._kernels.sharded.statistics`): one sweep a round, and one for each row potential."""
    how = stops.how
    if not how.rounds:
        return (), ()
    n_keys = stops.keys(key)
    zero = torch.zeros(n_keys, dtype=stops.acc, device=key.device)
    columns = [Round(zero, _column_sweep(stops, key, key_mask, zero, None))]
    shift = torch.where(columns[0].stat.max == -torch.inf, 0.0, columns[0].stat.max)
    potentials: list[Pair] = []
    for _ in range(how.rounds - 1):
        potentials.append(_potential_sweep(stops, key, key_mask, columns[-1], round_=len(columns) > 1))
        columns.append(Round(shift, _column_sweep(stops, key, key_mask, shift, potentials[-1])))
    return tuple(columns), tuple(potentials)


def _column_sweep(stops: Stops, key: Tensor, key_mask: Tensor | None, shift: Tensor, potential: Pair | None, /) -> Pair:
    """``LSE_i`` of ``S - shift - r`` over every participant's queries, for each of this participant's keys."""

    def visit(turn: Turn, read: tuple[Tensor, ...], added: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        k, m, centre = read
        share = column_stats(stops.inputs(k, k, m), centre, potential)
        return tuple(lse.merge(lse.LogSumExp(*added), lse.LogSumExp(*share), xp=xp))

    options = stops.sharded
    total = lse.LogSumExp(*sweep(options.sweeps, (key, key_mask, shift), tuple(stops.pair(shift.shape[0])), visit))
    if options.gathered:
        total = merged_over_participants(total, options, xp=xp)
    return Pair(*total)


def _potential_sweep(stops: Stops, key: Tensor, key_mask: Tensor | None, column: Round, /, *, round_: bool) -> Pair:
    """``LSE_j (S - c)`` of this participant's queries over every key (Sinkhorn's row potential)."""
    total = [lse.LogSumExp(*stops.pair(stops.rows()))]

    def visit(turn: Turn, read: tuple[Tensor, ...], added: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        k, m, *per_key = read
        inputs = stops.inputs(k, k, m)
        found = stops.pair(stops.rows())
        row_pass(inputs, None, Round(per_key[0], Pair(*per_key[1:])), None, row_b=found, row_p=None, outputs=None,
                 round_=round_)  # fmt: skip
        total[0] = lse.merge(total[0], lse.LogSumExp(*found), xp=xp)
        return added

    sweep(stops.sharded.sweeps, (key, key_mask, column.shift, *column.stat), (), visit)
    return Pair(*total[0])


def row_parts(
    inputs: Inputs, column: Round | None, carry: Carries | None, n_rows: int, /, *, round_: bool
) -> list[tuple[Tensor, lse.LogSumExp]]:
    """Each component's output over the block at hand and its rows' statistic, ``(q_rows, Dv)`` and ``(q_rows, 1)``
    (the biased component first)."""
    how = inputs.options.plan()
    out = inputs.new(n_rows, inputs.v.shape[-1])
    components = Components(inputs.new(*out.shape), inputs.new(*out.shape)) if how.mixed else None
    row_b = Pair(inputs.new(n_rows), inputs.new(n_rows)) if how.biased else None
    row_p = Pair(inputs.new(n_rows), inputs.new(n_rows)) if how.plain else None
    empty = inputs.empty()
    row_pass(inputs, None, column, carry, row_b=row_b, row_p=row_p,
             outputs=(out, components or Components(empty, empty)), round_=round_)  # fmt: skip
    stats = [_column(pair) for pair in (row_b, row_p) if pair is not None]
    outputs = [out] if components is None else list(components)
    return list(zip(outputs, stats, strict=True))


def _column(pair: Pair, /) -> lse.LogSumExp:
    return lse.LogSumExp(pair.max[:, None], pair.sum[:, None])


def _shaped(part: tuple[Tensor, lse.LogSumExp], stops: Stops, /) -> tuple[Tensor, lse.LogSumExp]:
    """A flat output and its rows' statistic as ``(*lead, T, Dv)`` and ``(*lead, T, 1)``."""
    out, stat = part
    rows = (*stops.lead, stops.query.shape[-2])
    return out.reshape(*rows, out.shape[-1]), lse.LogSumExp(stat.max.reshape(*rows, 1), stat.sum.reshape(*rows, 1))


def _flat(stat: lse.LogSumExp, /) -> Pair:
    return Pair(stat.max.reshape(-1), stat.sum.reshape(-1))
