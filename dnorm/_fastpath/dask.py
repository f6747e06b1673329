"""Dask fast path: attention chunk by chunk of the leading axes, each chunk computed by the kernels of its own library.

Attention is independent across the leading (batch, head) axes. When the
sequence and feature axes of every input are one chunk each, the Dask graph is
one task per chunk of the leading axes (``dask.array.blockwise``, which
aligns and broadcasts the chunks), and each task is :func:`dnorm.attention`
on that chunk's NumPy (or CuPy) arrays: no block of rows ever becomes a Dask
task. Other layouts (queries or keys chunked along the sequence, grouped
heads) take the array-API kernels on Dask arrays themselves, whose blocks
follow the chunks (:func:`dnorm._dispatch.task_lead`).
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import dask.array as da
from dask.array.utils import meta_from_array

Array = Any

__all__ = ["attention", "supported"]

#: Index letters of the leading axes in ``blockwise``; the trailing ones are t (queries), k (keys), d, e (features).
_LEAD = "ABCFGHIJLMNOPQRSUVWXYZ"


def supported(query: Array, key: Array, value: Array, mask: Array | None, alpha: object, /, *, groups: int) -> bool:
    """Whether every array's last two axes are one chunk (and the heads are not grouped)."""
    arrays = [x for x in (query, key, value, mask, alpha) if isinstance(x, da.Array)]
    if groups != 1 or len(arrays) < 3 or max(x.ndim for x in arrays) - 2 > len(_LEAD):
        return False
    return all(x.ndim < 2 or x.numblocks[-2:] == (1, 1) for x in (query, key, value, mask) if x is not None)


def attention(
    query: Array, key: Array, value: Array, mask: Array | None, alpha: Any, /, scheme: str, **options: Any
) -> Array:
    """:func:`dnorm.attention` of every chunk of the leading axes, as one ``blockwise`` task each."""
    from .._api import attention as attend

    lead = max(query.ndim, key.ndim, value.ndim, 2 if mask is None else mask.ndim) - 2  # alpha broadcasts to it
    letters = _LEAD[:lead]

    def index(x: Array, trailing: str) -> str:
        return letters[lead - (x.ndim - len(trailing)) :] + trailing

    pairs: list[Any] = [query, index(query, "td"), key, index(key, "kd"), value, index(value, "ke")]
    names = ["query", "key", "value"]
    if mask is not None:
        pairs += [mask, index(mask, "tk"[2 - min(mask.ndim, 2) :])]
        names.append("mask")
    array_alpha = not isinstance(alpha, Real)  # else a Dask array, as the namespace check made sure
    if array_alpha:
        pairs += [alpha, index(alpha, "")]
        names.append("alpha")

    def chunk(*arrays: Array) -> Array:
        given = dict(zip(names, arrays, strict=True))
        extra = {"mask": given.get("mask"), "alpha": given["alpha"] if array_alpha else alpha}
        return attend(given["query"], given["key"], given["value"], scheme, **extra, **options)

    meta = meta_from_array(query, ndim=lead + 2)  # NumPy or CuPy chunks: the output's are of the same kind
    return da.blockwise(
        chunk, letters + "te", *pairs, dtype=query.dtype, meta=meta, align_arrays=True, concatenate=True
    )
