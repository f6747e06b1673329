"""Column statistics: the per-key bias each scheme subtracts before the row softmax.

Every scheme is ``row_softmax(S - c)`` for some column statistic ``c``
(spec: DEF-DNAS, DEF-SINKHORN, DEF-CAUSAL-DNAS):

* ``doubly``: ``c_j = logsumexp_i S[i, j]`` over the queries allowed to see ``j``;
* ``sinkhorn``: ``n_iter`` rounds of ``c = colLSE(S - r)``, ``r = rowLSE(S - c)``;
* strictly causal ``doubly``: ``C[i, j] = logsumexp_{i' <= i} S[i', j]``, a running
  statistic along the query axis, carried from one block of queries to the next.

Each returns a :class:`Bias`: the function that subtracts the statistic from a
block of scores in the log domain and, for a statistic of the key alone, the
statistic split for the attention output (see :mod:`.rows`).  The statistics are accumulated over blocks
of query rows, so the same code serves the materialized path (one block) and
the chunked path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import logsumexp as lse
from .scores import Scores

Array = Any


@dataclass(frozen=True)
class Bias:
    """A column statistic ``c``, to be subtracted from blocks of scores.

    ``subtract(block)`` is ``block - c`` in the log domain, exact near each
    column's maximum.  ``per_key``, when ``c`` depends on the key alone, is
    ``(c_rounded, w)`` with ``w = exp(c_rounded - c)``, the rounding of ``c``
    to one float kept as a factor close to 1: ``exp(S - c) = exp(S -
    c_rounded) * w``, and ``w`` can ride on the values (``(..., 1, K)``).
    """

    subtract: Callable[[Array], Array]
    per_key: tuple[Array, Array] | None = None


def columns(scores: Scores, bounds: list[tuple[int, int]], /, *, xp: Any) -> Bias:
    """``c_j = logsumexp`` of column ``j`` over all query rows (the DNAS bias)."""
    stats = _column_stats(scores, bounds, xp=xp)
    return _key_bias(lse.finite(stats.max, xp=xp), stats, xp=xp)


def sinkhorn(scores: Scores, bounds: list[tuple[int, int]], /, *, n_iter: int, xp: Any) -> Bias:
    """The column statistic after ``n_iter`` column normalizations, column first.

    Round one is :func:`columns` itself, so ``n_iter=1`` is ``doubly`` bit for
    bit.  Later rounds work on the column-centred scores ``D = S - M``, ``M``
    the column maximum, so that no offset of a few units is ever added to
    scores of magnitude 1e4 and rounded away.  Each round is one pass over the
    blocks: the row statistic of ``D - c`` is local to a block, and the block's
    share of the next ``colLSE(D - r)`` is merged in at once.
    """
    first = _column_stats(scores, bounds, xp=xp)
    if n_iter == 1:
        return _key_bias(lse.finite(first.max, xp=xp), first, xp=xp)
    shift = lse.finite(first.max, xp=xp)
    stats = lse.LogSumExp(xp.zeros_like(first.max), first.sum)
    for _ in range(n_iter - 1):
        shares = []
        for start, stop in bounds:
            centred = scores.rows(start, stop) - shift
            row = lse.reduce(lse.subtract(centred, stats, xp=xp), axis=-1, xp=xp)
            shares.append(lse.reduce(lse.subtract(centred, row, xp=xp), axis=-2, xp=xp))
        stats = _merge_all(shares, xp=xp)
    return _key_bias(shift, stats, xp=xp, centred=True)


def causal_columns(block: Array, carry: lse.LogSumExp | None, /, *, xp: Any) -> tuple[Bias, lse.LogSumExp]:
    """The running column statistic of one block of causally masked scores.

    Returns the bias ``C[i, j]`` for the block's rows and the carry for the
    next block (the statistic of the block's last row).  Row ``i`` reads only
    rows ``<= i``.
    """
    running = lse.cumulative(block, axis=-2, xp=xp)
    if carry is not None:
        running = lse.merge(carry, running, xp=xp)
    last = lse.LogSumExp(running.max[..., -1:, :], running.sum[..., -1:, :])
    return Bias(lambda rows: lse.subtract(rows, running, xp=xp)), last


def _key_bias(shift: Array, stats: lse.LogSumExp, /, *, xp: Any, centred: bool = False) -> Bias:
    """The bias ``c = shift + log-sum-exp of stats`` (``stats`` of ``S - shift`` when ``centred``, else of ``S``).

    ``c`` is rounded to one float by an error-free sum (Knuth's TwoSum): the
    rounding error ``lo`` is exact and becomes the factor ``exp(-lo)``.
    """
    log_sum = xp.log(xp.where(stats.sum == 0, 1.0, stats.sum))
    small = lse.finite(stats.max, xp=xp) + log_sum if centred else log_sum
    hi = shift + small
    back = hi - shift
    lo = (shift - (hi - back)) + (small - back)

    def subtract(block: Array) -> Array:
        return lse.subtract(block - shift if centred else block, stats, xp=xp)

    return Bias(subtract, (hi, xp.exp(-lo)))


def _column_stats(scores: Scores, bounds: list[tuple[int, int]], /, *, xp: Any) -> lse.LogSumExp:
    return _merge_all([lse.reduce(scores.rows(start, stop), axis=-2, xp=xp) for start, stop in bounds], xp=xp)


def _merge_all(stats: list[lse.LogSumExp], /, *, xp: Any) -> lse.LogSumExp:
    total = stats[0]
    for more in stats[1:]:
        total = lse.merge(total, more, xp=xp)
    return total
