"""The biased row softmax: attention weights of one block of query rows.

Given the block's masked scores ``S`` and its column statistic ``c`` (see
:mod:`.bias`), every scheme is a row log-softmax of ``S`` or of ``S - c``
(spec: THM-DNAS-AS-BIASED-SOFTMAX); ``hybrid`` mixes the two from the same
block of scores (spec: DEF-HYBRID).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import logsumexp as lse
from .bias import Bias

Array = Any


def weights(
    block: Array,
    bias: Bias | None,
    /,
    *,
    scheme: str,
    alpha: Array,
    log: bool,
    xp: Any,
) -> Array:
    """Weights (``log=False``) or log-weights of one block of masked scores.

    ``bias`` subtracts the block's column statistic; ``None`` for ``softmax``.
    """
    if not log:
        return _combine(block, bias, lambda e, s: e / s, scheme=scheme, alpha=alpha, xp=xp)
    softmax = lse.log_softmax(block, axis=-1, xp=xp)
    if scheme == "softmax":
        return softmax
    doubly = lse.log_softmax(_checked(bias).subtract(block), axis=-1, xp=xp)
    return doubly if scheme != "hybrid" else _log_mix(doubly, softmax, alpha, xp=xp)


def output(
    block: Array, bias: Bias | None, values: Array, weighted: Array | None, /, *, scheme: str, alpha: Array, xp: Any
) -> Array:
    """The attention output of one block of masked scores.

    ``values`` is ``[V, 1]`` (the values with a column of ones appended) and
    ``weighted`` is ``[w V, w]`` for a per-key bias (see :class:`.bias.Bias`):
    one product then yields the numerator and the denominator of the row
    softmax, and the bias costs one subtraction of ``c_rounded``.
    """
    if scheme == "softmax":
        return _normalized_product(block, values, xp=xp)
    bias = _checked(bias)
    if bias.per_key is not None and weighted is not None:
        biased = _normalized_product(block - bias.per_key[0], weighted, xp=xp)
    else:
        biased = _normalized_product(bias.subtract(block), values, xp=xp)
    if scheme != "hybrid":
        return biased
    return alpha * biased + (1 - alpha) * _normalized_product(block, values, xp=xp)


def with_ones(value: Array, weight: Array | None, /, *, xp: Any) -> Array:
    """``[w V, w]``: ``value`` times the per-key ``weight`` (``(..., 1, K)``; None for 1), then ``w`` itself."""
    if weight is None:
        return xp.concat((value, xp.ones_like(value[..., :1])), axis=-1)
    column = xp.matrix_transpose(weight)
    scaled = value * column
    return xp.concat((scaled, xp.broadcast_to(column, (*scaled.shape[:-1], 1))), axis=-1)


def _normalized_product(y: Array, values: Array, /, *, xp: Any) -> Array:
    """``softmax(y) @ V`` from ``exp(y - max) @ [V, 1]``: numerator and denominator at once."""
    e = xp.exp(y - lse.finite(xp.max(y, axis=-1, keepdims=True), xp=xp))
    del y  # at most two block-sized temporaries alive: the allocator keeps reusing them
    both = xp.matmul(e, values)
    total = both[..., -1:]
    return both[..., :-1] / xp.where(total == 0, 1.0, total)


def _combine(
    block: Array, bias: Bias | None, finish: Callable[[Array, Array], Array], /, *, scheme: str, alpha: Array, xp: Any
) -> Array:
    """``finish(e, s)`` of the row softmax ``e / s`` of the scheme; hybrid mixes two of them."""
    if scheme == "softmax":
        return finish(*lse.softmax_parts(block, axis=-1, xp=xp))
    biased = finish(*lse.softmax_parts(_checked(bias).subtract(block), axis=-1, xp=xp))
    if scheme != "hybrid":
        return biased
    return alpha * biased + (1 - alpha) * finish(*lse.softmax_parts(block, axis=-1, xp=xp))


def _checked(bias: Bias | None, /) -> Bias:
    assert bias is not None, "schemes with a bias need their column statistic"
    return bias


def _log_mix(a: Array, b: Array, alpha: Array, /, *, xp: Any) -> Array:
    """``log(alpha * exp(a) + (1 - alpha) * exp(b))`` without ``log(0)``.

    Scaling by the larger of ``exp(a)``, ``exp(b)`` keeps the mixture at least
    ``min(alpha, 1 - alpha)``, so its logarithm is exact, gradients included,
    unless ``alpha`` is 0 or 1; there the mixture may underflow and the same
    sum is taken with the weights in the log domain instead.
    """
    linear = _log_sum_2(a, b, alpha, 1 - alpha, xp=xp)
    log_alpha, log_beta = lse.safe_log(alpha, xp=xp), lse.safe_log(1 - alpha, xp=xp)
    in_logs = _log_sum_2(a + log_alpha, b + log_beta, 1.0, 1.0, xp=xp)
    return xp.where(xp.isinf(linear) & ~xp.isinf(in_logs), in_logs, linear)


def _log_sum_2(a: Array, b: Array, wa: Any, wb: Any, /, *, xp: Any) -> Array:
    """``log(wa * exp(a) + wb * exp(b))`` shifted by the larger of ``a``, ``b``."""
    shift = lse.finite(xp.maximum(a, b), xp=xp)
    return shift + lse.safe_log(wa * xp.exp(a - shift) + wb * xp.exp(b - shift), xp=xp)
