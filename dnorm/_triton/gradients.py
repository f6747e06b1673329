"""The backward launches: gradients from the forward pass's residuals (spec DEF-BLOCKED-BACKWARD).

Doubly, hybrid and softmax: one pass per block of keys (dK, dV, gamma) and one per block of queries (dQ, a
floating mask's gradient). Sinkhorn: gamma first, back through its potentials (:mod:`.potentials`), then the
two passes with every round's terms. The causal variants: the key pass runs up the query blocks and leaves the
reverse scan's carry at each block's first row for the query pass. No atomics: deterministic. A sink's numbers
per row (its gradient, Sinkhorn's sink column in the potentials) are reductions over the rows, in torch
(:mod:`.sinks`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import triton
from torch import Tensor

from . import sinks
from .backward import keys, queries
from .launch import Components, Inputs, LaunchOptions, Residuals
from .layout import Layout, dense
from .potentials import potentials


class Gradients(NamedTuple):
    """The backward pass's buffers: ``query``, ``key`` and ``value`` as ``(rows, padded head size)`` (rows leading
    index-major), a floating mask's ``(P, T, K)`` (None unless asked for), ``alpha``'s per leading index (hybrid),
    the sink's per program (where a plain component takes it)."""

    query: Tensor
    key: Tensor
    value: Tensor
    mask: Tensor | None
    alpha: Tensor | None
    sink: Tensor | None = None


def backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    alpha: Tensor,
    seed: Tensor | None,
    out: Tensor,
    residuals: Residuals,
    grad: Tensor,
    /,
    *,
    options: LaunchOptions,
    mask_grad: bool,
    layout: Layout | None = None,
) -> Gradients:
    """The gradients of the forward pass whose ``out`` and ``residuals`` are given, for ``grad = dL/dout``.

    ``out`` is ``(q_rows, Dv)`` in the compute dtype, ``grad`` in the inputs' dtype (the products take it beside
    the values; every statistic of it, ``delta``, is formed in the compute dtype).
    """
    inputs = Inputs(q, k, v, mask, alpha, layout or dense(q, k, v, mask, alpha, seed, options.lead), options)
    how = options.plan()
    layout = inputs.layout
    acc = inputs.acc
    rounds = len(residuals.columns)
    delta_b, delta_p, shares = deltas(inputs, out, residuals.outputs, grad)
    dc = torch.zeros(max(rounds, 1), layout.k_rows, dtype=acc, device=q.device)
    dr = torch.zeros(max(rounds - 1, 1), layout.q_rows, dtype=acc, device=q.device)
    shared = arguments(inputs, residuals, grad, delta_b, delta_p, dc=dc, dr=dr, seed=seed)
    d_k, d_v, gamma = keys_buffers(inputs)
    grid_k, _ = grids(inputs)

    def keys_pass(*, gamma_only: bool, full_ds: bool) -> None:
        keys[grid_k](**keys.bind(shared, DK=d_k, DV=d_v, GAMMA=gamma, GAMMA_ONLY=gamma_only, FULL_DS=full_ds))

    rows = sinks.rows_of(layout) if how.sink else None
    if rounds > 1:  # Sinkhorn: gamma first, back through the potentials, then the whole dS
        keys_pass(gamma_only=True, full_ds=False)
        dc[rounds - 1] = -gamma
        d_sink = None  # the sink column's potential (spec THM-SINK-IN-EVERY-ROUND)
        if rows is not None and residuals.biased is not None:
            a_sink = sinks.weight(residuals.sinks[-1], rows, residuals.biased)
            d_sink = rows.sum(a_sink * delta_b, layout.programs)  # -gamma of the sink: sum_i a_sink delta
        for u in range(rounds - 2, -1, -1):
            for to_rows in (True, False):
                d_in, d_out = (dc, dr) if to_rows else (dr, dc)
                potentials_pass(inputs, shared, u, d_in, d_out, to_rows=to_rows)
                if to_rows and rows is not None and d_sink is not None:  # the sink's column of P^(u+1), and R^u's
                    row_u = residuals.rows[u]
                    dr[u] -= sinks.weight(residuals.sinks[u + 1], rows, row_u) * rows.spread(d_sink, dr[u])
                    d_sink = -rows.sum(sinks.weight(residuals.sinks[u], rows, row_u) * dr[u], layout.programs)
        keys_pass(gamma_only=False, full_ds=True)
    else:
        keys_pass(gamma_only=False, full_ds=False)
        if how.biased and not how.running:
            dc[0] = -gamma
    d_q, d_mask, _ = queries_pass(inputs, shared, mask_grad=mask_grad)
    d_alpha = None
    if how.mixed:
        assert residuals.outputs is not None
        assert shares is not None
        per_row = (grad * (residuals.outputs.biased - residuals.outputs.plain)).sum(-1)
        d_alpha = per_row.reshape(shares.numel(), -1).sum(-1)  # per leading index
    d_sink = None
    if rows is not None and residuals.sink is not None and residuals.plain is not None:  # spec THM-SINK-GRADIENT
        d_sink = -rows.sum(sinks.weight(residuals.sink, rows, residuals.plain) * delta_p, layout.programs)
    return Gradients(d_q, d_k, d_v, d_mask, d_alpha, d_sink)


