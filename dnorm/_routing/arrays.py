"""The arrays every entry of the routing layer prepares the same way: the mask and ``alpha``."""

from __future__ import annotations

from numbers import Real
from typing import Any

from .._kernels import budget
from .._kernels._device import device_of

Array = Any


def mask(mask: Array | None, dtype: Any, /, *, xp: Any) -> Array | None:
    """The mask with at least two dimensions, floating masks in the compute dtype."""
    if mask is None:
        return None
    if mask.ndim < 2:
        mask = xp.reshape(mask, (1,) * (2 - mask.ndim) + tuple(mask.shape))
    return mask if xp.isdtype(mask.dtype, "bool") else budget.cast(mask, dtype, xp=xp)


def alpha(alpha: float | Array, dtype: Any, like: Array, /, *, xp: Any) -> Array:
    """``alpha`` as an array of the compute dtype, broadcasting over ``(..., T, K)``."""
    if isinstance(alpha, Real):
        return xp.asarray(float(alpha), dtype=dtype, device=device_of(like))
    array: Array = alpha
    return xp.reshape(budget.cast(array, dtype, xp=xp), (*array.shape, 1, 1))
