"""Array-API helpers of :mod:`dnorm.diagnostics`: visible keys, shares, least values, bounds.

``allowed`` is a boolean array of the scores' full shape ``(..., T, K)`` (or
None without a mask); every function works on any array-API namespace ``xp``.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

from . import _validate as check
from ._kernels import masks

Array = Any


def check_input(x: Array, name: str, mask: Array | None, /, *, xp: Any) -> None:
    """Scores or weights: real floating, ``(..., T, K)`` with ``K >= 1``, a mask that broadcasts."""
    check.floating(x, name, xp=xp)
    if x.shape[-1] == 0:
        msg = f"{name} must have at least one key (K >= 1), got shape {tuple(x.shape)}"
        raise ValueError(msg)
    check.mask(mask, tuple(x.shape), name="mask", xp=xp)


def threshold(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        msg = f"threshold must be a real number, got {type(value).__name__}"
        raise TypeError(msg)
    number = float(value)
    if not 0.0 <= number < float("inf"):
        msg = f"threshold must be finite and >= 0, got {value}"
        raise ValueError(msg)
    return number


def full_shape(shape: Sequence[int] | None, mask: Array | None, /, *, xp: Any) -> tuple[int, ...]:
    """The scores' shape: ``shape`` checked against the mask, or the mask's own shape."""
    if shape is None:
        if mask is None:
            msg = "mass_lower_bound needs shape or mask"
            raise ValueError(msg)
        full = tuple(mask.shape)
    else:
        if isinstance(shape, str | bytes) or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
            msg = f"shape must be a sequence of integers, got {shape!r}"
            raise TypeError(msg)
        full = tuple(shape)
        check.mask(mask, full, name="mask", xp=xp)
    if len(full) < 2 or min(full) < 0:
        msg = f"shape (or the mask's shape) must have at least two non-negative sizes (..., T, K), got {full}"
        raise ValueError(msg)
    return full


def allowed_pairs(mask: Array | None, shape: tuple[int, ...], /, *, xp: Any) -> Array | None:
    """The boolean allowed pairs of ``mask`` broadcast to ``shape``; None without a mask."""
    if mask is None:
        return None
    return xp.broadcast_to(masks.allowed(mask, xp=xp), shape)


def visible(allowed: Array | None, /, *, xp: Any) -> Array | None:
    return None if allowed is None else xp.any(allowed, axis=-2)


def least(values: Array, seen: Array | None, /, *, xp: Any) -> Array:
    """Minimum over the visible keys ``seen`` of ``(..., K)`` values, ``+inf`` where none is visible."""
    return xp.min(values if seen is None else xp.where(seen, values, xp.inf), axis=-1)


def share(mass: Array, allowed: Array | None, limit: float, /, *, n_queries: int, xp: Any) -> Array:
    """Share of the visible keys whose mass is below ``limit`` times the mean mass (``K >= 1``); NaN masses give NaN."""
    if allowed is None:
        n_keys = mass.shape[-1]
        low = mass < limit * n_queries / n_keys
        count: Array | int = n_keys
    else:
        seen = xp.any(allowed, axis=-2)
        active = xp.sum(xp.astype(xp.any(allowed, axis=-1), mass.dtype), axis=-1)
        count = xp.sum(xp.astype(seen, mass.dtype), axis=-1)
        count = xp.where(count > 0, count, xp.ones_like(count))
        low = xp.logical_and(seen, mass < limit * (active / count)[..., None])
    result = xp.sum(xp.astype(low, mass.dtype), axis=-1) / count
    return xp.where(xp.any(xp.isnan(mass), axis=-1), xp.nan, result)


def key_bound(
    scheme: str,
    shape: tuple[int, ...],
    allowed: Array | None,
    alpha: Array,
    /,
    *,
    dtype: Any,
    device: Any,
    xp: Any,
    sink: bool = False,
) -> Array:
    """Per-key guaranteed mass ``(..., K)`` for scores of ``shape`` (see :func:`dnorm.diagnostics.mass_lower_bound`);
    ``sink``: with a sink, one more key in every row (spec THM-SINK-MASS-BOUND)."""
    lead, (n_queries, n_keys) = shape[:-2], shape[-2:]
    guarantee = check.described(scheme).bound  # spec THM-MASS-LOWER-BOUND-MASKED, THM-HYBRID-MASS-BOUND
    if guarantee is None or n_queries == 0:
        return xp.zeros((*lead, n_keys), dtype=dtype, device=device)
    extra = 1.0 if sink else 0.0
    if allowed is None:
        bound = xp.full((*lead, n_keys), 1.0 / (max(n_keys, 1) + extra), dtype=dtype, device=device)
    else:
        per_query = xp.sum(xp.astype(allowed, dtype), axis=-1)
        widest = xp.max(xp.where(allowed, per_query[..., None], 0.0), axis=-2)
        bound = xp.where(widest > 0, 1.0 / (xp.where(widest > 0, widest, xp.ones_like(widest)) + extra), 0.0)
    if guarantee == "one":
        return bound
    if isinstance(alpha, Real):
        return float(alpha) * bound
    return xp.astype(xp.reshape(alpha, (*alpha.shape, 1)), dtype) * bound


def summary(
    mass: Array, allowed: Array | None, limit: float, bound: Array | None, /, *, n_queries: int, xp: Any
) -> tuple[Array, Array, Array | None]:
    """(explained-away share, least mass, least per-key bound) of ``(..., K)`` masses."""
    seen = visible(allowed, xp=xp)
    least_bound = None if bound is None else least(bound, seen, xp=xp)
    return share(mass, allowed, limit, n_queries=n_queries, xp=xp), least(mass, seen, xp=xp), least_bound


def sink_share(weights: Array, allowed: Array, /, *, xp: Any) -> Array:
    """The sink's mean weight ``1 - sum_j A_ij`` over the rows that see a key (spec DEF-SINK), ``(...)``."""
    active = xp.any(allowed, axis=-1)
    left = xp.where(active, 1.0 - xp.sum(weights, axis=-1), 0.0)
    count = xp.sum(xp.astype(active, weights.dtype), axis=-1)
    return xp.sum(left, axis=-1) / xp.where(count > 0, count, xp.ones_like(count))
