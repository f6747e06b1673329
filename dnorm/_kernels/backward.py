"""The backward pass of :func:`.blocked.attend`: gradients recomputed block by block (spec DEF-BLOCKED-BACKWARD).

The forward pass keeps the inputs, the output and O(T + K) statistics per head
(:class:`.blocked.Residuals`); every pass here recomputes one block of
``(..., block, K)`` scores at a time, so nothing of size ``(T, K)`` outlives a
block.  With ``dP = dO V^T``, ``delta_i = dO_i . O_i`` and the weights ``A`` of
a component, ``dZ = A * (dP - delta)`` is the gradient of its biased scores
``Y = S - c``; what the statistic adds (spec THM-DNAS-GRADIENT,
THM-SINKHORN-GRADIENT, THM-CAUSAL-GRADIENT):

* a statistic of the key alone (doubly, each Sinkhorn round): one more pass
  first, for ``gamma_j = sum_i dZ_ij = v_j . dV_j - sum_i A_ij delta_i``, then
  ``dS = dZ - B * gamma`` with ``B = exp(S - c)``; Sinkhorn's earlier rounds
  add one pass each, back through the row and column potentials;
* the running statistic (causal): ``dS = dZ - B * H`` with the reverse scan
  ``H_i = dZ_i + (1 - B_{i+1}) H_{i+1}``, carried from the last block to the
  first.

The gradients are those of ``S``; ``dq = dS K`` (for the scaled queries) and
``dk = dS^T q`` follow in the same pass, through the softcap's slope where
there is one (spec THM-SOFTCAP-GRADIENT). Dropout's factor ``R`` multiplies
``dP`` and the weights of ``dV``, and ``gamma`` keeps its form with the
``dV`` of the dropped weights (spec THM-DROPOUT-GRADIENT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from . import blocked, products, rows
from .backward_causal import reverse_scan
from .backward_sinkhorn import gamma_pass, potentials, round_terms
from .dropout import Dropout, factor
from .scores import Scores, mask_rows
from .shapes import pad, sum_to

Array = Any
Bounds = Sequence[tuple[int, int]]


class Gradients(NamedTuple):
    """Gradients of :func:`.blocked.attend`'s inputs, in the broadcast leading shape.

    ``query`` is the gradient of the scaled queries; ``mask`` that of a
    floating mask (in the mask's own shape), when asked for; ``alpha`` that of
    the hybrid weight, shape ``(..., 1, 1)``, for hybrid only.
    """

    query: Array
    key: Array
    value: Array
    mask: Array | None
    alpha: Array | None


def attend_backward(
    scores: Scores,
    value: Array,
    out: Array,
    grad: Array,
    residuals: blocked.Residuals,
    bounds: Bounds,
    /,
    *,
    scheme: str,
    causal: bool,
    alpha: Array,
    n_iter: int,
    mask_grad: bool,
    xp: Any,
    drop: Dropout | None = None,
    doubling: bool = False,
    native: bool = False,
) -> Gradients:
    """The gradients of ``out = attend(scores, value, ...)`` given ``grad = dL/dout``.

    ``drop``, ``doubling`` and ``native`` as in the forward pass, whose biased scores each block recomputes.
    """
    how = blocked.plan(scheme, causal=causal, n_iter=n_iter, doubling=doubling, native=native)
    outputs = residuals.outputs or (out,)
    weights = rows.shares(alpha) if how.mixed else (None,)
    grads = [grad if w is None else w * grad for w in weights]
    deltas = [xp.sum(g * o, axis=-1, keepdims=True) for g, o in zip(grads, outputs, strict=True)]
    query, key = scores.query, scores.key
    shared = products.shared(query, key)  # grouped heads (dnorm._routing.heads)
    d_value = PerKey()
    d_columns: list[Array] = []
    d_rows: list[list[Array]] = []
    if how.rounds:
        shares, gamma = gamma_pass(scores, value, bounds, residuals.rounds[-1], grads[0], deltas[0], drop, xp=xp)
        d_value.add(xp.sum(shares, axis=-3, keepdims=True) if shared else shares, xp=xp)  # gamma stays per head
        d_columns, d_rows = potentials(scores, bounds, residuals.rounds, -gamma, xp=xp)
    d_key = PerKey()
    d_query: list[Array] = []
    d_mask: list[Array] = []
    after = None  # under causal: the reverse scan's carry from the block after
    backwards = scores.causal  # the running statistic's scan runs up the queries; causal widths then shrink
    order = range(len(bounds) - 1, -1, -1) if backwards else range(len(bounds))
    for index in order:
        start, stop = bounds[index]
        block, slope = scores.rows_with_slope(start, stop, xp=xp)
        width = block.shape[-1]
        dp = products.matmul(grad[..., start:stop, :], xp.matrix_transpose(value[..., :width, :]), xp=xp)
        keep = factor(drop, start, stop, width, tuple(block.shape[:-2]), xp=xp, like=block)
        if keep is not None:
            dp = dp * keep
        ds = None
        component = 0
        if how.biased:
            carry = residuals.carries[index] if how.running else None
            biased, _ = blocked.bias_block(block, how, residuals.rounds, carry, xp=xp)
            a = rows.softmax(biased, xp=xp)
            dz = a * (_scaled(dp, weights[0]) - deltas[0][..., start:stop, :])
            if how.running:
                b = xp.exp(biased)
                h, after = reverse_scan(dz, b, after, doubling=how.doubling, xp=xp)
                ds = dz - b * h
                d_value.add(products.t_matmul(_kept(a, keep), grads[0][..., start:stop, :], fold=shared, xp=xp), xp=xp)
            else:
                ds = dz + round_terms(block, biased, residuals.rounds, d_columns, d_rows[index], xp=xp)
            component = 1
        if how.plain:
            a = rows.softmax(block, xp=xp)
            dz = a * (_scaled(dp, weights[component]) - deltas[component][..., start:stop, :])
            ds = dz if ds is None else ds + dz
            d_value.add(
                products.t_matmul(_kept(a, keep), grads[component][..., start:stop, :], fold=shared, xp=xp), xp=xp
            )
        if mask_grad and scores.mask is not None:  # the mask is added to the capped scores
            d_mask.append(_mask_share(ds, scores.mask, start, stop, scores.n_keys, xp=xp))
        if slope is not None:
            ds = ds * slope
        d_query.append(products.matmul(ds, key[..., :width, :], xp=xp))
        d_key.add(products.t_matmul(ds, query[..., start:stop, :], fold=shared, xp=xp), xp=xp)
    if backwards:
        d_query.reverse()
        d_mask.reverse()
    d_alpha = None
    if how.mixed:
        d_alpha = rows.mix_gradient(grad, outputs[0], outputs[1], xp=xp)
    mask = _mask_total(d_mask, scores.mask, xp=xp) if d_mask else None
    n_keys = scores.n_keys
    return Gradients(
        blocked.concat_rows(d_query, xp=xp), d_key.total(n_keys, xp=xp), d_value.total(n_keys, xp=xp), mask, d_alpha
    )


class PerKey:
    """The sum of per-key gradient shares ``(..., width, D)`` from blocks whose widths never grow.

    Causal blocks see only the keys up to their last row, and the causal
    pass runs from the last block to the first: the keys past a block's
    width are complete once it comes, and are set aside instead of being
    padded with zeros for every later share.
    """

    def __init__(self) -> None:
        self.open: Array = None
        self.done: list[Array] = []

    def add(self, share: Array, /, *, xp: Any) -> None:
        width = share.shape[-2]
        if self.open is None:
            self.open = share
            return
        if self.open.shape[-2] > width:  # a copy, so that the wider sum it was part of can go
            self.done.append(xp.concat([self.open[..., width:, :]], axis=-2))
            self.open = self.open[..., :width, :]
        self.open = self.open + share

    def total(self, n_keys: int, /, *, xp: Any) -> Array:
        assert self.open is not None, "every backward pass has at least one block"
        parts = [self.open, *reversed(self.done)]
        whole = parts[0] if len(parts) == 1 else xp.concat(parts, axis=-2)
        return pad(whole, n_keys, 0.0, axis=-2, xp=xp)  # causal blocks see only the first keys


def _kept(a: Array, keep: Array | None, /) -> Array:
    return a if keep is None else a * keep


def _scaled(x: Array, weight: Array | None, /) -> Array:
    return x if weight is None else weight * x


def _mask_share(ds: Array, mask: Array, start: int, stop: int, n_keys: int, /, *, xp: Any) -> Array:
    """One block's share of a floating mask's gradient, in the mask's shape (rows and keys not yet summed)."""
    if mask.shape[-1] != 1:
        ds = pad(ds, n_keys, 0.0, axis=-1, xp=xp)  # a causal block's keys stop at its last row
    target = mask_rows(mask, start, stop, n_keys).shape
    return sum_to(ds, (*target[:-2], target[-2], target[-1]), xp=xp)


def _mask_total(shares: list[Array], mask: Array, /, *, xp: Any) -> Array:
    """A floating mask's gradient from its block shares: rows summed when the mask has one, else stacked."""
    if mask.shape[-2] == 1:
        total = shares[0]
        for more in shares[1:]:
            total = total + more
        return total
    return xp.concat(shares, axis=-2) if len(shares) > 1 else shares[0]
