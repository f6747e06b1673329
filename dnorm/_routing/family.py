"""What the routing layer does for the normalization family before any implementation runs.

Two of the family's options change the scores alone, the same way for every implementation, so they are applied
here, once, with the namespace's own operations (which autodiff differentiates, ``length_scale`` and ``bias``
included):

* ``length_scale`` (scalable softmax, spec DEF-LENGTH-SCALE): the queries of row ``i`` multiplied by ``s log
  n_i``, ``n_i`` the keys it may attend (``log 1 = 0``; a row that sees no key gets 0);
* ``bias`` (sigmoid attention, spec DEF-SIGMOID): added to the scores as a floating mask, by default ``-log
  n_i``.

The sink and ``alpha`` reach the implementations as :class:`dnorm._kernels.schemes.Parameters`.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

from .. import _validate as check
from .._kernels import budget, masks, schemes
from . import arrays

Array = Any


def counts(
    request: check.Request, mask: Array | None, n_queries: int, n_keys: int, like: Array, /, *, xp: Any
) -> Array:
    """``n_i``: the keys each query row may attend, ``(..., T, 1)`` (the causal triangle of the scheme included)."""
    offset = request.offset
    if offset is not None:
        how = schemes.plan(request.scheme, causal=True, n_iter=request.n_iter, attend_current=request.attend_current)
        offset -= int(how.strict)
    return masks.counts(mask, n_queries, n_keys, offset, like, xp=xp)


def scores_and_mask(
    query: Array, mask: Array | None, per_head: check.PerHead, request: check.Request, n_keys: int, /, *, xp: Any
) -> tuple[Array, Array | None]:
    """``query`` (or scores) with each row times ``length_scale * log n_i``, and the mask with the sigmoid's bias.

    ``mask`` is at least two-dimensional, floating masks in the compute dtype; the queries keep their dtype.
    """
    gated = check.described(request.scheme).rows == "gated"
    if per_head.length_scale is None and not gated:
        return query, mask
    work, _ = budget.compute_dtype(query.dtype, xp=xp)
    like = budget.cast(query[..., :1], work, xp=xp)
    n = counts(request, mask, query.shape[-2], n_keys, like, xp=xp)
    log_n = xp.log(xp.clip(n, min=1.0))
    if per_head.length_scale is not None:
        factor = length_factor(per_head.length_scale, n, like, xp=xp)
        query = budget.cast(budget.cast(query, work, xp=xp) * factor, query.dtype, xp=xp)
    if gated:
        bias = -log_n if per_head.bias is None else _per_head(per_head.bias, work, like, xp=xp)
        mask = bias if mask is None else masks.apply(xp.broadcast_to(bias, _both(bias, mask)), mask, xp=xp)
    return query, mask


def length_factor(length_scale: float | Array, n: Array, like: Array, /, *, xp: Any) -> Array:
    """``length_scale * log n_i`` (``log 1 = 0``, and 0 for a row that sees no key), ``n`` the keys each row may
    attend, in the dtype of ``like`` (spec DEF-LENGTH-SCALE)."""
    return _per_head(length_scale, like.dtype, like, xp=xp) * xp.log(xp.clip(n, min=1.0))


def row_bias(bias: float | Array | None, n: Array | None, like: Array, /, *, xp: Any) -> Array:
    """The sigmoid's bias of each row (spec DEF-SIGMOID): ``bias`` (a number or one per head), by default ``-log
    n_i`` of the keys ``n`` each row may attend, in the dtype of ``like``."""
    if bias is None:
        return -xp.log(xp.clip(n, min=1.0))
    return _per_head(bias, like.dtype, like, xp=xp)


def parameters(per_head: check.PerHead, dtype: Any, like: Array, /, *, xp: Any) -> schemes.Parameters:
    """``alpha`` and the sink as arrays of the compute dtype broadcasting over ``(..., T, K)``."""
    sink = None if per_head.sink is None else _per_head(per_head.sink, dtype, like, xp=xp)
    return schemes.Parameters(arrays.alpha(per_head.alpha, dtype, like, xp=xp), sink)


def _per_head(value: float | Array, dtype: Any, like: Array, /, *, xp: Any) -> Array:
    """A number, or an array over the leading dims, as an array of ``dtype`` broadcasting over ``(..., T, K)``."""
    if isinstance(value, Real):
        return xp.reshape(xp.asarray(float(value), dtype=dtype, device=getattr(like, "device", None)), (1, 1))
    return arrays.alpha(value, dtype, like, xp=xp)


def _both(a: Array, b: Array, /) -> tuple[int, ...]:
    """The broadcast shape of two arrays."""
    ndim = max(a.ndim, b.ndim)
    shapes = [(1,) * (ndim - x.ndim) + tuple(x.shape) for x in (a, b)]
    return tuple(max(x, y) for x, y in zip(*shapes, strict=True))
