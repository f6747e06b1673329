"""Dask fast path: attention chunk by chunk of the leading axes, each chunk computed by its own library's kernels.

Attention is independent across the leading (batch, head) axes. When the
sequence and feature axes of every input are one chunk each, the Dask graph is
one task per chunk of the leading axes (``dask.array.blockwise``, which
aligns and broadcasts the chunks), and each task runs the attention of that
chunk's NumPy (or CuPy) arrays: no block of rows ever becomes a Dask task.
Which implementation a chunk runs, the routing layer decides and hands in
(``chunk``). Other layouts (queries or keys chunked along the sequence,
grouped heads) take the array-API kernels on the Dask arrays themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask.array as da
from dask.array.utils import meta_from_array

Array = Any

__all__ = ["attention", "refuses"]

#: Index letters of the leading axes in ``blockwise``; the trailing ones are t (queries), k (keys), d, e (features).
_LEAD = "ABCFGHIJLMNOPQRSUVWXYZ"


def refuses(query: Array, key: Array, value: Array, mask: Array | None, /, *, groups: int) -> str | None:
    """Why the chunk-by-chunk path cannot take these arrays, or None: every array's last two axes one chunk."""
    inputs = (query, key, value) if mask is None else (query, key, value, mask)
    if not all(isinstance(x, da.Array) for x in inputs):
        return f"it takes Dask arrays, got {type(query).__module__}.{type(query).__name__}"
    if groups != 1:
        return "grouped-query heads (query heads a multiple of key heads) take the array-API kernels on Dask arrays"
    if max(x.ndim for x in inputs) - 2 > len(_LEAD):
        return f"it takes at most {len(_LEAD)} leading axes"
    for name, x in zip(("query", "key", "value", "mask"), inputs, strict=False):
        if x.numblocks[-2:] != (1, 1):
            return (
                f"the sequence and feature axes of every input must be one chunk each, but {name} has the chunks "
                f"{x.chunks[-2:]} there: rechunk with {{-2: -1, -1: -1}}, or take kernel='array-api'"
            )
    return None


def attention(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    alpha: Array,
    /,
    *,
    chunk: Callable[[Array, Array, Array, Array | None, Array], Array],
) -> Array:
    """``chunk(query, key, value, mask, alpha)`` of every chunk of the leading axes, as one ``blockwise`` task each.

    ``mask`` has at least two dimensions; ``alpha`` is a 0-d Dask array or
    one of shape ``(..., 1, 1)`` (a weight per leading index), whose chunks
    ``chunk`` receives in the same form.
    """
    n_lead = max(query.ndim, key.ndim, value.ndim, 2 if mask is None else mask.ndim) - 2  # alpha broadcasts to it
    letters = _LEAD[:n_lead]

    def index(x: Array, trailing: str) -> str:
        return letters[n_lead - (x.ndim - len(trailing)) :] + trailing

    pairs: list[Any] = [query, index(query, "td"), key, index(key, "kd"), value, index(value, "ke")]
    names = ["query", "key", "value"]
    if mask is not None:
        pairs += [mask, index(mask, "tk")]
        names.append("mask")
    per_index = alpha.ndim >= 2
    weights = alpha[..., 0, 0] if per_index else alpha
    pairs += [weights, index(weights, "")]
    names.append("alpha")

    def run(*arrays: Array) -> Array:
        given = dict(zip(names, arrays, strict=True))
        weight = given["alpha"][..., None, None] if per_index else given["alpha"]
        return chunk(given["query"], given["key"], given["value"], given.get("mask"), weight)

    meta = meta_from_array(query, ndim=n_lead + 2)  # NumPy or CuPy chunks: the output's are of the same kind
    return da.blockwise(run, letters + "te", *pairs, dtype=query.dtype, meta=meta, align_arrays=True, concatenate=True)
