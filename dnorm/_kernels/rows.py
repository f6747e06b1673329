"""The biased row softmax: attention weights and outputs of one block of query rows.

Given the block's masked scores ``S`` and its biased scores ``Y = S - c`` (see
:mod:`.bias`), every scheme is a row softmax of ``S`` or of ``Y`` (spec:
THM-DNAS-AS-BIASED-SOFTMAX); ``hybrid`` mixes the two from the same block of
scores (spec: DEF-HYBRID).
"""

from __future__ import annotations

from typing import Any

from . import logsumexp as lse
from . import products

Array = Any


def weights(block: Array, biased: Array | None, /, *, mixed: bool, alpha: Array, log: bool, xp: Any) -> Array:
    """Weights (``log=False``) or log-weights of one block; ``biased`` is ``Y`` (None for softmax); ``mixed``: the
    hybrid's two components, weighted by ``alpha``."""
    if not log:
        if biased is None:
            return softmax(block, xp=xp)
        doubly = softmax(biased, xp=xp)
        return mix(doubly, softmax(block, xp=xp), alpha) if mixed else doubly
    plain = lse.log_softmax(block, axis=-1, xp=xp)
    if biased is None:
        return plain
    doubly = lse.log_softmax(biased, axis=-1, xp=xp)
    return _log_mix(doubly, plain, alpha, xp=xp) if mixed else doubly


def mix(biased: Array, plain: Array, alpha: Array, /) -> Array:
    """The hybrid (spec DEF-HYBRID): ``alpha`` times the biased component plus ``1 - alpha`` times the plain one."""
    weight, rest = shares(alpha)
    return weight * biased + rest * plain


def shares(alpha: Array, /) -> tuple[Array, Array]:
    """The weights of the hybrid's two components, ``(alpha, 1 - alpha)``: what each one's gradient is scaled by."""
    return alpha, 1 - alpha


def mix_gradient(grad: Array, biased: Array, plain: Array, /, *, xp: Any) -> Array:
    """The gradient of :func:`mix` in ``alpha`` per leading index, shape ``(..., 1, 1)``."""
    return xp.sum(grad * (biased - plain), axis=(-2, -1), keepdims=True)


def outputs(
    block: Array,
    biased: Array | None,
    values: Array,
    per_key: tuple[Array, Array] | None,
    /,
    *,
    plain: bool,
    xp: Any,
    ones: bool = True,
    keep: Array | None = None,
) -> list[Array]:
    """Each component's attention output for one block: the biased one first, then the plain one.

    ``values`` is ``[V, 1]`` (the values with a column of ones appended), or
    ``V`` with ``ones=False``; ``keep`` is dropout's factor (see
    :func:`normalized_product`). For a
    per-key bias, ``per_key`` is ``(c_rounded, [w V, w])`` (see
    :func:`.bias.per_key`): one product yields the numerator and the
    denominator of the row softmax, and the bias costs one subtraction.
    """
    out = []
    if per_key is not None:
        out.append(normalized_product(block - per_key[0], per_key[1], xp=xp, keep=keep))
    elif biased is not None:
        out.append(normalized_product(biased, values, xp=xp, ones=ones, keep=keep))
    if plain:
        out.append(normalized_product(block, values, xp=xp, ones=ones, keep=keep))
    return out


def with_ones(value: Array, weight: Array | None, /, *, xp: Any) -> Array:
    """``[w V, w]``: ``value`` times the per-key ``weight`` (``(..., 1, K)``; None for 1), then ``w`` itself."""
    if weight is None:
        return xp.concat((value, xp.ones_like(value[..., :1])), axis=-1)
    column = xp.matrix_transpose(weight)
    scaled = value * column
    return xp.concat((scaled, xp.broadcast_to(column, (*scaled.shape[:-1], 1))), axis=-1)


def normalized_product(y: Array, values: Array, /, *, xp: Any, ones: bool = True, keep: Array | None = None) -> Array:
    """``softmax(y) @ V`` from ``exp(y - max) @ [V, 1]``: numerator and denominator at once.

    With ``ones=False`` the values carry no column of ones and the
    denominator is a row sum of its own (for a few rows against a long cache,
    cheaper than copying the values to append the ones). With dropout's
    factor ``keep``, ``(softmax(y) * keep) @ V``: the denominator is that of
    the weights before dropout.
    """
    if keep is None and ones:
        return partial_product(y, values, xp=xp)[0]
    e = xp.exp(y - lse.finite(xp.max(y, axis=-1, keepdims=True), xp=xp))
    del y  # at most two block-sized temporaries alive: the allocator keeps reusing them
    if keep is not None:
        total = products.matmul(e, values[..., -1:], xp=xp) if ones else xp.sum(e, axis=-1, keepdims=True)
        both = products.matmul(e * keep, values[..., :-1] if ones else values, xp=xp)
        return both / xp.where(total == 0, 1.0, total)
    both = products.matmul(e, values, xp=xp)
    total = xp.sum(e, axis=-1, keepdims=True)
    return both / xp.where(total == 0, 1.0, total)


def partial_product(y: Array, values: Array, /, *, xp: Any) -> tuple[Array, lse.LogSumExp]:
    """``softmax(y) @ V`` over the keys of ``y`` alone, and the rows' statistic ``(max, sum)`` of ``y``.

    ``values`` is ``[V, 1]``; one product gives the numerator and the
    denominator. An all ``-inf`` row gives a zero output and the empty
    statistic. Outputs over disjoint sets of keys combine with
    :func:`merge_partial` (spec DEF-ONLINE-MERGE).
    """
    top = xp.max(y, axis=-1, keepdims=True)
    e = xp.exp(y - lse.finite(top, xp=xp))
    del y  # at most two block-sized temporaries alive: the allocator keeps reusing them
    both = products.matmul(e, values, xp=xp)
    both, total = both[..., :-1], both[..., -1:]
    return both / xp.where(total == 0, 1.0, total), lse.LogSumExp(top, total)


def merge_partial(
    a: tuple[Array, lse.LogSumExp], b: tuple[Array, lse.LogSumExp], /, *, xp: Any
) -> tuple[Array, lse.LogSumExp]:
    """The output and row statistic over the union of two disjoint sets of keys, from each one's.

    Each output is weighted by its share of the merged denominator; a set
    that a row cannot see (the empty statistic) weighs nothing.
    """
    (out_a, st_a), (out_b, st_b) = a, b
    shift = lse.finite(xp.maximum(st_a.max, st_b.max), xp=xp)
    w_a = st_a.sum * xp.exp(st_a.max - shift)
    w_b = st_b.sum * xp.exp(st_b.max - shift)
    total = w_a + w_b
    out = (out_a * w_a + out_b * w_b) / xp.where(total == 0, 1.0, total)
    return out, lse.LogSumExp(xp.maximum(st_a.max, st_b.max), total)


def softmax(y: Array, /, *, xp: Any) -> Array:
    """Row softmax of ``y``; an all ``-inf`` row is zero."""
    e, s = lse.softmax_parts(y, axis=-1, xp=xp)
    return e / s


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
