"""The sink (spec DEF-SINK): one more key, seen by every query, with score ``sink`` and value 0.

It joins each component's row softmax as one more logit per row, its *sink logit*: the sink itself in a plain
component; in a biased one, the sink minus its column statistic, which the sink's constant column makes
independent of it: ``-log T`` (doubly, every query sees the sink), ``-log(p_i + 1)`` under the running
statistic (``p_i`` query ``i``'s position: decoding needs no new state), and for Sinkhorn's later rounds
``-LSE_i(-r_i)`` of the previous round's row potentials (spec THM-SINK-IN-EVERY-ROUND). Its weight in a row is
``exp(logit - r_i)``, what the real keys' weights leave of 1.
"""

from __future__ import annotations

from typing import Any

from . import logsumexp as lse
from ._device import device_of
from .schemes import Plan

Array = Any


def first_round(n_rows: int, like: Array, /, *, xp: Any) -> Array:
    """The sink logit after the first column normalization: ``-log T``, shape ``(1, 1)``."""
    return -xp.log(xp.full((1, 1), float(max(n_rows, 1)), dtype=like.dtype, device=device_of(like)))


def running(start: int, stop: int, position: int, like: Array, /, *, xp: Any) -> Array:
    """The sink logit of rows ``start:stop`` under the running statistic: ``-log(p_i + 1)``, ``(stop - start, 1)``.

    ``position`` is the position of row 0 in its sequence (decoding: the earlier positions).
    """
    first = position + start + 1
    counts = xp.arange(first, first + stop - start, dtype=like.dtype, device=device_of(like))
    return -xp.log(counts[:, None])


def next_round(rows: list[lse.LogSumExp], /, *, xp: Any) -> Array:
    """A later Sinkhorn round's sink logit ``-LSE_i(-r_i)``, from the previous round's row potentials ``r`` (per
    block of rows, each ``(..., block, 1)``, the sink included)."""
    total = None
    for row in rows:
        share = lse.reduce(-(row.max + lse.log_sum(row.sum, xp=xp)), axis=-2, xp=xp)
        total = share if total is None else lse.merge(total, share, xp=xp)
    assert total is not None, "every pass has a block"
    return -(total.max + lse.log_sum(total.sum, xp=xp))


def with_sink(row: lse.LogSumExp, logit: Array | None, /, *, xp: Any) -> lse.LogSumExp:
    """A row statistic with the sink logit merged in (unchanged without one)."""
    if logit is None:
        return row
    logit = logit + xp.zeros_like(row.max)
    return lse.merge(row, lse.LogSumExp(logit, xp.ones_like(logit)), xp=xp)


def logits(
    how: Plan, last_round: Array | None, sink: Array | None, rows: tuple[int, int], position: int, like: Array, /,
    *, xp: Any,
) -> tuple[Array | None, Array | None]:  # fmt: skip
    """The sink logits of rows ``start:stop`` of the biased component and of the plain one (None without a sink).

    ``last_round`` is the last column round's sink logit (doubly, Sinkhorn), ``sink`` the sink's score.
    """
    if not how.sink:
        return None, None
    biased = None
    if how.running:
        biased = running(*rows, position, like, xp=xp)
    elif how.biased:
        biased = last_round
    return biased, sink if how.plain else None
