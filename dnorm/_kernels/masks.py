"""Masks, one definition each (spec masks.md): which pairs are allowed, applying a mask, the additive form.

Masks follow torch's ``scaled_dot_product_attention``: a boolean mask is True
where a query may attend a key; a floating mask is added to the scores, and
its ``-inf`` entries are the pairs it hides.

Padding queries (spec DEF-PADDING-QUERIES): under every scheme but softmax a
query row takes part in every key's column statistic, so in self-attention a
padding position must be hidden as a query as well as a key, or the real rows
depend on the padding. :func:`hide_queries` does that for given positions, and
:func:`unseen_keys` finds the positions a mask hides as keys from every query.
"""

from __future__ import annotations

from typing import Any

from ._device import device_of

Array = Any


def is_boolean(mask: Array, /, *, xp: Any) -> bool:
    return bool(xp.isdtype(mask.dtype, "bool"))


def allowed(mask: Array, /, *, xp: Any) -> Array:
    """Boolean, True where ``mask`` lets a query attend a key."""
    return mask if is_boolean(mask, xp=xp) else mask != -xp.inf


def apply(scores: Array, mask: Array | None, /, *, xp: Any) -> Array:
    """``scores`` (finite, or ``-inf``) with ``mask`` applied: hidden pairs ``-inf``, a floating mask added."""
    if mask is None:
        return scores
    if is_boolean(mask, xp=xp):
        return xp.where(mask, scores, -xp.inf)
    return scores + mask


def additive(mask: Array | None, dtype: Any, /, *, xp: Any) -> Array | None:
    """The floating form of ``mask`` in ``dtype``: 0 where allowed and ``-inf`` elsewhere for a boolean mask."""
    if mask is None:
        return None
    if is_boolean(mask, xp=xp):
        zeros = xp.zeros(mask.shape, dtype=dtype, device=getattr(mask, "device", None))
        return xp.where(mask, zeros, -xp.inf)
    return mask if mask.dtype == dtype else xp.astype(mask, dtype)


def combine(masks: list[Array], dtype: Any, /, *, xp: Any) -> Array | None:
    """One mask that allows a pair only where every mask does: boolean if all are, else additive in ``dtype``."""
    if not masks:
        return None
    if all(is_boolean(m, xp=xp) for m in masks):
        merged = masks[0]
        for more in masks[1:]:
            merged = merged & more
        return merged
    total: Array = additive(masks[0], dtype, xp=xp)
    for more in masks[1:]:
        total = total + additive(more, dtype, xp=xp)
    return total


def unseen_keys(mask: Array, /, *, xp: Any) -> Array:
    """Boolean ``(..., K)``: the keys that ``mask`` (``(..., T, K)``) hides from every query."""
    return ~xp.any(allowed(mask, xp=xp), axis=-2)


def hide_queries(mask: Array, positions: Array, /, *, xp: Any) -> Array:
    """``mask`` (``(..., T, T)``, self-attention) with the query rows of ``positions`` (boolean ``(..., T)``) hidden.

    The rows become all hidden (boolean False, floating ``-inf``); their
    outputs are zero and they enter no column statistic.
    """
    rows = positions[..., :, None]
    if is_boolean(mask, xp=xp):
        return mask & ~rows
    return xp.where(rows, -xp.inf, mask)


def counts(mask: Array | None, n_queries: int, n_keys: int, offset: int | None, like: Array, /, *, xp: Any) -> Array:
    """``n_i``, how many keys each query may attend, ``(..., T, 1)`` in ``like``'s dtype (spec DEF-LENGTH-SCALE).

    The keys ``mask`` allows (``-inf`` entries of a floating mask hide theirs) and, with a causal ``offset``, the
    keys ``j <= i + offset``: each row counts its own, so a causal row reads nothing after its position.
    """
    dev = device_of(like)
    if offset is not None:
        rows = xp.arange(n_queries, dtype=like.dtype, device=dev)[:, None]
        if mask is None:
            return xp.clip(rows + (offset + 1), min=0.0, max=float(n_keys))
        seen = xp.arange(n_keys, dtype=like.dtype, device=dev)[None, :] <= rows + offset
        return xp.sum(xp.astype(allowed(mask, xp=xp) & seen, like.dtype), axis=-1, keepdims=True)
    if mask is None:
        return xp.full((1, 1), float(n_keys), dtype=like.dtype, device=dev)
    every = xp.broadcast_to(allowed(mask, xp=xp), (*mask.shape[:-2], mask.shape[-2], n_keys))
    return xp.sum(xp.astype(every, like.dtype), axis=-1, keepdims=True)
