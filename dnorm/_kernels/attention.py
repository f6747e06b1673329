"""Attention from arrays: every entry point of the kernels (spec DEF-BLOCKED-BACKWARD, DEF-DECODE-STATE).

:func:`forward` (with its residuals) and :func:`backward` are what the
autodiff adapters (:mod:`dnorm._autodiff`) wrap; :func:`infer` is the forward
pass where no gradient can be asked for; :func:`decode` continues the strictly
causal pass from a carry; :func:`weights` forms the weights themselves.
Inputs are already checked and in the compute dtype; ``mask`` has at least two
dimensions and ``alpha`` is an array that broadcasts against ``(..., T, K)``;
``seed`` is the 32-bit integer array of dropout's mask (None without dropout,
spec DEF-DROPOUT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import backward as bwd
from . import blocked, products, schemes
from . import logsumexp as lse
from .dropout import Dropout
from .scores import Scores, cap, from_matrix, from_projections
from .shapes import sum_to

Array = Any
Bounds = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class BlockedOptions:
    """Everything about one call that is not an array (hashable: a static argument under JAX).

    ``rows`` are the query blocks of the forward pass and ``materialize``
    whether it forms the ``(..., T, K)`` scores at once (then ``rows`` only
    splits their normalization); ``backward_rows`` are the blocks of the
    backward pass, which always recomputes the scores from the projections.
    Under ``causal`` both are the same blocks, whose carries the forward
    pass keeps, and query ``i`` sees the keys ``j <= i + offset``.
    ``softcap`` bounds the scores (spec DEF-SOFTCAP); ``dropout`` is the
    probability of dropping a weight (spec DEF-DROPOUT). ``doubling``: the
    lengths may be symbolic (a tracing compiler), and the causal scans take a
    structure that depends on them only through comparisons (:mod:`.scan`);
    ``native_scan``: the running statistic comes from the namespace's fused
    scan (:mod:`._delegation`). ``sink``: a sink joins the rows (spec
    DEF-SINK); ``attend_current``: stick-breaking's queries weigh their own
    position; ``position``: that of query row 0 in its sequence, which the
    running sink statistic counts.
    """

    scheme: str
    causal: bool
    n_iter: int
    scale: float
    rows: Bounds
    materialize: bool
    backward_rows: Bounds
    offset: int = 0
    softcap: float | None = None
    dropout: float = 0.0
    doubling: bool = False
    native_scan: bool = False
    sink: bool = False
    attend_current: bool = False
    position: int = 0

    def plan(self, *, causal: bool | None = None) -> schemes.Plan:
        """What the call computes (:func:`.schemes.plan`); ``causal`` overrides the options' (decoding)."""
        causal = self.causal if causal is None else causal
        return schemes.plan(
            self.scheme, causal=causal, n_iter=self.n_iter, doubling=self.doubling, native=self.native_scan,
            sink=self.sink, attend_current=self.attend_current,
        )  # fmt: skip

    @property
    def triangle(self) -> int:
        """The causal offset of the scores: query ``i`` sees the keys ``j <= i + triangle`` (one key fewer when
        stick-breaking's queries do not weigh their own position)."""
        return self.offset - int(self.plan().strict)


def forward(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    params: schemes.Parameters | Array,
    seed: Array | None,
    /,
    *,
    options: BlockedOptions,
    xp: Any,
) -> tuple[Array, blocked.Residuals]:
    """``attention(query, key, value)`` and what :func:`backward` needs."""
    params = schemes.parameters(params)
    q = query * options.scale  # the scale on the (T, D) queries rather than the (T, K) scores
    if options.materialize:
        matrix = cap(products.matmul(q, xp.matrix_transpose(key), xp=xp), options.softcap, xp=xp)
        scores = from_matrix(matrix, mask=mask, causal=options.causal, offset=options.triangle)
    else:
        scores = _projections(q, key, mask, options)
    return blocked.attend(
        scores, value, options.rows, how=options.plan(), alpha=params.alpha, drop=_dropout(options, seed),
        sink=params.sink, position=options.position, xp=xp,
    )  # fmt: skip


