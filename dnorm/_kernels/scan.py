"""Inclusive scans along the query axis, in two levels (spec DEF-TWO-LEVEL-SCAN).

The strictly causal statistic is a running log-sum-exp down the queries and
its gradient a running linear recurrence up them.  Both are scans of an
associative ``combine`` over the rows of ``(..., n, K)`` arrays, with a carry
from the rows before (or, in reverse, after) the block.

The rows are cut into ``g`` chunks of ``c ~ sqrt(n)`` rows (a power of two).  The scan runs
sequentially inside all chunks at once (``c`` steps on ``(..., g, K)``
slices), then sequentially over the chunk totals (``g`` steps on
``(..., K)``), and the exclusive prefix of each chunk is combined into its
rows: about three ``combine`` per entry and ``2 sqrt(n)`` array operations,
where a log-depth (Hillis-Steele) scan needs ``log2(n)`` per entry.  Row ``i``
is combined only with rows before it (after it, in reverse), in an order fixed
by ``n``, so its value does not depend on the other rows' values, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._device import device_of

Array = Any
Elements = tuple[Array, ...]
Combine = Callable[..., Elements]


def scan(
    elements: Elements,
    combine: Combine,
    /,
    *,
    identity: tuple[float, ...],
    carry: Elements | None,
    reverse: bool,
    xp: Any,
) -> Elements:
    """``out_i = carry + e_0 + ... + e_i`` along axis -2 (``reverse``: ``carry + e_{n-1} + ... + e_i``).

    ``elements`` are arrays of one shape ``(..., n, K)``; ``combine(acc, e,
    xp=xp)`` appends the element ``e`` to the accumulated ``acc``, and ``identity``
    holds each component's neutral value.  ``carry`` has shape ``(..., 1,
    K)`` (the accumulation of everything before the block) or is None.
    """
    n = elements[0].shape[-2]
    if n == 1:  # one row (a decoding step): the carry and the row
        return elements if carry is None else combine(carry, elements, xp=xp)
    size = _chunk(n)
    groups = -(-n // size)
    padded = tuple(
        _pad_rows(e, groups * size - n, fill, at_end=not reverse, xp=xp)
        for e, fill in zip(elements, identity, strict=True)
    )
    chunked = tuple(xp.reshape(e, (*e.shape[:-2], groups, size, e.shape[-1])) for e in padded)
    order = range(size - 1, -1, -1) if reverse else range(size)
    local: list[Elements] = []
    for t in order:
        step = tuple(e[..., t, :] for e in chunked)
        local.append(step if not local else combine(local[-1], step, xp=xp))
    if reverse:
        local.reverse()
    totals = local[0] if reverse else local[-1]
    chunk_order = range(groups - 1, -1, -1) if reverse else range(groups)
    before: list[Elements] = []
    acc = carry
    for g in chunk_order:
        before.append(_broadcast_identity(acc, totals, identity, g, xp=xp))
        total = tuple(part[..., g : g + 1, :] for part in totals)
        acc = total if acc is None else combine(acc, total, xp=xp)
    if reverse:
        before.reverse()
    prefix = tuple(xp.concat([b[k] for b in before], axis=-2)[..., None, :] for k in range(len(elements)))
    inside = tuple(xp.stack([step[k] for step in local], axis=-2) for k in range(len(elements)))
    combined = combine(prefix, inside, xp=xp)
    out = tuple(xp.reshape(part, (*part.shape[:-3], groups * size, part.shape[-1])) for part in combined)
    if groups * size == n:
        return out
    return tuple(part[..., groups * size - n :, :] if reverse else part[..., :n, :] for part in out)


def _chunk(n: int, /) -> int:
    """About ``sqrt(n)``, a power of two: found by comparisons, which a compiler tracing a symbolic ``n`` can guard.

    (The loops over the chunks still unroll per length.)
    """
    size = 1
    while 4 * size * size <= n:
        size *= 2
    return size


def _broadcast_identity(
    acc: Elements | None, like: Elements, identity: tuple[float, ...], g: int, /, *, xp: Any
) -> Elements:
    """``acc`` (shape ``(..., 1, K)``), or the identity shaped like one chunk total when there is nothing yet."""
    if acc is not None:
        return acc
    return tuple(xp.full_like(part[..., g : g + 1, :], fill) for part, fill in zip(like, identity, strict=True))


def _pad_rows(a: Array, count: int, fill: float, /, *, at_end: bool, xp: Any) -> Array:
    """``a`` with ``count`` rows of ``fill`` added after its rows (``at_end``) or before them."""
    if count == 0:
        return a
    pad = xp.full((*a.shape[:-2], count, a.shape[-1]), fill, dtype=a.dtype, device=device_of(a))
    return xp.concat((a, pad) if at_end else (pad, a), axis=-2)
