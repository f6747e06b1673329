"""The backward pass through the running (strictly causal) column statistic (spec THM-CAUSAL-GRADIENT).

With ``C_i = logsumexp_{i' <= i} S_i'`` per key, the gradient of the scores
is ``dS = dZ - B * H``, ``B = exp(S - C)`` and ``H`` the reverse recurrence
``H_i = dZ_i + (1 - B_(i+1)) H_(i+1)``: a scan up the queries (spec
DEF-TWO-LEVEL-SCAN), carried from the last block of queries to the first.
"""

from __future__ import annotations

from typing import Any

from .scan import scan

Array = Any


def reverse_scan(dz: Array, b: Array, after: Array | None, /, *, doubling: bool, xp: Any) -> tuple[Array, Array]:
    """``H_i = dZ_i + (1 - B_(i+1)) H_(i+1)`` over the block's rows, and the carry for the block before.

    ``after`` is ``(1 - B) H`` at the first row of the block after (None for
    the last block), for at least this block's keys.
    """
    width = dz.shape[-1]
    ones = xp.ones_like(b[..., :1, :])
    a = xp.concat((1 - b[..., 1:, :], ones), axis=-2)
    carry = None if after is None else (xp.zeros_like(after[..., :width]), after[..., :width])
    _, h = scan((a, dz), compose, identity=(1.0, 0.0), carry=carry, reverse=True, doubling=doubling, xp=xp)
    return h, (1 - b[..., :1, :]) * h[..., :1, :]


def compose(later: tuple[Array, Array], step: tuple[Array, Array], /, *, xp: Any) -> tuple[Array, Array]:
    """The affine map ``h -> b + a h`` of ``step`` applied after the accumulated map ``later``."""
    a, b = step
    return a * later[0], b + a * later[1]
