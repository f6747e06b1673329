"""Column statistics: the per-key bias each scheme subtracts before the row softmax.

Every scheme is ``row_softmax(S - c)`` for some column statistic ``c``
(spec: DEF-DNAS, DEF-SINKHORN, DEF-CAUSAL-DNAS):

* ``doubly``: ``c_j = logsumexp_i S[i, j]`` over the queries allowed to see ``j``;
* ``sinkhorn``: ``n_iter`` rounds of ``c = colLSE(S - r)``, ``r = rowLSE(S - c)``;
* strictly causal ``doubly``: ``C[i, j] = logsumexp_{i' <= i} S[i', j]``, a running
  statistic along the query axis, carried from one block of queries to the next.

A statistic of the key alone is a :class:`ColumnStat`, plain data (arrays, so
that autodiff systems can keep it between the forward and the backward pass).
The statistics are accumulated over blocks of query rows, so the same code
serves the materialized path (one block) and the chunked path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from . import _delegation as delegation
from . import logsumexp as lse
from . import sinks
from .budget import cast
from .scan import scan
from .scores import Scores
from .shapes import pad

Array = Any
Bounds = Sequence[tuple[int, int]]


class ColumnStat(NamedTuple):
    """A per-key statistic ``c = shift + (stats.max + log(stats.sum))``, shape ``(..., 1, K)``.

    ``shift`` is None for a statistic of the scores themselves; Sinkhorn's
    later rounds are statistics of the column-centred scores ``S - shift``.
    ``sink``: with a sink (spec DEF-SINK), its logit after this round's column
    normalization, ``(..., 1, 1)`` (:mod:`.sinks`); else None.
    """

    shift: Array | None
    stats: lse.LogSumExp
    sink: Array | None = None


def subtract(stat: ColumnStat, block: Array, /, *, xp: Any) -> Array:
    """``block - c`` in the log domain, exact near each column's maximum."""
    centred = block if stat.shift is None else block - stat.shift
    return lse.subtract(centred, stat.stats, xp=xp)


def per_key(stat: ColumnStat, /, *, xp: Any) -> tuple[Array, Array]:
    """``(c_rounded, w)`` with ``exp(S - c) = exp(S - c_rounded) * w``, ``w`` within a few units of 1.

    ``c`` is rounded to one float by an error-free sum (Knuth's TwoSum): the
    rounding error ``lo`` is exact and becomes the factor ``w = exp(-lo)``,
    which can ride on the values.
    """
    top = zero_if_empty(stat.stats.max, xp=xp)
    log_sum = lse.log_sum(stat.stats.sum, xp=xp)
    big, small = (top, log_sum) if stat.shift is None else (stat.shift, top + log_sum)
    hi = big + small
    back = hi - big
    lo = (big - (hi - back)) + (small - back)
    return hi, xp.exp(-lo)


def columns(scores: Scores, bounds: Bounds, /, *, xp: Any, sink: bool = False) -> ColumnStat:
    """``c_j = logsumexp`` of column ``j`` over all query rows (the DNAS bias); ``sink``: with the sink's logit."""
    found = _merge_all([lse.reduce(scores.rows(a, b, xp=xp), axis=-2, xp=xp) for a, b in bounds], xp=xp)
    return ColumnStat(None, found, sinks.first_round(scores.n_rows, found.max, xp=xp) if sink else None)


def sinkhorn(scores: Scores, bounds: Bounds, /, *, n_iter: int, xp: Any, sink: bool = False) -> tuple[ColumnStat, ...]:
    """The column statistic of every round, ``c^(1), ..., c^(n_iter)``, column first.

    Round one is :func:`columns` itself, so ``n_iter=1`` is ``doubly`` bit for
    bit.  Later rounds work on the column-centred scores ``D = S - M``, ``M``
    the column maximum, so that no offset of a few units is ever added to
    scores of magnitude 1e4 and rounded away.  Each round is one pass over the
    blocks: the row statistic of ``D - c`` is local to a block, and the block's
    share of the next ``colLSE(D - r)`` is merged in at once. With a ``sink``,
    its logit joins every row statistic and takes its next value from them
    (spec THM-SINK-IN-EVERY-ROUND).
    """
    rounds = [columns(scores, bounds, xp=xp, sink=sink)]
    shift = zero_if_empty(rounds[0].stats.max, xp=xp)
    for _ in range(n_iter - 1):
        shares, potentials = [], []
        for start, stop in bounds:
            block = scores.rows(start, stop, xp=xp)
            row = sinks.with_sink(
                lse.reduce(subtract(rounds[-1], block, xp=xp), axis=-1, xp=xp), rounds[-1].sink, xp=xp
            )
            shares.append(lse.reduce(lse.subtract(block - shift, row, xp=xp), axis=-2, xp=xp))
            potentials.append(row)
        rounds.append(
            ColumnStat(shift, _merge_all(shares, xp=xp), sinks.next_round(potentials, xp=xp) if sink else None)
        )
    return tuple(rounds)


