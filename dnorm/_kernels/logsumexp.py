"""Log-sum-exp statistics in the log domain (spec: numerics.md).

A :class:`LogSumExp` keeps ``log(sum(exp(x)))`` over some axis as the pair
``(max, sum)`` with ``sum = sum(exp(x - finite(max)))``.  Keeping the pair,
rather than the single number ``max + log(sum)``, lets a bias be applied as
``(x - max) - log(sum)``: the first difference is exact near the maximum, so
no precision is lost to the magnitude of the scores (1e4 and more).

The empty reduction (every entry ``-inf``) is ``max = -inf, sum = 0``; every
function here maps it to ``-inf`` log-weights and never to NaN, in values or in
gradients.  NaN entries propagate.
"""

from __future__ import annotations

from typing import Any, NamedTuple

Array = Any


class LogSumExp(NamedTuple):
    """``log(sum(exp(x)))`` kept as ``(max, sum)``; ``max`` is ``-inf`` if empty."""

    max: Array
    sum: Array


def finite(m: Array, /, *, xp: Any) -> Array:
    """``m`` with ``-inf`` raised to the lowest finite number: a shift that never makes NaN.

    ``x - finite(max(x))`` is ``-inf`` where ``x`` is, and exact elsewhere.
    One ``clip``, among the cheapest elementwise operations on every backend
    (a ``where`` costs up to twenty times more on CPU torch). A ``maximum``
    with a Python number would be cheaper still there, but array-api-compat
    turns the number into a tensor through ``torch.result_type``, which
    ``torch.compile`` cannot trace.
    """
    return xp.clip(m, min=xp.finfo(m.dtype).min)


def log_sum(s: Array, /, *, xp: Any) -> Array:
    """``log(s)`` of a pair's sum, 0 for the empty pair.

    A non-empty pair's sum is at least 1 exactly (its maximizer contributes
    ``exp(0) = 1`` and rounding is monotone), so raising ``s`` to 1 changes
    the empty pair only.
    """
    return xp.log(xp.clip(s, min=1.0))


def safe_log(s: Array, /, *, xp: Any) -> Array:
    """``log(s)`` for ``s >= 0`` with ``log(0) = -inf``, no warning, finite gradient."""
    zero = s == 0
    return xp.where(zero, -xp.inf, xp.log(xp.where(zero, 1.0, s)))


def reduce(x: Array, /, *, axis: int, xp: Any) -> LogSumExp:
    """Statistics of ``x`` reduced over ``axis`` (kept as a length-1 axis)."""
    m = xp.max(x, axis=axis, keepdims=True)
    return LogSumExp(m, xp.sum(xp.exp(x - finite(m, xp=xp)), axis=axis, keepdims=True))


def pointwise(x: Array, /, *, xp: Any) -> LogSumExp:
    """Statistics of each entry of ``x`` on its own (the start of a scan)."""
    return LogSumExp(x, xp.exp(x - finite(x, xp=xp)))


def merge(a: LogSumExp, b: LogSumExp, /, *, xp: Any) -> LogSumExp:
    """Statistics of the union of two reductions (the online log-sum-exp step).

    Merging with an empty reduction returns the other one bit for bit.
    """
    m = xp.maximum(a.max, b.max)
    shift = finite(m, xp=xp)
    return LogSumExp(
        m,
        a.sum * xp.exp(a.max - shift) + b.sum * xp.exp(b.max - shift),
    )


def subtract(x: Array, stats: LogSumExp, /, *, xp: Any) -> Array:
    """``x - log(sum(exp(.)))`` computed as ``(x - max) - log(sum)``.

    Where the statistic is empty both parts are 0, so masked (``-inf``)
    entries of ``x`` stay ``-inf`` instead of becoming NaN.
    """
    return (x - finite(stats.max, xp=xp)) - log_sum(stats.sum, xp=xp)


def softmax_parts(x: Array, /, *, axis: int, xp: Any) -> tuple[Array, Array]:
    """``(e, s)`` with ``softmax(x) = e / s`` over ``axis``; ``s = 1`` for an all ``-inf`` slice.

    ``e = exp(x - max)``: the weights and their normalizer, kept apart so an
    attention output can be normalized after the product with the values.
    """
    e = xp.exp(x - finite(xp.max(x, axis=axis, keepdims=True), xp=xp))
    s = xp.sum(e, axis=axis, keepdims=True)
    return e, xp.where(s == 0, 1.0, s)


def log_softmax(x: Array, /, *, axis: int, xp: Any) -> Array:
    """Stable ``log(softmax(x))`` over ``axis``; an all ``-inf`` slice stays ``-inf``."""
    return subtract(x, reduce(x, axis=axis, xp=xp), xp=xp)
