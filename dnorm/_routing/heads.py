"""Grouped-query attention: query heads in groups that share one key/value head, without copying keys and values.

With ``Hq = G * H`` query heads over ``H`` key/value heads (axis -3), the
queries are viewed as ``(..., H, G, T, D)`` and the keys and values as
``(..., H, 1, K, D)``: every kernel broadcasts over leading axes, so each key
head serves its ``G`` query heads, and every per-query-head statistic (the
column statistic of doubly is one per query head) keeps its own row.
"""

from __future__ import annotations

from typing import Any

Array = Any


def group(x: Array | None, heads: int, groups: int, /, *, xp: Any) -> Array | None:
    """``x``, whose axis -3 is the query heads (or 1, or absent), with that axis split as ``(heads, groups)``."""
    if x is None or x.ndim < 3:
        return x
    if x.shape[-3] == 1:
        return xp.expand_dims(x, axis=-3)
    return xp.reshape(x, (*x.shape[:-3], heads, groups, *x.shape[-2:]))


def share(x: Array | None, /, *, xp: Any) -> Array | None:
    """Key or value heads ``(..., H, K, D)`` as ``(..., H, 1, K, D)``: one head for a group of query heads (an
    absent key mask stays None)."""
    return None if x is None else xp.expand_dims(x, axis=-3)


def ungroup(x: Array, /, *, xp: Any) -> Array:
    """``(..., H, G, T, Dv)`` back to ``(..., H * G, T, Dv)``."""
    return xp.reshape(x, (*x.shape[:-4], x.shape[-4] * x.shape[-3], *x.shape[-2:]))


def split(
    per_query_head: tuple[Any, ...], per_key_head: tuple[Any, ...], groups: int, /, *, xp: Any
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Arrays over the query heads grouped with :func:`group`, key/value heads shared; unchanged for ``groups == 1``.

    The key heads are axis -3 of ``per_key_head[0]``.
    """
    if groups == 1:
        return per_query_head, per_key_head
    kv_heads = per_key_head[0].shape[-3]
    return tuple(group(x, kv_heads, groups, xp=xp) for x in per_query_head), tuple(
        share(x, xp=xp) for x in per_key_head
    )


def merge(x: Array, groups: int, /, *, xp: Any) -> Array:
    """:func:`ungroup` for ``groups > 1``; ``x`` itself otherwise."""
    return x if groups == 1 else ungroup(x, xp=xp)
