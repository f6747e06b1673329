"""Masks for dnorm's functions (spec masks.md): what a mask allows, its additive form, and padding queries.

Masks follow torch's ``scaled_dot_product_attention``: a boolean mask is True
where a query may attend a key, a floating mask is added to the scores (its
``-inf`` entries hide a pair). Every function takes arrays of any array-API
library and returns arrays of the same one.

Padding queries (spec DEF-PADDING-QUERIES): under ``"doubly"``, ``"hybrid"``
and ``"sinkhorn"`` each key is normalized over the query rows, so in
self-attention a padding position must be hidden as a query too, or the real
rows' results depend on the padding of their batch. :func:`hide_queries`
hides given positions' rows; :func:`unseen_keys` finds the positions a mask
already hides as keys from every query, which is how a padding mask that
hides keys only marks the padding:

>>> import numpy as np
>>> from dnorm import masks
>>> keys_only = np.array([[True, True, False]] * 3)  # position 2 is padding
>>> masks.hide_queries(keys_only, masks.unseen_keys(keys_only))
array([[ True,  True, False],
       [ True,  True, False],
       [False, False, False]])
"""

from __future__ import annotations

from typing import Any

from . import _validate as check
from ._kernels import masks as kernel

Array = Any

__all__ = ["additive", "allowed", "combine", "hide_queries", "unseen_keys"]


def allowed(mask: Array, /) -> Array:
    """Boolean, True where ``mask`` lets a query attend a key (a floating mask: where it is not ``-inf``).

    Raises
    ------
    TypeError
        For an array that is neither boolean nor real floating.
    """
    xp = _checked(mask=mask)
    return kernel.allowed(mask, xp=xp)


def additive(mask: Array, /, *, dtype: Any = None) -> Array:
    """The floating form of ``mask``: 0 where a boolean mask allows a pair, ``-inf`` elsewhere; a floating mask as is.

    ``dtype`` (a real floating dtype of the mask's library) defaults to
    that of a floating mask, float32 for a boolean one.
    """
    xp = _checked(mask=mask)
    if dtype is None:
        dtype = xp.float32 if kernel.is_boolean(mask, xp=xp) else mask.dtype
    return kernel.additive(mask, dtype, xp=xp)


def combine(*masks: Array, dtype: Any = None) -> Array | None:
    """One mask that allows a pair where every one of ``masks`` does (None for none): boolean if all are.

    Masks of different kinds are added in their additive forms, in ``dtype``
    (default: the first floating mask's).
    """
    if not masks:
        return None
    xp = _checked(**{f"masks[{i}]": m for i, m in enumerate(masks)})
    if dtype is None:
        dtype = next((m.dtype for m in masks if not kernel.is_boolean(m, xp=xp)), xp.float32)
    return kernel.combine(list(masks), dtype, xp=xp)


def unseen_keys(mask: Array, /) -> Array:
    """Boolean ``(..., K)``: the keys that ``mask`` (``(..., T, K)``) hides from every query."""
    xp = _checked(mask=mask)
    if mask.ndim < 2:
        msg = f"mask must have at least two dimensions (..., T, K), got shape {tuple(mask.shape)}"
        raise ValueError(msg)
    return kernel.unseen_keys(mask, xp=xp)


def hide_queries(mask: Array, positions: Array, /) -> Array:
    """``mask`` (``(..., T, T)``, self-attention) with the query rows of ``positions`` (boolean ``(..., T)``) hidden.

    The rows become all hidden (boolean False, floating ``-inf``): those
    queries get zero outputs and enter no key's column statistic.

    Raises
    ------
    TypeError
        For a mask neither boolean nor floating, or ``positions`` not boolean.
    ValueError
        For a mask that is not square in its last two axes.
    """
    xp = _checked(mask=mask, positions=positions)
    if not kernel.is_boolean(positions, xp=xp):
        msg = f"positions must be boolean (True = a padding position), got {positions.dtype}"
        raise TypeError(msg)
    if mask.ndim < 2 or mask.shape[-1] != mask.shape[-2]:
        msg = f"mask must be square in its last two axes (self-attention, T == K), got shape {tuple(mask.shape)}"
        raise ValueError(msg)
    return kernel.hide_queries(mask, positions, xp=xp)


def _checked(**arrays: Array) -> Any:
    xp = check.namespace(**arrays)
    for name, x in arrays.items():
        if name != "positions":
            check.mask(x, tuple(x.shape), name=name, xp=xp)
    return xp