def backward(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    params: schemes.Parameters | Array,
    seed: Array | None,
    out: Array,
    residuals: blocked.Residuals,
    grad: Array,
    /,
    *,
    options: BlockedOptions,
    mask_grad: bool,
    xp: Any,
) -> tuple[Array, Array, Array, Array | None, schemes.Parameters | Array | None]:
    """Gradients of ``query``, ``key``, ``value``, a floating ``mask`` (if ``mask_grad``) and the parameters.

    Each has the shape of its input (summed over the dimensions the input
    was broadcast along); ``alpha``'s is None unless the scheme is hybrid, the sink's None without a sink.
    """
    given, params = params, schemes.parameters(params)
    scores = _projections(query * options.scale, key, mask, options)
    grads = bwd.attend_backward(
        scores, value, out, grad, residuals, options.backward_rows, how=options.plan(), params=params,
        mask_grad=mask_grad, drop=_dropout(options, seed), position=options.position, xp=xp,
    )  # fmt: skip
    alpha, sink = params
    d_alpha = None if grads.alpha is None else sum_to(grads.alpha, tuple(alpha.shape), xp=xp)
    d_sink = None
    if sink is not None:
        d_sink = xp.zeros_like(sink) if grads.sink is None else sum_to(grads.sink, tuple(sink.shape), xp=xp)
    return (
        sum_to(grads.query * options.scale, tuple(query.shape), xp=xp),
        sum_to(grads.key, tuple(key.shape), xp=xp),
        sum_to(grads.value, tuple(value.shape), xp=xp),
        grads.mask,
        schemes.Parameters(d_alpha, d_sink) if isinstance(given, schemes.Parameters) else d_alpha,
    )


def infer(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    params: schemes.Parameters | Array,
    seed: Array | None,
    /,
    *,
    options: BlockedOptions,
    xp: Any,
) -> Array:
    """The forward pass alone, where no gradient can be asked for."""
    return forward(query, key, value, mask, params, seed, options=options, xp=xp)[0]


def decode(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    params: schemes.Parameters | Array,
    carry: lse.LogSumExp | None,
    /,
    *,
    options: BlockedOptions,
    xp: Any,
) -> tuple[Array, lse.LogSumExp | None]:
    """The strictly causal pass of new queries from ``carry``, and the carry after them (spec DEF-DECODE-STATE).

    ``options`` are causal, their ``offset`` the number of earlier
    positions; ``carry`` is the running statistic of those positions' queries
    for the keys they saw (None when there are none). The new carry is None
    for softmax, which keeps none.
    """
    params = schemes.parameters(params)
    q = query * options.scale
    scores = _projections(q, key, mask, options)
    out, residuals = blocked.attend(
        scores, value, options.rows, how=options.plan(causal=True), alpha=params.alpha, carry=carry,
        sink=params.sink, position=options.position, xp=xp,
    )  # fmt: skip
    return out, residuals.carries[-1] if residuals.carries else None


def weights(
    scores: Array, mask: Array | None, params: schemes.Parameters, /, *, options: BlockedOptions, log: bool, xp: Any
) -> Array:
    """The ``(..., T, K)`` weights (``log``: log-weights) of given scores, normalized in the blocks ``options.rows``."""
    params = schemes.parameters(params)
    matrix = from_matrix(scores, mask=mask, causal=options.causal, offset=options.triangle)
    return blocked.weights(
        matrix, options.rows, how=options.plan(), alpha=params.alpha, log=log, sink=params.sink,
        position=options.position, xp=xp,
    )  # fmt: skip


def _projections(q: Array, key: Array, mask: Array | None, options: BlockedOptions, /) -> Scores:
    return from_projections(q, key, mask=mask, causal=options.causal, offset=options.triangle, softcap=options.softcap)


def _dropout(options: BlockedOptions, seed: Array | None, /) -> Dropout | None:
    return Dropout(options.dropout, seed) if options.dropout > 0 else None
