"""Which positions of a sharded sequence each participant holds (spec DEF-ZIGZAG-LAYOUT).

``"contiguous"``: participant ``r`` of ``P`` holds the ``r``-th of ``P`` equal
parts. ``"zigzag"``: the sequence is cut into ``2P`` equal chunks and
participant ``r`` holds chunks ``r`` and ``2P - 1 - r``, in that order (the
head-tail split of torch's ``context_parallel`` and Megatron): under causal
attention every participant then meets the same number of score blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Array = Any

LAYOUTS = ("contiguous", "zigzag")


def chunks(rank: int, size: int, layout: str, /) -> tuple[int, ...]:
    """The chunks participant ``rank`` holds, in its order: of ``size`` chunks (contiguous) or ``2 * size``."""
    return (rank,) if layout == "contiguous" else (rank, 2 * size - 1 - rank)


def parts(size: int, layout: str, /) -> int:
    """How many equal chunks the sequence is cut into."""
    return size if layout == "contiguous" else 2 * size


def shard(x: Array, /, *, rank: int, size: int, layout: str, axis: int, xp: Any) -> Array:
    """Participant ``rank``'s positions of the whole ``x`` along ``axis`` (its length a multiple of the chunks)."""
    n = x.shape[axis] // parts(size, layout)
    pieces = [_take(x, c * n, (c + 1) * n, axis) for c in chunks(rank, size, layout)]
    return pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=axis)


def unshard(pieces: Sequence[Array], /, *, layout: str, axis: int, xp: Any) -> Array:
    """The whole array from every participant's positions (``pieces`` in the order of their places)."""
    size = len(pieces)
    if layout == "contiguous":
        return xp.concat(list(pieces), axis=axis)
    n = pieces[0].shape[axis] // 2
    halves = [(_take(x, 0, n, axis), _take(x, n, 2 * n, axis)) for x in pieces]
    order = [halves[r][0] for r in range(size)] + [halves[r][1] for r in range(size - 1, -1, -1)]
    return xp.concat(order, axis=axis)


def _take(x: Array, start: int, stop: int, axis: int, /) -> Array:
    index: list[Any] = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]
