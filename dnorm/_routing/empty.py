"""Calls with no queries or no keys: what the definitions give, without running an implementation.

With ``T = 0`` the output has no rows. With ``K = 0`` every query sees no
key, and a query that sees no key gets a zero row (spec
DEF-EMPTY-ROWS-AND-KEYS), whatever the scheme. The implementations reduce
over the keys and queries, which a zero-size axis has not: the routing layer
answers these calls itself, after the implementation is chosen (so that a
``kernel=`` that cannot serve the call still says why).
"""

from __future__ import annotations

from typing import Any

Array = Any


def empty(query: Array, key: Array, /) -> bool:
    """Whether the call has no queries or no keys."""
    return bool(query.shape[-2] == 0 or key.shape[-2] == 0)


def output(query: Array, key: Array, value: Array, /, *, xp: Any) -> Array:
    """``A @ value`` for weights ``A`` of shape ``(..., T, K)`` with ``T = 0`` or ``K = 0``: no rows, or zero rows.

    Formed as ``(query @ key.T) @ value``, a product over an empty axis, so that
    the leading dimensions broadcast as the implementations' do and autodiff
    links the output to the inputs (their gradients are zeros).
    """
    return xp.matmul(xp.matmul(query, xp.matrix_transpose(key)), value)


def weights(scores: Array, /) -> Array:
    """The weights (or log-weights) of scores of shape ``(..., T, K)`` with ``T = 0`` or ``K = 0``: no entries."""
    return 0.0 * scores
