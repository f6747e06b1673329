"""The biased row softmax: attention weights and outputs of one block of query rows.

Given the block's masked scores ``S`` and its biased scores ``Y = S - c`` (see
:mod:`.bias`), every normalized scheme is a row softmax of ``S`` or of ``Y``
(spec: THM-DNAS-AS-BIASED-SOFTMAX); ``hybrid`` mixes the two from the same
block of scores (spec: DEF-HYBRID). A sink joins a row as one more logit per
row, of value 0 (``sink``, see :mod:`.sinks`). The rows that do not sum to one
(sigmoid, stick-breaking) come from :mod:`.unnormalized`.
"""

from __future__ import annotations

from typing import Any

from . import logsumexp as lse
from . import products, sinks, unnormalized
from .schemes import Rows

Array = Any


def weights(
    block: Array,
    biased: Array | None,
    /,
    *,
    mixed: bool,
    alpha: Array,
    log: bool,
    xp: Any,
    sinks: tuple[Array | None, Array | None] = (None, None),
    rows: Rows = "normalized",
) -> Array:
    """Weights (``log=False``) or log-weights of one block; ``biased`` is ``Y`` (None for softmax); ``mixed``: the
    hybrid's two components, weighted by ``alpha``; ``sinks``: the sink logits of the biased and the plain
    component (:mod:`.sinks`); ``rows``: how the plain component weighs its keys."""
    if rows != "normalized":
        return unnormalized.weights(block, rows, log=log, xp=xp)
    if not log:
        plain = softmax(block, xp=xp, sink=sinks[1])
        if biased is None:
            return plain
        doubly = softmax(biased, xp=xp, sink=sinks[0])
        return mix(doubly, plain, alpha) if mixed else doubly
    plain = log_softmax(block, sinks[1], xp=xp)
    if biased is None:
        return plain
    doubly = log_softmax(biased, sinks[0], xp=xp)
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
    sinks: tuple[Array | None, Array | None] = (None, None),
    rows: Rows = "normalized",
) -> list[Array]:
    """Each component's attention output for one block: the biased one first, then the plain one.

    ``values`` is ``[V, 1]`` (the values with a column of ones appended), or
    ``V`` with ``ones=False``; ``keep`` is dropout's factor (see
    :func:`normalized_product`). For a
    per-key bias, ``per_key`` is ``(c_rounded, [w V, w])`` (see
    :func:`.bias.per_key`): one product yields the numerator and the
    denominator of the row softmax, and the bias costs one subtraction.
    ``sinks``: each component's sink logit (:mod:`.sinks`); ``rows``: how the
    plain component weighs its keys.
    """
    out = []
    if per_key is not None:
        out.append(normalized_product(block - per_key[0], per_key[1], xp=xp, keep=keep, sink=sinks[0]))
    elif biased is not None:
        out.append(normalized_product(biased, values, xp=xp, ones=ones, keep=keep, sink=sinks[0]))
    if plain and rows == "normalized":
        out.append(normalized_product(block, values, xp=xp, ones=ones, keep=keep, sink=sinks[1]))
    elif plain:
        w = unnormalized.weights(block, rows, log=False, xp=xp)
        out.append(products.matmul(w if keep is None else w * keep, values[..., :-1] if ones else values, xp=xp))
    return out


def with_ones(value: Array, weight: Array | None, /, *, xp: Any) -> Array:
    """``[w V, w]``: ``value`` times the per-key ``weight`` (``(..., 1, K)``; None for 1), then ``w`` itself."""
    if weight is None:
        return xp.concat((value, xp.ones_like(value[..., :1])), axis=-1)
    column = xp.matrix_transpose(weight)
    scaled = value * column
    return xp.concat((scaled, xp.broadcast_to(column, (*scaled.shape[:-1], 1))), axis=-1)


def normalized_product(
    y: Array, values: Array, /, *, xp: Any, ones: bool = True, keep: Array | None = None, sink: Array | None = None
) -> Array:
    """``softmax(y) @ V`` from ``exp(y - max) @ [V, 1]``: numerator and denominator at once.

    With ``ones=False`` the values carry no column of ones and the
    denominator is a row sum of its own (for a few rows against a long cache,
    cheaper than copying the values to append the ones). With dropout's
    factor ``keep``, ``(softmax(y) * keep) @ V``: the denominator is that of
    the weights before dropout. A ``sink`` logit adds its term to the
    denominator and nothing to the numerator (its value is 0).
    """
    if keep is None and ones and sink is None:
        return partial_product(y, values, xp=xp)[0]
    top = xp.max(y, axis=-1, keepdims=True)
    if sink is not None:
        top = xp.maximum(top, sink)
    e = xp.exp(y - lse.finite(top, xp=xp))
    del y  # at most two block-sized temporaries alive: the allocator keeps reusing them
    if keep is not None:
        total = products.matmul(e, values[..., -1:], xp=xp) if ones else xp.sum(e, axis=-1, keepdims=True)
        both = products.matmul(e * keep, values[..., :-1] if ones else values, xp=xp)
    else:
        both = products.matmul(e, values, xp=xp)
        both, total = (both[..., :-1], both[..., -1:]) if ones else (both, xp.sum(e, axis=-1, keepdims=True))
    if sink is not None:
        total = total + xp.exp(sink - top)
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


def softmax(y: Array, /, *, xp: Any, sink: Array | None = None) -> Array:
    """Row softmax of ``y``; an all ``-inf`` row is zero. With a ``sink`` logit, the weights of ``y``'s keys in
    the softmax of ``[y, sink]`` (:func:`with_sink`)."""
    if sink is not None:
        return with_sink(y, sink, xp=xp)[0]
    e, s = lse.softmax_parts(y, axis=-1, xp=xp)
    return e / s


def with_sink(y: Array, sink: Array, /, *, xp: Any) -> tuple[Array, Array]:
    """The row softmax of ``[y, sink]`` in two parts: the weights of ``y``'s keys and the sink's ``(..., rows, 1)``.

    The sink logit is finite, so no row is empty: a row whose keys are all hidden gives the sink all its weight.
    """
    top = xp.maximum(xp.max(y, axis=-1, keepdims=True), sink)
    e = xp.exp(y - top)
    own = xp.exp(sink - top)
    total = xp.sum(e, axis=-1, keepdims=True) + own
    return e / total, own / total


def log_softmax(y: Array, sink: Array | None, /, *, xp: Any) -> Array:
    """Stable ``log(softmax(y))`` over the last axis, the ``sink`` logit (if any) in the normalizer."""
    return lse.subtract(y, sinks.with_sink(lse.reduce(y, axis=-1, xp=xp), sink, xp=xp), xp=xp)


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
