"""Masked attention scores, produced one block of query rows at a time.

Every scheme reads its scores through a :class:`Scores`: the materialized path
wraps a given ``(..., T, K)`` matrix, the chunked path computes
``query[start:stop] @ key.T * scale`` on demand.  Masks follow torch's
``scaled_dot_product_attention``: boolean True means "may attend", floating
masks are added, ``causal`` is the top-left aligned lower triangle.  A masked
entry is ``-inf``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from array_api_compat import device

Array = Any


@dataclass(frozen=True)
class Scores:
    """``n_rows`` query rows of masked scores; ``rows(start, stop)`` gives a block.

    The last block asked for is cached, so the passes of the materialized path
    (a single block) compute and mask the scores once.
    """

    n_rows: int
    rows: Callable[[int, int], Array]


def from_matrix(scores: Array, /, *, mask: Array | None, causal: bool, xp: Any) -> Scores:
    """Scores given as a matrix of shape ``(..., T, K)``."""

    def rows(start: int, stop: int) -> Array:
        block = scores[..., start:stop, :]
        return _masked(block, start, mask=mask, causal=causal, xp=xp)

    return Scores(scores.shape[-2], lru_cache(maxsize=1)(rows))


def from_projections(query: Array, key: Array, /, *, mask: Array | None, causal: bool, xp: Any) -> Scores:
    """Scores ``query @ key.T`` computed one block of queries at a time (``query`` holds the scale)."""
    key_t = xp.matrix_transpose(key)

    def rows(start: int, stop: int) -> Array:
        block = xp.matmul(query[..., start:stop, :], key_t)
        return _masked(block, start, mask=mask, causal=causal, xp=xp)

    return Scores(query.shape[-2], lru_cache(maxsize=1)(rows))


def block_bounds(n_rows: int, block_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive blocks of at most ``block_size`` rows."""
    return [(start, min(start + block_size, n_rows)) for start in range(0, n_rows, block_size)]


def _masked(block: Array, start: int, /, *, mask: Array | None, causal: bool, xp: Any) -> Array:
    """Apply the rows ``start:start + n`` of ``mask`` and of the causal triangle."""
    n, k = block.shape[-2:]
    if mask is not None:
        rows = mask if mask.shape[-2] == 1 else mask[..., start : start + n, :]
        block = xp.where(rows, block, -xp.inf) if xp.isdtype(mask.dtype, "bool") else block + rows
    if causal:
        dev = device(block)
        query_pos = xp.arange(start, start + n, device=dev)[:, None]
        key_pos = xp.arange(k, device=dev)[None, :]
        block = xp.where(key_pos <= query_pos, block, -xp.inf)
    return block
