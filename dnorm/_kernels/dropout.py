"""Dropout on the attention weights from a counter-based hash: any block of the mask, on demand (spec DEF-DROPOUT).

The mask entry of head ``h``, query ``i`` and key ``j`` is a hash of
``(seed, h, i, j)``: every pass regenerates exactly the entries of its block,
so neither the forward nor the backward pass keeps a ``(T, K)`` mask, and the
chunked and materialized paths drop the same weights. The hash is Chris
Wellons' ``lowbias32`` integer mixer in 32-bit arithmetic that wraps on
overflow, written with the array API's integer operators (a logical right
shift is an arithmetic one with the sign bits cleared), so that every backend
draws the same mask from the same seed.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ._device import device_of

Array = Any

_MULTIPLIERS = (0x7FEB352D, 0x846CA68B - 2**32)  # lowbias32's, the second as a signed 32-bit integer
_GOLDEN = 0x9E3779B9 - 2**32  # separates the hashes of consecutive rows and heads


class Dropout(NamedTuple):
    """Drop each weight with probability ``p`` (keep it scaled by ``1 / (1 - p)``); ``seed`` a 32-bit integer array."""

    p: float
    seed: Array


def factor(
    drop: Dropout | None, start: int, stop: int, width: int, lead: tuple[int, ...], /, *, xp: Any, like: Array
) -> Array:
    """``M / (1 - p)`` for rows ``start:stop`` and the first ``width`` keys, shape ``(*lead, rows, width)``.

    None without dropout. ``lead`` are the block's leading dimensions, whose
    flat (row-major) index tells the heads apart; ``like`` gives the dtype
    and the device.
    """
    if drop is None:
        return None
    dev = device_of(like)
    keys = xp.arange(width, dtype=xp.int32, device=dev)[None, :]
    queries = xp.arange(start, stop, dtype=xp.int32, device=dev)[:, None]
    h = _mix(keys ^ drop.seed)
    h = _mix(h + _mix(queries) * _GOLDEN)  # (rows, width): shared by every head
    if lead:
        heads = xp.reshape(xp.arange(math.prod(lead), dtype=xp.int32, device=dev), (*lead, 1, 1))
        h = _mix(h ^ (_mix(heads + 1) * _GOLDEN))
    threshold = min(round(drop.p * 2**31), 2**31 - 1)
    kept = (h & 0x7FFFFFFF) >= threshold
    return xp.astype(kept, like.dtype) * (1.0 / (1.0 - drop.p))


def _mix(x: Array, /) -> Array:
    """``lowbias32``: a bijection of 32-bit integers whose every output bit depends on every input bit."""
    x = x ^ _shift_right(x, 16)
    x = x * _MULTIPLIERS[0]
    x = x ^ _shift_right(x, 15)
    x = x * _MULTIPLIERS[1]
    return x ^ _shift_right(x, 16)


def _shift_right(x: Array, bits: int, /) -> Array:
    """The logical right shift of 32-bit integers, from the arithmetic one."""
    return (x >> bits) & ((1 << (32 - bits)) - 1)
