"""The block driver: one pass structure for every scheme, materialized or chunked.

Column statistics first (:mod:`.bias`), then the biased row softmax
(:mod:`.rows`) block by block.  The materialized path is the case of a single
block; the chunked path holds one block of ``(..., block, K)`` scores at a
time (spec: THM-CHUNKED-EQUALS-DENSE).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import bias, rows
from .scores import Scores

Array = Any


def weights(
    scores: Scores,
    bounds: list[tuple[int, int]],
    /,
    *,
    scheme: str,
    causal: bool,
    alpha: Array,
    n_iter: int,
    log: bool,
    xp: Any,
) -> Array:
    """The ``(..., T, K)`` attention weights, or log-weights with ``log=True``."""
    blocks = [
        rows.weights(block, column, scheme=scheme, alpha=alpha, log=log, xp=xp)
        for block, column in _biased_blocks(scores, bounds, scheme=scheme, causal=causal, n_iter=n_iter, xp=xp)
    ]
    return _concat(blocks, xp=xp)


def attend(
    scores: Scores,
    value: Array,
    bounds: list[tuple[int, int]],
    /,
    *,
    scheme: str,
    causal: bool,
    alpha: Array,
    n_iter: int,
    xp: Any,
) -> Array:
    """The attention output ``weights @ value``, one block of query rows at a time."""
    values = rows.with_ones(value, None, xp=xp)
    weighted = None
    outputs = []
    for block, column in _biased_blocks(scores, bounds, scheme=scheme, causal=causal, n_iter=n_iter, xp=xp):
        if weighted is None and column is not None and column.per_key is not None:
            weighted = rows.with_ones(value, column.per_key[1], xp=xp)  # one column statistic for every block
        outputs.append(rows.output(block, column, values, weighted, scheme=scheme, alpha=alpha, xp=xp))
    return _concat(outputs, xp=xp)


def _biased_blocks(
    scores: Scores,
    bounds: list[tuple[int, int]],
    /,
    *,
    scheme: str,
    causal: bool,
    n_iter: int,
    xp: Any,
) -> Iterator[tuple[Array, bias.Bias | None]]:
    """Each block of scores with the bias (column statistic) that applies to it."""
    running = causal and scheme in ("doubly", "hybrid")
    column = None
    if scheme == "sinkhorn":
        column = bias.sinkhorn(scores, bounds, n_iter=n_iter, xp=xp)
    elif scheme != "softmax" and not running:
        column = bias.columns(scores, bounds, xp=xp)
    carry = None
    for start, stop in bounds:
        block = scores.rows(start, stop)
        if running:
            column, carry = bias.causal_columns(block, carry, xp=xp)
        yield block, column


def _concat(blocks: list[Array], /, *, xp: Any) -> Array:
    return blocks[0] if len(blocks) == 1 else xp.concat(blocks, axis=-2)