def running(
    block: Array, carry: lse.LogSumExp | None, /, *, doubling: bool = False, native: bool = False, xp: Any
) -> tuple[Array, lse.LogSumExp]:
    """``Y = S - C`` of a block of causally masked scores, ``C`` the running column statistic, and the next carry.

    ``carry`` holds the statistic of every row before the block, for the
    first ``carry.max.shape[-1]`` keys (the keys those rows may see); the
    others start empty. The next carry is the statistic after the block's
    last row. Row ``i`` reads only rows ``<= i`` (spec DEF-TWO-LEVEL-SCAN, DEF-FUSED-SCAN):
    by the two-level scan (:func:`.scan.scan`, ``doubling`` as there) or, with
    ``native``, by the namespace's fused scan (:mod:`._delegation`).
    """
    width = block.shape[-1]
    start = None if carry is None else widen(carry, width, xp=xp)
    if block.shape[-2] == 1 and start is not None:
        return _one_row(block, start, xp=xp)
    if native:
        return _fused(block, start, xp=xp)
    stats = lse.pointwise(block, xp=xp)
    out = lse.LogSumExp(
        *scan(
            tuple(stats),
            _merge,
            identity=(-float("inf"), 0.0),
            carry=start and tuple(start),
            reverse=False,
            doubling=doubling,
            xp=xp,
        )
    )
    # the last row as a copy (a one-array concat): a view would keep the whole block alive
    last = out if block.shape[-2] == 1 else (xp.concat([part[..., -1:, :]], axis=-2) for part in out)
    return lse.subtract(block, out, xp=xp), lse.LogSumExp(*last)


def _fused(block: Array, start: lse.LogSumExp | None, /, *, xp: Any) -> tuple[Array, lse.LogSumExp]:
    """:func:`running` by the fused scan, in float64: ``C`` is one number per entry there, exact to float32 rounding.

    The carry becomes the first row (``max + log(sum)``); the next carry is
    the pair again: the exact column maximum and ``exp(C - max)``.
    """
    wide = cast(block, xp.float64, xp=xp)
    if start is None:
        total = delegation.log_cumsum_exp(wide, xp=xp)
    else:
        first = cast(start.max, xp.float64, xp=xp) + lse.log_sum(cast(start.sum, xp.float64, xp=xp), xp=xp)
        total = delegation.log_cumsum_exp(xp.concat((first, wide), axis=-2), xp=xp)[..., 1:, :]
    top = xp.max(block, axis=-2, keepdims=True)
    if start is not None:
        top = xp.maximum(top, start.max)
    rest = xp.exp(total[..., -1:, :] - lse.finite(cast(top, xp.float64, xp=xp), xp=xp))
    biased = cast(wide - lse.finite(total, xp=xp), block.dtype, xp=xp)
    return biased, lse.LogSumExp(top, cast(rest, block.dtype, xp=xp))


def _one_row(row: Array, carry: lse.LogSumExp, /, *, xp: Any) -> tuple[Array, lse.LogSumExp]:
    """:func:`running` for one row (a decoding step): the merge and the subtraction share ``row - max``.

    The same operations as the merge with ``pointwise(row)`` and then
    :func:`.logsumexp.subtract`, in the same order, so the result is the same
    bit for bit; only the repeated intermediates are formed once.
    """
    top = xp.maximum(carry.max, row)
    shift = lse.finite(top, xp=xp)
    fresh = row - shift
    total = carry.sum * xp.exp(carry.max - shift) + xp.exp(fresh)
    return fresh - lse.log_sum(total, xp=xp), lse.LogSumExp(top, total)


def widen(stats: lse.LogSumExp, width: int, /, *, xp: Any) -> lse.LogSumExp:
    """A per-key statistic extended to ``width`` keys, the new keys empty (``max = -inf``, ``sum = 0``)."""
    return lse.LogSumExp(pad(stats.max, width, -xp.inf, axis=-1, xp=xp), pad(stats.sum, width, 0.0, axis=-1, xp=xp))


def zero_if_empty(m: Array, /, *, xp: Any) -> Array:
    """A per-key shift: the column maximum, 0 for a key no query sees (so sums of shifts never overflow)."""
    return xp.where(m == -xp.inf, 0.0, m)


def _merge(acc: tuple[Array, ...], more: tuple[Array, ...], /, *, xp: Any) -> tuple[Array, ...]:
    return tuple(lse.merge(lse.LogSumExp(*acc), lse.LogSumExp(*more), xp=xp))


def _merge_all(stats: list[lse.LogSumExp], /, *, xp: Any) -> lse.LogSumExp:
    total = stats[0]
    for more in stats[1:]:
        total = lse.merge(total, more, xp=xp)
    return total
