"""The backward launches: gradients from the forward pass's residuals (spec DEF-BLOCKED-BACKWARD).

Doubly, hybrid and softmax: one pass per block of keys (dK, dV, gamma) and one per block of queries (dQ, a
floating mask's gradient). Sinkhorn: gamma first, back through its potentials (:mod:`.potentials`), then the
two passes with every round's terms. The causal variants: the key pass runs up the query blocks and leaves the
reverse scan's carry at each block's first row for the query pass. No atomics: deterministic. A sink's numbers
per row (its gradient, Sinkhorn's sink column in the potentials) are reductions over the rows, in torch
(:mod:`.sinks`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
from torch import Tensor

from . import sinks
from .backward import keys, queries
from .launch import Inputs, LaunchOptions, Residuals
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
    empty = inputs.empty()
    acc = inputs.acc
    rounds = len(residuals.columns)
    shares = None
    if how.mixed:
        assert residuals.outputs is not None
        per_index = alpha[..., 0, 0] if alpha.ndim >= 2 else alpha  # (..., 1, 1), or a number
        shares = per_index.expand(options.lead).reshape(-1).to(acc)
        share_rows = shares.repeat_interleave(layout.q_rows // shares.numel())  # rows are leading index-major
        delta_b = share_rows * (grad * residuals.outputs.biased).sum(-1)
        delta_p = (1 - share_rows) * (grad * residuals.outputs.plain).sum(-1)
    else:
        delta_b = delta_p = (grad * out).sum(-1)
    sizes = inputs.sizes(backward=True)
    carries = residuals.carries
    carry_m, carry_s = (carries.before.max, carries.before.sum) if carries is not None else (empty, empty)
    dc = torch.zeros(max(rounds, 1), layout.k_rows, dtype=acc, device=q.device)
    dr = torch.zeros(max(rounds - 1, 1), layout.q_rows, dtype=acc, device=q.device)
    shared = {
        **inputs.arguments(), **sizes, **inputs.carry_places(sizes["BQ"]), **inputs.dropout(seed),
        "DO": grad, "DELTA_B": delta_b, "DELTA_P": delta_p,
        "COLS": torch.stack([torch.stack((c.shift, *c.stat)) for c in residuals.columns]) if rounds else empty,
        "ROWS": torch.stack([torch.stack(r) for r in residuals.rows]) if residuals.rows else empty,
        "DC": dc, "DR": dr,
        "ROW_B": torch.stack(residuals.biased) if residuals.biased is not None else empty,
        "ROW_P": torch.stack(residuals.plain) if residuals.plain is not None else empty,
        "CARRY_M": carry_m, "CARRY_S": carry_s,
        "G_CARRY": torch.zeros_like(carry_m) if how.running else empty,  # the reverse scan's, where the forward's are
        "stride_ot": v.shape[-1], "col_round": layout.k_rows, "row_round": layout.q_rows,
        "BIASED": how.biased, "ROUNDS": max(rounds, 1), "RUNNING": how.running, "PLAIN": how.plain,
        "MIXED": how.mixed,
    }  # fmt: skip
    d_k = torch.zeros(layout.k_rows, sizes["BD"], dtype=acc, device=q.device)
    d_v = torch.zeros(layout.k_rows, sizes["BDV"], dtype=acc, device=q.device)
    gamma = torch.zeros(layout.k_rows, dtype=acc, device=q.device)
    grid_k = (triton.cdiv(max(layout.n_k, 1), sizes["BK"]), layout.programs)
    grid_q = (triton.cdiv(max(layout.n_q, 1), sizes["BQ"]), layout.programs)

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
            for to_rows, grid in ((True, grid_q), (False, grid_k)):
                d_in, d_out = (dc, dr) if to_rows else (dr, dc)
                potentials[grid](**potentials.bind(shared, D_IN=d_in, D_OUT=d_out, u=u, TO_ROWS=to_rows))
                if to_rows and rows is not None and d_sink is not None:  # the sink's column of P^(u+1), and R^u's
                    row_u = residuals.rows[u]
                    dr[u] -= sinks.weight(residuals.sinks[u + 1], rows, row_u) * rows.spread(d_sink, dr[u])
                    d_sink = -rows.sum(sinks.weight(residuals.sinks[u], rows, row_u) * dr[u], layout.programs)
        keys_pass(gamma_only=False, full_ds=True)
    else:
        keys_pass(gamma_only=False, full_ds=False)
        if how.biased and not how.running:
            dc[0] = -gamma
    d_q = torch.zeros(layout.q_rows, sizes["BD"], dtype=acc, device=q.device)
    d_mask = torch.zeros(layout.programs, layout.n_q, layout.n_k, dtype=acc, device=q.device) if mask_grad else empty
    queries[grid_q](**queries.bind(shared, GAMMA=gamma, DQ=d_q, DMASK=d_mask, n_k_max=layout.n_k, MASK_GRAD=mask_grad))
    d_alpha = None
    if how.mixed:
        assert residuals.outputs is not None
        assert shares is not None
        per_row = (grad * (residuals.outputs.biased - residuals.outputs.plain)).sum(-1)
        d_alpha = per_row.reshape(shares.numel(), -1).sum(-1)  # per leading index
    d_sink = None
    if rows is not None and residuals.sink is not None and residuals.plain is not None:  # spec THM-SINK-GRADIENT
        d_sink = -rows.sum(sinks.weight(residuals.sink, rows, residuals.plain) * delta_p, layout.programs)
    return Gradients(d_q, d_k, d_v, d_mask if mask_grad else None, d_alpha, d_sink)
