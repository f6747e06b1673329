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

A sink (spec DEF-SINK) is one more logit in each row's softmax, of value 0: the
weights ``A`` take it in their normalizer, and its own ``dZ`` is ``-a_sink
delta``, which is the gradient of the sink in a plain component (spec
THM-SINK-GRADIENT); a biased component's sink logit does not depend on the sink.
The rows that need not sum to one (sigmoid, stick-breaking) take their ``dS``
from :func:`.unnormalized.scores_gradient`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from . import blocked, products, rows, sinks, unnormalized
from . import logsumexp as lse
from .backward_causal import reverse_scan
from .backward_sinkhorn import gamma_pass, potentials, round_terms
from .dropout import Dropout, factor
from .schemes import Parameters, Plan
from .scores import Scores, mask_rows
from .shapes import pad, sum_to

Array = Any
Bounds = Sequence[tuple[int, int]]


class Gradients(NamedTuple):
    """Gradients of :func:`.blocked.attend`'s inputs, in the broadcast leading shape.

    ``query`` is the gradient of the scaled queries; ``mask`` that of a
    floating mask (in the mask's own shape), when asked for; ``alpha`` that of
    the hybrid weight, shape ``(..., 1, 1)``, for hybrid only; ``sink`` that of
    the sink, ``(..., 1, 1)``, where a plain component has one.
    """

    query: Array
    key: Array
    value: Array
    mask: Array | None
    alpha: Array | None
    sink: Array | None = None


class Component(NamedTuple):
    """One component of a tile's rows in the backward pass (the biased one, then the plain one).

    ``grad`` is ``dO`` of the rows scaled by the component's ``share`` of the hybrid (None: 1), ``delta`` its
    ``dO . O``; ``stat`` the rows' statistic of the component's scores over every key where the tile holds some of
    them (a sharded sequence), else None (its weights are the tile's row softmax); ``sink`` the rows' sink logit
    (:mod:`.sinks`), or None.
    """

    grad: Array
    delta: Array
    share: Array | None
    stat: lse.LogSumExp | None
    sink: Array | None = None


class Step(NamedTuple):
    """What one tile gives the backward pass: its ``ds`` (before the softcap's slope), its share of ``dV`` (None
    where no component adds one here: a statistic of the key alone took the biased one's in its own pass), and
    under the running statistic the reverse scan's carry for the tile above; ``sink``: the gradient of the plain
    component's sink logit summed over the tile's rows, ``(..., 1, 1)`` (None without one)."""

    ds: Array
    value: Array | None
    after: Array | None
    sink: Array | None = None


def step(
    block: Array,
    biased: Array | None,
    dp: Array,
    components: tuple[Component, ...],
    /,
    *,
    how: Plan,
    terms: Array | None,
    after: Array | None,
    keep: Array | None,
    shared: bool,
    xp: Any,
) -> Step:
    """The gradient of the scores of one tile, ``dS`` (spec THM-GRADIENT-AS-ATTENTION): the one step the blocked
    and the sharded backward passes share.

    ``block`` is the tile's ``S``, ``biased`` its ``Y = S - c`` (None for softmax), ``dp`` its ``dO V^T`` (times
    dropout's factor ``keep``); ``terms`` what a statistic of the key alone adds (:func:`.backward_sinkhorn.
    round_terms`), ``after`` the reverse scan's carry from the tile below (running statistic).
    """
    ds = None
    value = None
    d_sink = None
    for component, y in zip(components, (biased, block) if how.biased else (block,), strict=False):
        if how.rows != "normalized":  # each key weighed alone, or broken off a stick: no row normalization
            dz, a = unnormalized.scores_gradient(y, how.rows, dp, xp=xp)
        elif component.stat is not None:
            a = xp.exp(lse.subtract(y, component.stat, xp=xp))
        elif component.sink is not None:
            a, a_sink = rows.with_sink(y, component.sink, xp=xp)
            if y is block:  # the sink's dZ, -a_sink delta: its gradient (a biased logit does not depend on it)
                d_sink = -xp.sum(a_sink * component.delta, axis=-2, keepdims=True)
        else:
            a = rows.softmax(y, xp=xp)
        if how.rows == "normalized":
            dz = a * ((dp if component.share is None else component.share * dp) - component.delta)
        if y is biased and how.running:
            b = xp.exp(biased)
            h, after = reverse_scan(dz, b, after, doubling=how.doubling, xp=xp)
            dz = dz - b * h
        elif y is biased:
            dz = dz + terms
        if y is block or how.running:  # the biased component's dV came with gamma otherwise
            share = products.t_matmul(a if keep is None else a * keep, component.grad, fold=shared, xp=xp)
            value = share if value is None else value + share
        ds = dz if ds is None else ds + dz
    return Step(ds, value, after, d_sink)


