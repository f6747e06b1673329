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
    doubly = lse.log_softmax(_biased(block, bias), axis=-1, xp=xp)
    return doubly if scheme != "hybrid" else _log_mix(doubly, softmax, alpha, xp=xp)


def output(block: Array, bias: Bias | None, value: Array, /, *, scheme: str, alpha: Array, xp: Any) -> Array:
    """The attention output ``weights @ value`` of one block, normalized after the product."""
    return _combine(block, bias, lambda e, s: xp.matmul(e, value) / s, scheme=scheme, alpha=alpha, xp=xp)


def _combine(
    block: Array, bias: Bias | None, finish: Callable[[Array, Array], Array], /, *, scheme: str, alpha: Array, xp: Any
) -> Array:
    """``finish(e, s)`` of the row softmax ``e / s`` of the scheme; hybrid mixes two of them."""
    if scheme == "softmax":
        return finish(*lse.softmax_parts(block, axis=-1, xp=xp))
    biased = finish(*lse.softmax_parts(_biased(block, bias), axis=-1, xp=xp))
    if scheme != "hybrid":
        return biased
    return alpha * biased + (1 - alpha) * finish(*lse.softmax_parts(block, axis=-1, xp=xp))


def _biased(block: Array, bias: Bias | None, /) -> Array:
    assert bias is not None, "schemes with a bias need their column statistic"
    return bias(block)


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
