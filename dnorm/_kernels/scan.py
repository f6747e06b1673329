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
where a log-depth (Hillis-Steele) scan needs ``log2(n)`` per entry.  With
``doubling`` (symbolic lengths: a tracing compiler) the chunk totals take a
doubling scan instead, so that every loop runs a number of times fixed by
comparisons of ``n`` with powers of two, and the compiler keeps one graph
between them.  Row ``i`` is combined only with rows before it (after it, in
reverse), in an order fixed by ``n``, so its value does not depend on the
other rows' values, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .shapes import pad

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
    doubling: bool = False,
    xp: Any,
) -> Elements:
    """``out_i = carry + e_0 + ... + e_i`` along axis -2 (``reverse``: ``carry + e_{n-1} + ... + e_i``).

    ``elements`` are arrays of one shape ``(..., n, K)``; ``combine(acc, e,
    xp=xp)`` appends the element ``e`` to the accumulated ``acc``, and ``identity``
    holds each component's neutral value.  ``carry`` has shape ``(..., 1,
    K)`` (the accumulation of everything before the block) or is None.
    ``doubling`` scans the chunk totals by doubling, for symbolic lengths
    (:func:`_doubling`).
    """
    n = elements[0].shape[-2]
    if n == 1:  # one row (a decoding step): the carry and the row
        return elements if carry is None else combine(carry, elements, xp=xp)
    size = _chunk(n)
    # symbolic lengths: at least one row of padding, so that no shape below equals n in some cases and not others
    groups = n // size + 1 if doubling else -(-n // size)
    padded = tuple(
        _pad_rows(e, groups * size, fill, at_end=not reverse, static=size + 1 if doubling else 0, xp=xp)
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
    exclusive = _doubling if doubling else _walk
    prefix = exclusive(totals, combine, identity, carry, reverse=reverse, xp=xp)
    inside = tuple(xp.stack([step[k] for step in local], axis=-2) for k in range(len(elements)))
    combined = combine(tuple(p[..., None, :] for p in prefix), inside, xp=xp)
    out = tuple(xp.reshape(part, (*part.shape[:-3], groups * size, part.shape[-1])) for part in combined)
    return tuple(part[..., groups * size - n :, :] if reverse else part[..., :n, :] for part in out)


def _walk(
    totals: Elements,
    combine: Combine,
    identity: tuple[float, ...],
    carry: Elements | None,
    /,
    *,
    reverse: bool,
    xp: Any,
) -> Elements:
    """Each chunk's exclusive prefix (``reverse``: suffix), one chunk after the other: ``g`` steps on ``(..., 1, K)``.

    The prefix of a chunk is ``carry`` and the totals of the chunks before it.
    """
    g = totals[0].shape[-2]
    before: list[Elements] = []
    acc = carry
    for i in range(g - 1, -1, -1) if reverse else range(g):
        total = tuple(part[..., i : i + 1, :] for part in totals)
        before.append(acc if acc is not None else _identity_like(total, identity, xp=xp))
        acc = total if acc is None else combine(acc, total, xp=xp)
    if reverse:
        before.reverse()
    return tuple(xp.concat([b[k] for b in before], axis=-2) for k in range(len(totals)))


def _doubling(
    totals: Elements,
    combine: Combine,
    identity: tuple[float, ...],
    carry: Elements | None,
    /,
    *,
    reverse: bool,
    xp: Any,
) -> Elements:
    """:func:`_walk` by doubling (Hillis-Steele) over ``carry`` (or the identity) and the totals.

    The ``g + 1`` rows are padded with the identity to ``P``, the power of
    two above ``g``: ``log2(P)`` steps on arrays of ``P`` rows, numbers that a
    compiler tracing a symbolic ``g`` guards by comparisons, where the walk
    would unroll, and recompile, once per ``g``.  More work than the walk
    (about ``P log2 P`` combines): for symbolic lengths only.
    """
    g = totals[0].shape[-2]
    rows = 2  # a power of two above g: every shape below is then a number, the same for every g up to it
    while rows <= g:
        rows *= 2
    first = carry if carry is not None else _identity_like(tuple(t[..., :1, :] for t in totals), identity, xp=xp)
    pairs = zip(totals, first, strict=True)
    acc = tuple(
        _pad_rows(
            xp.concat((part, one) if reverse else (one, part), axis=-2),
            rows,
            fill,
            at_end=not reverse,
            static=rows,
            xp=xp,
        )
        for (part, one), fill in zip(pairs, identity, strict=True)
    )
    shift = 1
    while shift < rows:  # the first (reverse: last) ``shift`` rows are complete; the others take ``shift`` rows more
        early = tuple(part[..., : rows - shift, :] for part in acc)
        late = tuple(part[..., shift:, :] for part in acc)
        if reverse:
            rest = combine(late, early, xp=xp)
            acc = tuple(
                xp.concat((r, part[..., rows - shift :, :]), axis=-2) for r, part in zip(rest, acc, strict=True)
            )
        else:
            rest = combine(early, late, xp=xp)
            acc = tuple(xp.concat((part[..., :shift, :], r), axis=-2) for r, part in zip(rest, acc, strict=True))
        shift *= 2
    return tuple(part[..., rows - g :, :] if reverse else part[..., :g, :] for part in acc)


def _identity_like(like: Elements, identity: tuple[float, ...], /, *, xp: Any) -> Elements:
    return tuple(xp.full_like(part, fill) for part, fill in zip(like, identity, strict=True))


def _chunk(n: int, /) -> int:
    """About ``sqrt(n)``, a power of two: found by comparisons, which a compiler tracing a symbolic ``n`` can guard.

    The loop inside the chunks then unrolls ``size`` times, the same for every length between two powers of 4.
    """
    size = 1
    while 4 * size * size <= n:
        size *= 2
    return size


def _pad_rows(a: Array, rows: int, fill: float, /, *, at_end: bool, static: int, xp: Any) -> Array:
    """``a`` completed with rows of ``fill`` after its rows (``at_end``) or before them, up to ``rows`` rows.

    ``static`` (symbolic lengths): the ``static`` rows of ``fill`` added are a number, and the result is cut to
    ``rows``: no shape then depends on how many rows are missing, and ``a`` is copied even when none are.
    """
    if not static:
        return pad(a, rows, fill, axis=-2, before=not at_end, xp=xp)
    whole = pad(a, a.shape[-2] + static, fill, axis=-2, before=not at_end, xp=xp)
    return whole[..., :rows, :] if at_end else whole[..., whole.shape[-2] - rows :, :]
