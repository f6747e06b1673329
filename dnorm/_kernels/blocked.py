"""The block driver: one pass structure for every scheme, materialized or chunked, forward and backward.

Column statistics first (:mod:`.bias`), then the biased row softmax
(:mod:`.rows`) block by block.  The materialized path is the case of a single
block; the chunked path holds one block of ``(..., block, K)`` scores at a
time (spec: THM-CHUNKED-EQUALS-DENSE).  :func:`attend` also returns what the
backward pass (:mod:`.backward`) needs to recompute every block: O(T + K)
numbers per head, never the scores (spec DEF-BLOCKED-BACKWARD).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from . import bias, rows, sinks
from . import logsumexp as lse
from .dropout import Dropout, factor
from .schemes import Plan
from .scores import Scores
from .shapes import pad

Array = Any
Bounds = Sequence[tuple[int, int]]

#: With at least this many query rows, the values get a column of ones: one product gives each row's numerator and
#: denominator. Fewer rows (a decoding step) sum their weights instead of copying a long cache of values.
ONE_PRODUCT_ROWS = 16


class Residuals(NamedTuple):
    """What the forward pass keeps for the backward one (arrays only, O(T + K) per head).

    ``rounds``: the column statistic of every round (empty for softmax and
    the causal variants). ``carries``: under the running statistic, the
    statistic of the rows before each block (None before the first, unless
    the pass started from a carry), and last that of every row: the state of
    incremental decoding. ``outputs``: each component's output (biased, then
    plain) when the scheme mixes two.
    """

    rounds: tuple[bias.ColumnStat, ...]
    carries: tuple[lse.LogSumExp | None, ...]
    outputs: tuple[Array, ...]


def weights(
    scores: Scores,
    bounds: Bounds,
    /,
    *,
    how: Plan,
    alpha: Array,
    log: bool,
    xp: Any,
    sink: Array | None = None,
    position: int = 0,
) -> Array:
    """The ``(..., T, K)`` weights of the scheme ``how``, or log-weights with ``log=True``.

    ``sink``: the sink's score (spec DEF-SINK), when ``how.sink``; ``position``: that of row 0 in its sequence.
    """
    rounds = statistics(scores, bounds, how, xp=xp)
    blocks = []
    carry = None
    last = rounds[-1].sink if rounds else None
    for start, stop in bounds:
        block = scores.rows(start, stop, xp=xp)
        biased, carry = bias_block(block, how, rounds, carry, xp=xp)
        logits = sinks.logits(how, last, sink, (start, stop), position, block, xp=xp)
        w = rows.weights(block, biased, mixed=how.mixed, alpha=alpha, log=log, xp=xp, sinks=logits, rows=how.rows)
        blocks.append(pad(w, scores.n_keys, -xp.inf if log else 0.0, axis=-1, xp=xp))  # causal blocks stop early
    return concat_rows(blocks, xp=xp)


def attend(
    scores: Scores,
    value: Array,
    bounds: Bounds,
    /,
    *,
    how: Plan,
    alpha: Array,
    xp: Any,
    carry: lse.LogSumExp | None = None,
    drop: Dropout | None = None,
    sink: Array | None = None,
    position: int = 0,
) -> tuple[Array, Residuals]:
    """The attention output ``weights @ value`` of the scheme ``how``, one block of query rows at a time, and the
    residuals.

    ``carry`` is the running statistic of earlier queries (causal decoding), for the keys they saw;
    ``drop`` drops weights after the normalization (spec DEF-DROPOUT), which leaves every statistic as it is;
    ``sink`` and ``position`` as in :func:`weights`.
    """
    rounds = statistics(scores, bounds, how, xp=xp)
    ones = scores.n_rows >= ONE_PRODUCT_ROWS
    values = rows.with_ones(value, None, xp=xp) if ones else value
    per_key = None
    if rounds:  # a statistic of the key alone rides on the values (per_key): only the running one needs Y itself
        hi, w = bias.per_key(rounds[-1], xp=xp)  # one column statistic for every block
        per_key = (hi, rows.with_ones(value, w, xp=xp))
    carries: list[lse.LogSumExp | None] = []  # the running statistic before each block, then after the last
    parts: list[list[Array]] = []
    for start, stop in bounds:
        block = scores.rows(start, stop, xp=xp)
        carries.append(carry)
        biased, carry = bias_block(block, how, (), carry, xp=xp)  # None unless running: per_key serves the others
        width = block.shape[-1]
        keep = factor(drop, start, stop, width, tuple(block.shape[:-2]), xp=xp, like=block)
        logits = sinks.logits(how, rounds[-1].sink if rounds else None, sink, (start, stop), position, block, xp=xp)
        parts.append(
            rows.outputs(
                block,
                biased,
                values[..., :width, :],
                per_key,
                plain=how.plain,
                xp=xp,
                ones=ones,
                keep=keep,
                sinks=logits,
                rows=how.rows,
            )
        )
    carries.append(carry)
    outputs = tuple(concat_rows([p[k] for p in parts], xp=xp) for k in range(len(parts[0])))
    out = rows.mix(outputs[0], outputs[1], alpha) if how.mixed else outputs[0]
    return out, Residuals(rounds, tuple(carries) if how.running else (), outputs if how.mixed else ())


def statistics(scores: Scores, bounds: Bounds, how: Plan, /, *, xp: Any) -> tuple[bias.ColumnStat, ...]:
    """The column statistics of the key alone, one per round (pass 1 of doubly, ``n_iter`` passes of sinkhorn)."""
    if how.rounds == 1:
        return (bias.columns(scores, bounds, xp=xp, sink=how.sink),)
    if how.rounds > 1:
        return bias.sinkhorn(scores, bounds, n_iter=how.rounds, xp=xp, sink=how.sink)
    return ()


def bias_block(
    block: Array, how: Plan, rounds: tuple[bias.ColumnStat, ...], carry: lse.LogSumExp | None, /, *, xp: Any
) -> tuple[Array | None, lse.LogSumExp | None]:
    """``Y = S - c`` of one block (None for softmax) and, under the running statistic, the next carry."""
    if how.running:
        return bias.running(block, carry, doubling=how.doubling, native=how.native, xp=xp)
    if rounds:
        return bias.subtract(rounds[-1], block, xp=xp), None
    return None, None


def concat_rows(blocks: list[Array], /, *, xp: Any) -> Array:
    return blocks[0] if len(blocks) == 1 else xp.concat(blocks, axis=-2)
