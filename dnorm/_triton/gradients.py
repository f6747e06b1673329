"""The backward launches: gradients from the forward pass's residuals (spec DEF-BLOCKED-BACKWARD).

Doubly, hybrid and softmax: one pass per block of keys (dK, dV, gamma) and one per block of queries (dQ, a
floating mask's gradient). Sinkhorn: gamma first, back through its potentials (:mod:`.potentials`), then the
two passes with every round's terms. The causal variants: the key pass runs up the query blocks and leaves the
reverse scan's carry at each block's first row for the query pass. No atomics: deterministic.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
from torch import Tensor

from .backward import keys, queries
from .launch import Options, Residuals, accumulator, block_sizes, carry_places, mask_strides, tile_flags
from .layout import Layout, dense
from .potentials import potentials


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
    lead: tuple[int, ...],
    /,
    *,
    options: Options,
    mask_grad: bool,
    layout: Layout | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """Gradients ``(q_rows, BD)``, ``(k_rows, BD)``, ``(k_rows, BDV)`` (head sizes padded), ``(P, T, K)`` and per
    lead index a number (alpha's, hybrid only).

    ``out`` is ``(q_rows, Dv)`` in the compute dtype, ``grad`` in the inputs' dtype (the products take it beside
    the values; every statistic of it, ``delta``, is formed in the compute dtype). The floating mask's gradient
    (``mask_grad``) and ``alpha``'s (hybrid) are None otherwise.
    """
    layout = layout or dense(q, k, v, mask, alpha, seed, lead)
    acc_t, _ = accumulator(q.dtype)
    dev = q.device
    programs, n_q, n_k = layout.programs, layout.n_q, layout.n_k
    scheme = options.scheme
    running = options.causal and scheme in ("doubly", "hybrid")
    rounds = len(residuals.columns)
    biased, plain = scheme != "softmax", scheme in ("softmax", "hybrid")
    mixed = biased and plain
    flags, sizes = tile_flags(q, mask, options), block_sizes(q, v, options, backward=True)
    mm, mn = mask_strides(mask, lead, n_q, n_k)
    empty = torch.empty(1, dtype=acc_t, device=dev)
    per_index = alpha[..., 0, 0] if alpha.ndim >= 2 else alpha  # (..., 1, 1), or a number
    shares = per_index.expand(lead).reshape(-1).to(acc_t) if mixed else None
    q_rows, k_rows = layout.q_rows, layout.k_rows
    if mixed:
        assert residuals.outputs is not None
        assert shares is not None
        out_b, out_p = residuals.outputs
        share_rows = shares.repeat_interleave(q_rows // shares.numel())  # rows are lead index-major
        delta_b = share_rows * (grad * out_b).sum(-1)
        delta_p = (1 - share_rows) * (grad * out_p).sum(-1)
    else:
        delta_b = delta_p = (grad * out).sum(-1)
    col_round, row_round = k_rows, q_rows
    cols = torch.stack([torch.stack(c) for c in residuals.columns]) if rounds else empty
    row_pairs = torch.stack([torch.stack(r) for r in residuals.rows]) if residuals.rows else empty
    row_b = torch.stack(residuals.biased) if residuals.biased is not None else empty
    row_p = torch.stack(residuals.plain) if residuals.plain is not None else empty
    carry_off, stride_cb = carry_places(layout, options.blocks, sizes["BQ"])
    carry_m, carry_s = (residuals.carries[0], residuals.carries[1]) if residuals.carries else (empty, empty)
    g_carry = torch.zeros_like(carry_m) if running else empty  # the reverse scan's carries, where the forward's are
    dc = torch.zeros(max(rounds, 1), k_rows, dtype=acc_t, device=dev)
    dr = torch.zeros(max(rounds - 1, 1), q_rows, dtype=acc_t, device=dev)
    d_k = torch.zeros(k_rows, sizes["BD"], dtype=acc_t, device=dev)
    d_v = torch.zeros(k_rows, sizes["BDV"], dtype=acc_t, device=dev)
    gamma = torch.zeros(k_rows, dtype=acc_t, device=dev)
    dropout = options.dropout if seed is not None else 0.0
    threshold = min(round(dropout * 2**31), 2**31 - 1)
    args = [
        q, k, v, empty if mask is None else mask, grad, delta_b, delta_p, alpha if alpha.ndim else alpha.reshape(1),
        cols, row_pairs, dc, dr, row_b, row_p, carry_m, carry_s, g_carry,
    ]  # fmt: skip
    where = [
        layout.q, layout.k, layout.v, layout.mask, layout.out, layout.kstat, layout.qstat, carry_off, layout.alpha,
        layout.len_q, layout.len_k, layout.head, layout.seed,
        q.stride(-2), q.stride(-1), k.stride(-2), k.stride(-1), v.stride(-2), v.stride(-1), mm, mn, v.shape[-1],
        stride_cb, col_round, row_round, q.shape[-1], v.shape[-1], options.scale, options.softcap or 1.0, threshold,
        1.0 / (1.0 - dropout),
    ]  # fmt: skip
    switches = {
        "CAUSAL": options.causal, "ALIGN_END": options.align_end, "BIASED": biased, "ROUNDS": max(rounds, 1),
        "RUNNING": running, "PLAIN": plain, "MIXED": mixed, "DROPOUT": dropout > 0, "HAS_LEAD": layout.has_lead,
        **sizes, **flags,
    }  # fmt: skip
    grid_k = (triton.cdiv(max(n_k, 1), sizes["BK"]), programs)
    grid_q = (triton.cdiv(max(n_q, 1), sizes["BQ"]), programs)

    def keys_pass(**mode: bool) -> None:
        keys[grid_k](*args, d_k, d_v, gamma, *where, **switches, **mode)

    if rounds > 1:  # Sinkhorn: gamma first, back through the potentials, then the whole dS
        keys_pass(GAMMA_ONLY=True, FULL_DS=False)
        dc[rounds - 1] = -gamma
        for u in range(rounds - 2, -1, -1):
            for to_rows, grid in ((True, grid_q), (False, grid_k)):
                _potentials(q, k, mask, cols, row_pairs, dc if to_rows else dr, dr if to_rows else dc, layout,
                            (mm, mn), col_round, row_round, u, options, flags, sizes, grid, to_rows)  # fmt: skip
        keys_pass(GAMMA_ONLY=False, FULL_DS=True)
    else:
        keys_pass(GAMMA_ONLY=False, FULL_DS=False)
        if biased and not running:
            dc[0] = -gamma
    d_q = torch.zeros(q_rows, sizes["BD"], dtype=acc_t, device=dev)
    d_mask = torch.zeros(programs, n_q, n_k, dtype=acc_t, device=dev) if mask_grad else empty
    queries[grid_q](*args, gamma, d_q, d_mask, *where, n_k, **switches, MASK_GRAD=mask_grad)
    d_alpha = None
    if mixed:
        assert residuals.outputs is not None
        assert shares is not None
        per_row = (grad * (residuals.outputs[0] - residuals.outputs[1])).sum(-1)
        d_alpha = per_row.reshape(shares.numel(), -1).sum(-1)  # per lead index
    return d_q, d_k, d_v, d_mask if mask_grad else None, d_alpha


def _potentials(
    q: Tensor,
    k: Tensor,
    mask: Tensor | None,
    cols: Tensor,
    row_pairs: Tensor,
    d_in: Tensor,
    d_out: Tensor,
    layout: Layout,
    mask_strides: tuple[int, int],
    col_round: int,
    row_round: int,
    u: int,
    options: Options,
    flags: dict[str, Any],
    sizes: dict[str, Any],
    grid: tuple[int, int],
    to_rows: bool,
) -> None:
    potentials[grid](
        q, k, q.new_empty(1) if mask is None else mask, cols, row_pairs, d_in, d_out,
        layout.q, layout.k, layout.mask, layout.kstat, layout.qstat, layout.len_q, layout.len_k,
        q.stride(-2), q.stride(-1), k.stride(-2), k.stride(-1), *mask_strides,
        col_round, row_round, u, q.shape[-1], options.scale, options.softcap or 1.0,
        TO_ROWS=to_rows, **{key: sizes[key] for key in ("BQ", "BK", "BD")}, **flags,
    )  # fmt: skip
