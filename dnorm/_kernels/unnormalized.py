"""Rows that need not sum to one: sigmoid attention and stick-breaking attention, one block of rows at a time.

* ``"gated"`` (spec DEF-SIGMOID): ``A_ij = sigmoid(S_ij)``, each key weighed alone (the bias ``b`` is already
  in the scores: the routing layer adds it as a floating mask).
* ``"sticks"`` (spec DEF-STICK-BREAKING): with ``beta = sigmoid(S)``, ``log A_ij = log beta_ij + sum_(k > j)
  log(1 - beta_ik)`` over the keys the row sees: the nearest key takes ``beta`` of the stick, the next ``beta`` of
  what is left. The sum is a reverse cumulative sum along the keys of the block's rows, which hold every key they
  see: no ``(T, K)`` array beyond the block.

A hidden pair's score is ``-inf``: weight 0, and ``log(1 - beta) = 0``, so it breaks nothing off the stick.
"""

from __future__ import annotations

from typing import Any

from .schemes import Rows

Array = Any


def log_sigmoid(x: Array, /, *, xp: Any) -> Array:
    """``log(sigmoid(x))`` without overflow: ``min(x, 0) - log1p(exp(-|x|))``; ``-inf`` at ``-inf``, 0 at ``inf``."""
    return xp.clip(x, max=0.0) - xp.log1p(xp.exp(-xp.abs(x)))


def weights(block: Array, rows: Rows, /, *, log: bool, xp: Any) -> Array:
    """The weights (``log``: log-weights) of a block of rows under ``rows``."""
    if rows == "gated":
        logs = log_sigmoid(block, xp=xp)
    else:
        logs = log_sigmoid(block, xp=xp) + _later(log_sigmoid(-block, xp=xp), xp=xp)
    return logs if log else xp.exp(logs)


def scores_gradient(block: Array, rows: Rows, d_weights: Array, /, *, xp: Any) -> tuple[Array, Array]:
    """``(dS, A)``: the gradient of the block's scores from that of its weights ``dA``, and the weights.

    Sigmoid: ``dS = dA A (1 - A)``. Stick-breaking (spec THM-STICK-BREAKING-GRADIENT): with ``G = A dA``,
    ``dS_ij = G_ij (1 - beta_ij) - beta_ij sum_(j' < j) G_ij'``, the sum over the keys farther from the query.
    """
    a = weights(block, rows, log=False, xp=xp)
    if rows == "gated":
        return d_weights * a * (1 - a), a
    g = a * d_weights
    total = xp.cumulative_sum(g, axis=-1)
    farther = xp.concat((xp.zeros_like(total[..., :1]), total[..., :-1]), axis=-1)
    return g * xp.exp(log_sigmoid(-block, xp=xp)) - xp.exp(log_sigmoid(block, xp=xp)) * farther, a


def _later(x: Array, /, *, xp: Any) -> Array:
    """``sum_(k > j) x_k`` along the last axis: the reverse cumulative sum, shifted by one key."""
    total = xp.flip(xp.cumulative_sum(xp.flip(x, axis=-1), axis=-1), axis=-1)
    return xp.concat((total[..., 1:], xp.zeros_like(total[..., :1])), axis=-1)