def attend_backward(
    scores: Scores,
    value: Array,
    out: Array,
    grad: Array,
    residuals: blocked.Residuals,
    bounds: Bounds,
    /,
    *,
    how: Plan,
    params: Parameters,
    mask_grad: bool,
    xp: Any,
    drop: Dropout | None = None,
    position: int = 0,
) -> Gradients:
    """The gradients of ``out = attend(scores, value, ...)`` given ``grad = dL/dout``.

    ``how``, ``drop`` and ``position`` as in the forward pass, whose biased scores each block recomputes;
    ``params``: its ``alpha`` and sink.
    """
    alpha, sink = params
    outputs = residuals.outputs or (out,)
    weights = rows.shares(alpha) if how.mixed else (None,)
    grads = [grad if w is None else w * grad for w in weights]
    deltas = [xp.sum(g * o, axis=-1, keepdims=True) for g, o in zip(grads, outputs, strict=True)]
    query, key = scores.query, scores.key
    shared = products.shared(query, key)  # grouped heads (dnorm._routing.heads)
    d_value = PerKey()
    d_columns: list[Array] = []
    d_rows: list[list[Array]] = []
    last = residuals.rounds[-1].sink if residuals.rounds else None
    if how.rounds:
        shares, gamma, gamma_sink = gamma_pass(
            scores, value, bounds, residuals.rounds[-1], grads[0], deltas[0], drop, xp=xp
        )
        d_value.add(xp.sum(shares, axis=-3, keepdims=True) if shared else shares, xp=xp)  # gamma stays per head
        d_columns, d_rows = potentials(
            scores, bounds, residuals.rounds, -gamma, xp=xp, d_sink=None if gamma_sink is None else -gamma_sink
        )
    d_sink = None
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
        carry = residuals.carries[index] if how.running else None
        biased, _ = blocked.bias_block(block, how, residuals.rounds, carry, xp=xp)
        terms = None
        if how.rounds:
            terms = round_terms(block, biased, residuals.rounds, d_columns, d_rows[index], xp=xp)
        logits = sinks.logits(how, last, sink, (start, stop), position, block, xp=xp)
        chosen = logits if how.mixed else (logits[0] if how.biased else logits[1],)
        components = tuple(
            Component(g[..., start:stop, :], d[..., start:stop, :], w, None, logit)
            for g, d, w, logit in zip(grads, deltas, weights, chosen, strict=True)
        )
        tile = step(block, biased, dp, components, how=how, terms=terms, after=after, keep=keep, shared=shared, xp=xp)
        ds, after = tile.ds, tile.after
        if tile.sink is not None:
            d_sink = tile.sink if d_sink is None else d_sink + tile.sink
        if tile.value is not None:
            d_value.add(tile.value, xp=xp)
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
        blocked.concat_rows(d_query, xp=xp),
        d_key.total(n_keys, xp=xp),
        d_value.total(n_keys, xp=xp),
        mask,
        d_alpha,
        d_sink,
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
