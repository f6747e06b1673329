"""Masked attention scores, produced one block of query rows at a time.

Every scheme reads its scores through a :class:`Scores`: the materialized path
wraps a given ``(..., T, K)`` matrix, the chunked path and every backward pass
compute ``query[start:stop] @ key.T`` on demand (the scale is already in
``query``).  Masks follow torch's ``scaled_dot_product_attention``: boolean
True means "may attend", floating masks are added.  ``causal`` lets query
``i`` see the keys ``j <= i + offset``: ``offset = 0`` is the top-left aligned
triangle, ``offset = K - T`` the bottom-right one of decoding.  A masked entry
is ``-inf``.

Under ``causal`` a block of rows needs only the keys up to its last row's
position, and :meth:`Scores.rows` returns only those (``Scores.width``): the
upper triangle is never computed.  Nothing is cached: a pass that needs a block
again computes it again, and the materialized path slices its matrix.

``softcap`` bounds the scores before the mask: ``softcap * tanh(S / softcap)``
(spec DEF-SOFTCAP); the backward pass asks for the slope ``1 - tanh^2`` with
the block (:meth:`Scores.rows_with_slope`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import masks, products
from ._device import device_of

Array = Any


@dataclass(frozen=True)
class Scores:
    """The masked scores of ``n_rows`` queries against ``n_keys`` keys.

    Exactly one of ``matrix`` (the scores themselves) and ``query``/``key``
    (their factors, the scale inside ``query``) is given.
    """

    n_rows: int
    n_keys: int
    mask: Array | None
    causal: bool
    offset: int = 0
    matrix: Array = None
    query: Array = None
    key: Array = None
    softcap: float | None = None

    def width(self, stop: int) -> int:
        """How many leading keys rows ``< stop`` may see: all of them unless ``causal``."""
        if not self.causal:
            return self.n_keys
        return max(1, min(self.n_keys, stop + self.offset))  # never empty: the triangle masks what is unseen

    def rows(self, start: int, stop: int, /, *, xp: Any) -> Array:
        """The masked block of rows ``start:stop``, shape ``(..., stop - start, width(stop))``."""
        return self.rows_with_slope(start, stop, xp=xp, slope=False)[0]

    def rows_with_slope(self, start: int, stop: int, /, *, xp: Any, slope: bool = True) -> tuple[Array, Array | None]:
        """The masked block and ``d capped / d S`` of the softcap (None without one, or with ``slope=False``)."""
        width = self.width(stop)
        if self.matrix is not None:
            block = self.matrix[..., start:stop, :width]
        else:
            block = products.matmul(
                self.query[..., start:stop, :], xp.matrix_transpose(self.key[..., :width, :]), xp=xp
            )
        derivative = None
        if self.softcap is not None:
            block = xp.tanh(block / self.softcap)
            derivative = 1 - block * block if slope else None
            block = self.softcap * block
        return _masked(block, start, self.mask, self.causal, self.offset, xp=xp), derivative


def from_matrix(scores: Array, /, *, mask: Array | None, causal: bool, offset: int = 0) -> Scores:
    """Scores given as a matrix of shape ``(..., T, K)`` (already capped)."""
    return Scores(scores.shape[-2], scores.shape[-1], mask, causal, offset, matrix=scores)


def from_projections(
    query: Array, key: Array, /, *, mask: Array | None, causal: bool, offset: int = 0, softcap: float | None = None
) -> Scores:
    """Scores ``query @ key.T`` computed one block of queries at a time (``query`` holds the scale)."""
    return Scores(query.shape[-2], key.shape[-2], mask, causal, offset, query=query, key=key, softcap=softcap)


def cap(scores: Array, softcap: float | None, /, *, xp: Any) -> Array:
    """``softcap * tanh(scores / softcap)``; ``scores`` without a softcap."""
    return scores if softcap is None else softcap * xp.tanh(scores / softcap)


def block_bounds(n_rows: int, block_size: int) -> tuple[tuple[int, int], ...]:
    """``(start, stop)`` of consecutive blocks of at most ``block_size`` rows.

    A single block is found by one comparison, so that a compiler tracing
    symbolic lengths (``torch.compile(dynamic=True)``) guards on it instead
    of specializing on the length.
    """
    if n_rows <= block_size:
        return ((0, n_rows),)
    return tuple((start, min(start + block_size, n_rows)) for start in range(0, n_rows, block_size))


def mask_rows(mask: Array, start: int, stop: int, width: int, /) -> Array:
    """The part of a broadcastable mask that applies to rows ``start:stop`` and the first ``width`` keys."""
    rows = mask if mask.shape[-2] == 1 else mask[..., start:stop, :]
    return rows if rows.shape[-1] == 1 else rows[..., :width]


def _masked(block: Array, start: int, mask: Array | None, causal: bool, offset: int, /, *, xp: Any) -> Array:
    """Apply the rows ``start:start + n`` of ``mask`` and of the causal triangle."""
    n, k = block.shape[-2:]
    if mask is not None:
        block = masks.apply(block, mask_rows(mask, start, start + n, k), xp=xp)
    if causal:  # only the keys after the first row's position can be hidden from some row of the block
        first = max(0, min(k, start + offset + 1))
        if 2 * first < k:  # a block that is mostly triangle: mask it whole (one array, as a triangular mask would)
            first = 0
        if first < k:
            dev = device_of(block)
            query_pos = xp.arange(start + offset, start + offset + n, device=dev)[:, None]
            key_pos = xp.arange(first, k, device=dev)[None, :]
            corner = xp.where(key_pos <= query_pos, block[..., first:], -xp.inf)
            block = corner if first == 0 else xp.concat((block[..., :first], corner), axis=-1)
    return block
