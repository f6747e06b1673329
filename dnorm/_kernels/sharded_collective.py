"""The collectives of a sharded call beside its sweeps: the keys every participant gathers (the all-gather
strategy), a per-key statistic merged over the participants, and the keys each row may attend over the whole
sequence (the family's counts)."""

from __future__ import annotations

from typing import Any

from . import logsumexp as lse
from ._device import device_of
from .ring import Ring, Turn, sweep

Array = Any


def every_key(key: Array, value: Array, key_mask: Array | None, options: Any, /) -> tuple[Array, Array, Array | None]:
    """Under the all-gather strategy every participant's keys, values and key mask, in the order of their places
    (one all-gather each); this participant's otherwise."""
    if not options.gathered:
        return key, value, key_mask
    ring = options.ring
    return ring.gather(key, -2), ring.gather(value, -2), None if key_mask is None else ring.gather(key_mask, -1)


def merged_over_participants(stat: lse.LogSumExp, options: Any, /, *, xp: Any) -> lse.LogSumExp:
    """A per-key statistic of every participant's queries from each one's (all-gather strategy): the largest
    maximum, then the sum of the sums rescaled to it (two all-reduces of the statistic's size)."""
    top = options.ring.largest(stat.max)
    return lse.LogSumExp(top, options.ring.total(stat.sum * xp.exp(stat.max - lse.finite(top, xp=xp))))


def counts(query: Array, key_mask: Array | None, n_keys: int, /, *, ring: Ring, causal: bool, xp: Any) -> Array:
    """``n_i``: the keys of the whole sequence each of this participant's queries may attend (spec
    DEF-LENGTH-SCALE), ``(..., T_local, 1)`` in the dtype of ``query``.

    ``key_mask`` is the participants' boolean ``(..., 1, 1, K_local)`` key padding mask: the count of its allowed
    keys is collected by a sweep of the masks (one number per row travels nowhere: each participant adds the
    blocks it is shown). Under causal, the own block counts its keys up to each row (the top-left triangle) and
    an earlier block all of its keys; without a mask the count is the position in the whole sequence, plus one.
    """
    dtype, device = query.dtype, device_of(query)
    if key_mask is None:
        if not causal:
            return xp.full((1, 1), float(n_keys * ring.size), dtype=dtype, device=device)
        rows = xp.arange(1, query.shape[-2] + 1, dtype=dtype, device=device)[:, None]
        return rows + ring.rank() * n_keys
    total = [xp.zeros((1, 1), dtype=dtype, device=device)]

    def visit(turn: Turn, read: tuple[Array, ...], added: tuple[Array, ...]) -> tuple[Array, ...]:
        allowed = xp.astype(read[0], dtype)
        if causal and turn.own:
            seen = xp.cumulative_sum(allowed, axis=-1)
            total[0] = total[0] + xp.reshape(seen, (*seen.shape[:-2], seen.shape[-1], 1))
        elif not causal or turn.earlier is True:
            total[0] = total[0] + xp.sum(allowed, axis=-1, keepdims=True)
        elif turn.earlier is not False:  # the participant's place is traced
            total[0] = total[0] + xp.sum(allowed, axis=-1, keepdims=True) * xp.astype(turn.earlier, dtype)
        return added

    sweep(ring, (key_mask,), (), visit)
    return total[0]
