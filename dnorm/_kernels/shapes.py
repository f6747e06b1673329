"""Shape helpers shared by the kernels and the fast paths: padding along one axis, and summing broadcast axes."""

from __future__ import annotations

from typing import Any

from ._device import device_of

Array = Any


def pad(x: Array, size: int, fill: float, /, *, axis: int, xp: Any, before: bool = False) -> Array:
    """``x`` completed with ``fill`` along ``axis`` (negative) up to ``size`` entries, after them or ``before``.

    ``x`` itself when nothing is missing.
    """
    missing = size - x.shape[axis]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[axis] = missing
    filler = xp.full(tuple(shape), fill, dtype=x.dtype, device=device_of(x))
    return xp.concat((filler, x) if before else (x, filler), axis=axis)


def sum_to(x: Array, shape: tuple[int, ...], /, *, xp: Any) -> Array:
    """``x`` summed over the axes that broadcasting ``shape`` to ``x.shape`` added or stretched.

    The gradient of an input that was broadcast: its shape again.
    """
    extra = x.ndim - len(shape)
    if extra:
        x = xp.sum(x, axis=tuple(range(extra)))
    axes = tuple(i for i, (n, m) in enumerate(zip(shape, x.shape, strict=True)) if n == 1 and m != 1)
    return xp.sum(x, axis=axes, keepdims=True) if axes else x