def deltas(
    inputs: Inputs, out: Tensor, outputs: Components | None, grad: Tensor, /
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Each component's ``delta = w dO . O`` per row (``w`` its share of the hybrid, else 1), and the hybrid's
    ``alpha`` per leading index (None for one component)."""
    if outputs is None:
        delta = (grad * out).sum(-1)
        return delta, delta, None
    alpha = inputs.alpha
    per_index = alpha[..., 0, 0] if alpha.ndim >= 2 else alpha  # (..., 1, 1), or a number
    shares = per_index.expand(inputs.options.lead).reshape(-1).to(inputs.acc)
    share_rows = shares.repeat_interleave(inputs.layout.q_rows // shares.numel())  # rows are leading index-major
    delta_b = share_rows * (grad * outputs.biased).sum(-1)
    delta_p = (1 - share_rows) * (grad * outputs.plain).sum(-1)
    return delta_b, delta_p, shares


def arguments(
    inputs: Inputs,
    residuals: Residuals,
    grad: Tensor,
    delta_b: Tensor,
    delta_p: Tensor,
    /,
    *,
    dc: Tensor,
    dr: Tensor,
    g_after: Tensor | None = None,
    seed: Tensor | None = None,
) -> dict[str, Any]:
    """What every backward launch of a call reads, by the kernels' parameter names.

    ``grad`` is ``dO`` as ``(q_rows, Dv)``, ``delta_b`` and ``delta_p`` each component's ``w dO . O`` per row;
    ``dc`` and ``dr`` the potentials' gradients per round (``(rounds, k_rows)``, ``(rounds - 1, q_rows)``);
    ``g_after`` the reverse scan's carry from the queries after the last, per key (causal; zeros without it);
    ``seed`` dropout's (None: no dropout).
    """
    layout, empty, acc, how = inputs.layout, inputs.empty(), inputs.acc, inputs.options.plan()
    sizes = inputs.sizes(backward=True)
    rounds = len(residuals.columns)
    carries = residuals.carries
    carry_m, carry_s = (carries.before.max, carries.before.sum) if carries is not None else (empty, empty)
    if how.running and g_after is None:
        g_after = torch.zeros(layout.k_rows, dtype=acc, device=inputs.q.device)
    return {
        **inputs.arguments(), **sizes, **inputs.carry_places(sizes["BQ"]), **inputs.dropout(seed),
        "DO": grad, "DELTA_B": delta_b, "DELTA_P": delta_p,
        "COLS": torch.stack([torch.stack((c.shift, *c.stat)) for c in residuals.columns]) if rounds else empty,
        "ROWS": torch.stack([torch.stack(r) for r in residuals.rows]) if residuals.rows else empty,
        "DC": dc, "DR": dr,
        "ROW_B": torch.stack(residuals.biased) if residuals.biased is not None else empty,
        "ROW_P": torch.stack(residuals.plain) if residuals.plain is not None else empty,
        "CARRY_M": carry_m, "CARRY_S": carry_s,
        "G_CARRY": torch.zeros_like(carry_m) if how.running else empty,  # the reverse scan's, where the forward's are
        "G_AFTER": g_after if how.running else empty,
        "stride_ot": inputs.v.shape[-1], "col_round": layout.k_rows, "row_round": layout.q_rows,
        "BIASED": how.biased, "ROUNDS": max(rounds, 1), "RUNNING": how.running, "PLAIN": how.plain,
        "MIXED": how.mixed,
    }  # fmt: skip


def grids(inputs: Inputs, /) -> tuple[tuple[int, int], tuple[int, int]]:
    """The backward launches' grids: per block of keys, and per block of queries (times the programs)."""
    layout, sizes = inputs.layout, inputs.sizes(backward=True)
    return (
        (triton.cdiv(max(layout.n_k, 1), sizes["BK"]), layout.programs),
        (triton.cdiv(max(layout.n_q, 1), sizes["BQ"]), layout.programs),
    )


def keys_buffers(inputs: Inputs, /) -> tuple[Tensor, Tensor, Tensor]:
    """Zeroed ``dK`` and ``dV`` ``(k_rows, padded head size)`` and ``gamma`` ``(k_rows,)`` for the key pass."""
    layout, sizes, acc, device = inputs.layout, inputs.sizes(backward=True), inputs.acc, inputs.q.device
    return (
        torch.zeros(layout.k_rows, sizes["BD"], dtype=acc, device=device),
        torch.zeros(layout.k_rows, sizes["BDV"], dtype=acc, device=device),
        torch.zeros(layout.k_rows, dtype=acc, device=device),
    )


def potentials_pass(
    inputs: Inputs, shared: dict[str, Any], u: int, d_in: Tensor, d_out: Tensor, /, *, to_rows: bool
) -> None:
    """One step back through Sinkhorn's potentials at round ``u`` (:func:`.potentials.potentials`), into ``d_out``."""
    grid_k, grid_q = grids(inputs)
    grid = grid_q if to_rows else grid_k
    potentials[grid](**potentials.bind(shared, D_IN=d_in, D_OUT=d_out, u=u, TO_ROWS=to_rows))


def queries_pass(
    inputs: Inputs, shared: dict[str, Any], /, *, mask_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``dQ`` ``(q_rows, padded head size)``, a floating mask's gradient ``(P, T, K)`` where ``mask_grad``, and the
    sigmoid's row bias's ``(q_rows,)`` (None for the other schemes)."""
    layout, sizes, acc, device = inputs.layout, inputs.sizes(backward=True), inputs.acc, inputs.q.device
    d_q = torch.zeros(layout.q_rows, sizes["BD"], dtype=acc, device=device)
    empty = inputs.empty()
    d_mask = torch.zeros(layout.programs, layout.n_q, layout.n_k, dtype=acc, device=device) if mask_grad else empty
    gated = inputs.options.plan().rows == "gated"
    d_bias = torch.zeros(layout.q_rows, dtype=acc, device=device) if gated else empty
    _, grid_q = grids(inputs)
    queries[grid_q](
        **queries.bind(
            shared, GAMMA=empty, DQ=d_q, DMASK=d_mask, D_ROW_BIAS=d_bias, n_k_max=layout.n_k, MASK_GRAD=mask_grad
        )
    )
    return d_q, d_mask if mask_grad else None, d_bias if gated else None
