"""Matrix products that broadcast a shared operand without copying it (grouped-query attention, dnorm._routing.heads).

Grouped heads put the queries in ``(..., H, G, rows, D)`` and the keys and
values in ``(..., H, 1, K, D)``. A batched ``matmul`` broadcasts the keys by
materializing ``G`` copies on some backends (torch expands, then reshapes);
stacking the ``G`` query blocks as rows of one product reads every key once.
"""

from __future__ import annotations

from typing import Any

Array = Any


def matmul(a: Array, b: Array, /, *, xp: Any) -> Array:
    """``a @ b``; when ``b`` has size 1 on axis -3 and ``a`` does not, ``a``'s blocks are stacked as rows."""
    if not shared(a, b):
        return xp.matmul(a, b)
    groups, rows = a.shape[-3], a.shape[-2]
    out = xp.matmul(xp.reshape(a, (*a.shape[:-3], groups * rows, a.shape[-1])), b[..., 0, :, :])
    return xp.reshape(out, (*out.shape[:-2], groups, rows, out.shape[-1]))


def t_matmul(a: Array, b: Array, /, *, fold: bool, xp: Any) -> Array:
    """``a^T @ b``, with ``fold`` summed over axis -3 inside the product (kept as a size-1 axis).

    For the gradient of an operand shared across axis -3 (the keys and values
    of grouped heads): the sum over the groups is part of the contraction.
    """
    if not fold or a.ndim < 3 or a.shape[-3] == 1:
        return xp.matmul(xp.matrix_transpose(a), b)
    groups, rows = a.shape[-3], a.shape[-2]
    flat_a = xp.reshape(a, (*a.shape[:-3], groups * rows, a.shape[-1]))
    flat_b = xp.reshape(
        xp.broadcast_to(b, (*b.shape[:-3], groups, *b.shape[-2:])), (*b.shape[:-3], groups * rows, b.shape[-1])
    )
    return xp.expand_dims(xp.matmul(xp.matrix_transpose(flat_a), flat_b), axis=-3)


def shared(a: Array, b: Array, /) -> bool:
    """Whether ``b`` is one operand shared by the blocks of ``a`` along axis -3 (grouped heads)."""
    return bool(a.ndim >= 3 and b.ndim == a.ndim and b.shape[-3] == 1 and a.shape[-3] > 1)
