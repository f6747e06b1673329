"""Column statistics: the per-key bias each scheme subtracts before the row softmax.

Every scheme is ``row_softmax(S - c)`` for some column statistic ``c``
(spec: DEF-DNAS, DEF-SINKHORN, DEF-CAUSAL-DNAS):

* ``doubly``: ``c_j = logsumexp_i S[i, j]`` over the queries allowed to see ``j``;
* ``sinkhorn``: ``n_iter`` rounds of ``c = colLSE(S - r)``, ``r = rowLSE(S - c)``;
* strictly causal ``doubly``: ``C[i, j] = logsumexp_{i' <= i} S[i', j]``, a running
  statistic along the query axis, carried from one block of queries to the next.

The statistics are accumulated over blocks of query rows, so the same code
serves the materialized path (one block) and the chunked path.
"""

from __future__ import annotations

from typing import Any

from . import logsumexp as lse
from .scores import Scores

Array = Any


def columns(scores: Scores, bounds: list[tuple[int, int]], /, *, xp: Any) -> lse.LogSumExp:
    """``logsumexp`` of every column over all query rows, shape ``(..., 1, K)``."""
    stats = [lse.reduce(scores.rows(start, stop), axis=-2, xp=xp) for start, stop in bounds]
    return _merge_all(stats, xp=xp)


def sinkhorn(
    scores: Scores, bounds: list[tuple[int, int]], /, *, n_iter: int, xp: Any
) -> lse.LogSumExp:
    """The column statistic after ``n_iter`` column normalizations, column first.

    Round one is :func:`columns` itself, so ``n_iter=1`` is ``doubly`` bit for
    bit.  Each further round is one pass over the blocks: the row statistic of
    ``S - c`` is local to a block, and the block's share of the next column
    statistic ``colLSE(S - r)`` is merged in at once.
    """
    stats = columns(scores, bounds, xp=xp)
    for _ in range(n_iter - 1):
        shares = []
        for start, stop in bounds:
            block = scores.rows(start, stop)
            row = lse.reduce(lse.subtract(block, stats, xp=xp), axis=-1, xp=xp)
            shares.append(lse.reduce(lse.subtract(block, row, xp=xp), axis=-2, xp=xp))
        stats = _merge_all(shares, xp=xp)
    return stats


def causal_columns(
    block: Array, carry: lse.LogSumExp | None, /, *, xp: Any
) -> tuple[lse.LogSumExp, lse.LogSumExp]:
    """Running column statistics of one block of causally masked scores.

    Returns the per-row statistics ``C[i, j]`` for the block's rows, shape
    ``(..., n, K)``, and the carry for the next block (the statistic of the
    block's last row).  Row ``i`` reads only rows ``<= i``.
    """
    running = lse.cumulative(block, axis=-2, xp=xp)
    if carry is not None:
        running = lse.merge(carry, running, xp=xp)
    last = lse.LogSumExp(running.max[..., -1:, :], running.sum[..., -1:, :])
    return running, last


def _merge_all(stats: list[lse.LogSumExp], /, *, xp: Any) -> lse.LogSumExp:
    total = stats[0]
    for more in stats[1:]:
        total = lse.merge(total, more, xp=xp)
    return total
