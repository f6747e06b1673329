"""The backward pass from the saved statistics: scores recomputed in tiles, never a ``(T, K)`` buffer.

With ``dP = dO V^T``, dropout's factor ``R`` and a component's weights ``A``,
``dZ = A * (w R dP - delta)`` (``w`` the hybrid's share, ``delta_i = w dO_i .
O_i``; spec THM-ROW-SOFTMAX-GRADIENT, THM-DROPOUT-GRADIENT). What the
statistic adds to the gradient of the scores ``dS``:

* a statistic of the key alone (doubly, Sinkhorn's rounds; spec
  THM-DNAS-GRADIENT, THM-SINKHORN-GRADIENT): ``sum_u P^u * dc^u + sum_(u<n-1)
  R^u * dr^u`` with the rounds' potentials ``dc``, ``dr`` (doubly: ``-B *
  gamma``, ``gamma_j = sum_i dZ_ij``);
* the running statistic (spec THM-CAUSAL-GRADIENT): ``dS = (1 - B) dZ - B G'``
  with ``G_i = (1 - B_i)(dZ_i + G_(i+1))`` a reverse scan up the queries and
  ``G'`` its value at the row below, carried from tile to tile.

A sink is in the saved row pairs, so the weights need nothing more (its own
gradient is formed from them, :mod:`.sinks`). ``GATED`` (sigmoid attention):
the plain component's weights are ``sigmoid(S + b_i)`` (``ROW_BIAS``), ``dS = A (1 - A) R dP``, and the row
bias's gradient ``sum_j dS_ij`` (``D_ROW_BIAS``).

:func:`keys` runs one program per block of keys over the query blocks (``dK``,
``dV``, ``gamma``, the causal carries ``G``); :func:`queries` one per block of
queries over the key blocks (``dQ`` and a floating mask's gradient ``dS``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .configs import tunable
from .rows import biased_tile, running, sigmoid
from .tiles import compose, finite, keep, load_rows, log_sum, scores


@triton.jit
def weights(y, row_m, row_s):
    """A component's softmax weights from its row pair: ``exp(y - max) / sum`` (0 for an empty row)."""
    e = tl.exp(y - finite(row_m)[:, None])
    return e / tl.where(row_s == 0, 1.0, row_s)[:, None]


@triton.jit
def _rounds(
    s, y_last, dz, COLS, ROWS, DC, DR, kstat, qstat, offs_m, offs_n, n_q, n_k, col_round, row_round,
    ROUNDS: tl.constexpr,
):  # fmt: skip
    """``dZ + sum_u P^u dc^u + sum_(u < n-1) R^u dr^u`` of a tile (spec THM-SINKHORN-GRADIENT; doubly: one round).

    ``COLS`` holds per round the per-key ``(shift, max, sum)``, ``ROWS`` per round but the last the row pair,
    ``DC`` and ``DR`` the potentials' gradients; ``y_last`` is ``S - c`` of the last round.
    """
    total = dz
    r_m = tl.zeros_like(offs_m).to(s.dtype)
    r_s = r_m + 1.0
    inside_k, inside_q = offs_n < n_k, offs_m < n_q
    for u in tl.static_range(ROUNDS):
        base = COLS + u * 3 * col_round + kstat
        shift = tl.load(base + offs_n, mask=inside_k, other=0.0)
        col_m = tl.load(base + col_round + offs_n, mask=inside_k, other=0.0)
        col_s = tl.load(base + 2 * col_round + offs_n, mask=inside_k, other=1.0)
        y = y_last
        if u < ROUNDS - 1:
            y = biased_tile(s, shift, col_m, col_s, u > 0)
        dc = tl.load(DC + u * col_round + kstat + offs_n, mask=inside_k, other=0.0)
        total += tl.exp((y - finite(r_m)[:, None]) - log_sum(r_s)[:, None]) * dc[None, :]
        if u < ROUNDS - 1:
            r_m = tl.load(ROWS + u * 2 * row_round + qstat + offs_m, mask=inside_q, other=0.0)
            r_s = tl.load(ROWS + u * 2 * row_round + row_round + qstat + offs_m, mask=inside_q, other=1.0)
            dr = tl.load(DR + u * row_round + qstat + offs_m, mask=inside_q, other=0.0)
            total += tl.exp((y - finite(r_m)[:, None]) - log_sum(r_s)[:, None]) * dr[:, None]
    return total


@triton.jit
def _biased(s, offs_n, inside_k, CARRY_M, CARRY_S, carry_at, COLS, col_round, kstat,
            RUNNING: tl.constexpr, ROUNDS: tl.constexpr):  # fmt: skip
    """``Y = S - c`` of a tile: from the causal carry at its query block (``RUNNING``), else the last round's pair."""
    if RUNNING:
        c_m = tl.load(CARRY_M + carry_at + offs_n, mask=inside_k, other=float("-inf"))
        c_s = tl.load(CARRY_S + carry_at + offs_n, mask=inside_k, other=0.0)
        y, _, _ = running(s, c_m, c_s)
    else:
        last = COLS + (ROUNDS - 1) * 3 * col_round + kstat
        shift = tl.load(last + offs_n, mask=inside_k, other=0.0)
        col_m = tl.load(last + col_round + offs_n, mask=inside_k, other=0.0)
        col_s = tl.load(last + 2 * col_round + offs_n, mask=inside_k, other=1.0)
        y = biased_tile(s, shift, col_m, col_s, ROUNDS > 1)
    return y


@triton.jit
def _d_weights(do, v, s, offs_m, offs_n, seed, head, threshold, factor, DROPOUT: tl.constexpr,
               HAS_LEAD: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr, V_FIRST: tl.constexpr):  # fmt: skip
    """``R * dP = R * dO V^T`` of a tile, and dropout's mask ``R != 0`` (every entry kept without dropout).

    ``V_FIRST`` forms ``(V dO^T)^T`` instead: where the key pass keeps ``V`` over its loop and the product runs
    on the CUDA cores (float32, float64), ``V`` as the first operand takes far fewer registers (the compile
    matrix: 255 registers and spills at 16 x 16 tiles of head size 128, else under 200).
    """
    if V_FIRST:
        dp = tl.trans(tl.dot(v, tl.trans(do), input_precision=PRECISION).to(ACC))
    else:
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION).to(ACC)
    kept = s == s
    if DROPOUT:
        kept = keep(offs_m, offs_n, seed, head, threshold, HAS_LEAD)
        dp = tl.where(kept, dp * factor, 0.0)
    return dp, kept


@triton.jit
def _shift_up(g, carry, BQ: tl.constexpr):
    """Each row of ``g`` replaced by the next one's, the last by ``carry`` (a gather along the rows: exact)."""
    i = tl.arange(0, BQ)
    below = tl.gather(g, tl.minimum(i + 1, BQ - 1)[:, None] + tl.zeros_like(g).to(tl.int32), 0)
    return tl.where((i == BQ - 1)[:, None], carry[None, :], below)


@triton.jit
def _causal_ds(dz, b, g_below, BQ: tl.constexpr):
    """``dS`` of a causal tile and the reverse scan's value ``G`` at its first row (the carry for the tile above)."""
    a = 1.0 - b
    through, g = tl.associative_scan((a, a * dz), 0, compose, reverse=True)
    g = g + through * g_below[None, :]  # the carry from the rows below, carried up
    return a * dz - b * _shift_up(g, g_below, BQ), g


@tunable
@triton.jit
def keys(
    Q, K, V, MASK, DO, DELTA_B, DELTA_P, ALPHA, COLS, ROWS, DC, DR, ROW_B, ROW_P, CARRY_M, CARRY_S, ROW_BIAS,
    G_CARRY, G_AFTER, DK, DV, GAMMA,
    q_off, k_off, v_off, mask_off, o_off, kstat_off, qstat_off, carry_off, alpha_off, n_q_of, n_k_of, head_of, seed_of,
    stride_qt, stride_qd, stride_kt, stride_kd, stride_vt, stride_vd, stride_mm, stride_mn, stride_ot, stride_cb,
    col_round, row_round, d, dv, scale, softcap, threshold, factor, q_start,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
    HAS_MASK: tl.constexpr, MASK_BOOL: tl.constexpr, SOFTCAP: tl.constexpr, CAUSAL: tl.constexpr,
    ALIGN_END: tl.constexpr, BIASED: tl.constexpr, ROUNDS: tl.constexpr, RUNNING: tl.constexpr,
    PLAIN: tl.constexpr, MIXED: tl.constexpr, DROPOUT: tl.constexpr, HAS_LEAD: tl.constexpr,
    GAMMA_ONLY: tl.constexpr, FULL_DS: tl.constexpr, GATED: tl.constexpr,
    HALF: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """dK, dV (and gamma) of one block of keys.

    Modes: one round (doubly, hybrid) or softmax in one pass, ``dK = (slope dZ)^T q - gamma (slope B)^T q``;
    ``GAMMA_ONLY`` (Sinkhorn's first backward pass): gamma and dV; ``FULL_DS`` (Sinkhorn, with every round's
    potentials): dK from the whole ``dS``; ``RUNNING`` (causal): the query blocks from the last up, the reverse
    scan's carry per key, stored at every block's first row (``G_CARRY``) and at the first query's (the carry a
    sharded sweep hands to earlier queries), starting from ``G_AFTER`` below the last query.
    """
    kb, p = tl.program_id(0), tl.program_id(1)
    n_q, n_k = tl.load(n_q_of + p), tl.load(n_k_of + p)
    if kb * BK >= n_k:
        return
    offset = (n_k - n_q if ALIGN_END else 0) + q_start
    offs_n = kb * BK + tl.arange(0, BK)
    offs_d, offs_dv = tl.arange(0, BD), tl.arange(0, BDV)
    k = load_rows(K + tl.load(k_off + p), offs_n, n_k, offs_d, d, stride_kt, stride_kd)
    v = load_rows(V + tl.load(v_off + p), offs_n, n_k, offs_dv, dv, stride_vt, stride_vd)
    q_base, do_base, mask_base = Q + tl.load(q_off + p), DO + tl.load(o_off + p), MASK + tl.load(mask_off + p)
    kstat, qstat, carry = tl.load(kstat_off + p), tl.load(qstat_off + p), tl.load(carry_off + p)
    seed, head = tl.load(seed_of + p), tl.load(head_of + p)
    w_b = 1.0
    if MIXED:
        w_b = tl.load(ALPHA + tl.load(alpha_off + p))
    inside_k = offs_n < n_k
    gamma = tl.zeros((BK,), dtype=ACC)
    d_v = tl.zeros((BK, BDV), dtype=ACC)
    zq = tl.zeros((BK, BD), dtype=ACC)
    bq = tl.zeros((BK, BD), dtype=ACC)
    g_below = tl.zeros((BK,), dtype=ACC)
    if RUNNING:  # the reverse scan's carry from the queries after the last (a sharded sequence's later ones)
        g_below = tl.load(G_AFTER + kstat + offs_n, mask=inside_k, other=0.0)
    n_blocks = tl.cdiv(n_q, BQ)
    first = 0
    if CAUSAL:  # the first query block that sees this key block
        first = tl.maximum(kb * BK - offset, 0) // BQ
    for step in range(first, n_blocks):
        qb = n_blocks - 1 - step + first if RUNNING else step
        offs_m = qb * BQ + tl.arange(0, BQ)
        inside_q = offs_m < n_q
        q = load_rows(q_base, offs_m, n_q, offs_d, d, stride_qt, stride_qd)
        do = load_rows(do_base, offs_m, n_q, offs_dv, dv, stride_ot, 1)
        s, t = scores(
            q, k, offs_m, offs_n, n_q, n_k, offset, mask_base, stride_mm, stride_mn, scale, softcap,
            HAS_MASK, MASK_BOOL, CAUSAL, SOFTCAP, HALF, PRECISION,
        )  # fmt: skip
        slope = 1.0 - t * t if SOFTCAP else t + 1.0
        dp, kept = _d_weights(
            do, v, s, offs_m, offs_n, seed, head, threshold, factor, DROPOUT, HAS_LEAD, ACC, PRECISION, not HALF
        )
        ds = tl.zeros_like(s)
        if BIASED:
            y = _biased(s, offs_n, inside_k, CARRY_M, CARRY_S, carry + qb * stride_cb, COLS, col_round, kstat,
                        RUNNING, ROUNDS)  # fmt: skip
            a = weights(y, tl.load(ROW_B + qstat + offs_m, mask=inside_q, other=0.0),
                        tl.load(ROW_B + row_round + qstat + offs_m, mask=inside_q, other=1.0))  # fmt: skip
            delta = tl.load(DELTA_B + qstat + offs_m, mask=inside_q, other=0.0)
            dz = a * (w_b * dp - delta[:, None])
            kept_a = tl.where(kept, a * factor, 0.0) if DROPOUT else a
            d_v += tl.dot(tl.trans((w_b * kept_a).to(do.dtype)), do, input_precision=PRECISION)
            if RUNNING:
                ds, g = _causal_ds(dz, tl.exp(y), g_below, BQ)
                g_first = tl.sum(tl.where((tl.arange(0, BQ) == 0)[:, None], g, 0.0), axis=0)
                tl.store(G_CARRY + carry + qb * stride_cb + offs_n, g_first, mask=inside_k)
                g_below = g_first
            elif FULL_DS:
                ds = _rounds(s, y, dz, COLS, ROWS, DC, DR, kstat, qstat, offs_m, offs_n, n_q, n_k,
                             col_round, row_round, ROUNDS)  # fmt: skip
            else:
                gamma += tl.sum(dz, axis=0)
                if not GAMMA_ONLY:
                    zq = tl.dot(tl.trans((slope * dz).to(q.dtype)), q, zq, input_precision=PRECISION)
                    bq = tl.dot(tl.trans((slope * tl.exp(y)).to(q.dtype)), q, bq, input_precision=PRECISION)
        if PLAIN:
            if GATED:
                a = sigmoid(s + tl.load(ROW_BIAS + qstat + offs_m, mask=inside_q, other=0.0)[:, None])
                dz_p = a * (1.0 - a) * dp
            else:
                a = weights(s, tl.load(ROW_P + qstat + offs_m, mask=inside_q, other=0.0),
                            tl.load(ROW_P + row_round + qstat + offs_m, mask=inside_q, other=1.0))  # fmt: skip
                delta = tl.load(DELTA_P + qstat + offs_m, mask=inside_q, other=0.0)
                dz_p = a * ((1.0 - w_b) * dp - delta[:, None]) if MIXED else a * (dp - delta[:, None])
            kept_a = tl.where(kept, a * factor, 0.0) if DROPOUT else a
            w_p = (1.0 - w_b) if MIXED else 1.0
            d_v += tl.dot(tl.trans((w_p * kept_a).to(do.dtype)), do, input_precision=PRECISION)
            ds += dz_p
        if RUNNING or FULL_DS or PLAIN:  # dS formed in full (with one round, the plain component's part)
            zq = tl.dot(tl.trans((slope * ds).to(q.dtype)), q, zq, input_precision=PRECISION)
    if RUNNING:  # the reverse scan at the first query: the rows before the first block seeing these keys pass it on
        tl.store(G_CARRY + carry + offs_n, g_below, mask=inside_k)
    d_k = zq * scale  # the products took q unscaled (S = scale q.k)
    if BIASED and not RUNNING and not FULL_DS:
        d_k = (zq - gamma[:, None] * bq) * scale
        tl.store(GAMMA + kstat + offs_n, gamma, mask=inside_k)
    rows_k = inside_k[:, None]
    tl.store(DK + kstat * BD + offs_n[:, None] * BD + offs_d[None, :], d_k, mask=rows_k)
    tl.store(DV + kstat * BDV + offs_n[:, None] * BDV + offs_dv[None, :], d_v, mask=rows_k)


@tunable
@triton.jit
def queries(
    Q, K, V, MASK, DO, DELTA_B, DELTA_P, ALPHA, COLS, ROWS, DC, DR, ROW_B, ROW_P, CARRY_M, CARRY_S, ROW_BIAS,
    G_CARRY, G_AFTER, GAMMA, DQ, DMASK, D_ROW_BIAS,
    q_off, k_off, v_off, mask_off, o_off, kstat_off, qstat_off, carry_off, alpha_off, n_q_of, n_k_of, head_of, seed_of,
    stride_qt, stride_qd, stride_kt, stride_kd, stride_vt, stride_vd, stride_mm, stride_mn, stride_ot, stride_cb,
    col_round, row_round, d, dv, scale, softcap, threshold, factor, n_k_max, q_start,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
    HAS_MASK: tl.constexpr, MASK_BOOL: tl.constexpr, SOFTCAP: tl.constexpr, CAUSAL: tl.constexpr,
    ALIGN_END: tl.constexpr, BIASED: tl.constexpr, ROUNDS: tl.constexpr, RUNNING: tl.constexpr,
    PLAIN: tl.constexpr, MIXED: tl.constexpr, DROPOUT: tl.constexpr, HAS_LEAD: tl.constexpr,
    MASK_GRAD: tl.constexpr, GATED: tl.constexpr,
    HALF: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """dQ of one block of queries, and a floating mask's gradient ``dS`` (``MASK_GRAD``, ``(P, T, K)``)."""
    qb, p = tl.program_id(0), tl.program_id(1)
    n_q, n_k = tl.load(n_q_of + p), tl.load(n_k_of + p)
    if qb * BQ >= n_q:
        return
    offset = (n_k - n_q if ALIGN_END else 0) + q_start
    offs_m = qb * BQ + tl.arange(0, BQ)
    offs_d, offs_dv = tl.arange(0, BD), tl.arange(0, BDV)
    inside_q = offs_m < n_q
    q = load_rows(Q + tl.load(q_off + p), offs_m, n_q, offs_d, d, stride_qt, stride_qd)
    do = load_rows(DO + tl.load(o_off + p), offs_m, n_q, offs_dv, dv, stride_ot, 1)
    k_base, v_base, mask_base = K + tl.load(k_off + p), V + tl.load(v_off + p), MASK + tl.load(mask_off + p)
    kstat, qstat, carry = tl.load(kstat_off + p), tl.load(qstat_off + p), tl.load(carry_off + p)
    seed, head = tl.load(seed_of + p), tl.load(head_of + p)
    w_b = 1.0
    if MIXED:
        w_b = tl.load(ALPHA + tl.load(alpha_off + p))
    row_b_m = tl.load(ROW_B + qstat + offs_m, mask=inside_q, other=0.0)
    row_b_s = tl.load(ROW_B + row_round + qstat + offs_m, mask=inside_q, other=1.0)
    row_p_m = tl.load(ROW_P + qstat + offs_m, mask=inside_q, other=0.0)
    row_p_s = tl.load(ROW_P + row_round + qstat + offs_m, mask=inside_q, other=1.0)
    delta_b = tl.load(DELTA_B + qstat + offs_m, mask=inside_q, other=0.0)
    delta_p = tl.load(DELTA_P + qstat + offs_m, mask=inside_q, other=0.0)
    d_q = tl.zeros((BQ, BD), dtype=ACC)
    row_bias = tl.zeros((BQ,), dtype=ACC)
    d_bias = tl.zeros((BQ,), dtype=ACC)
    if GATED:
        row_bias = tl.load(ROW_BIAS + qstat + offs_m, mask=inside_q, other=0.0)
    stop = n_k
    if CAUSAL:
        stop = tl.minimum(n_k, qb * BQ + BQ + offset)
    last_block = qb == tl.cdiv(n_q, BQ) - 1
    for kb in range(tl.cdiv(stop, BK)):
        offs_n = kb * BK + tl.arange(0, BK)
        inside_k = offs_n < n_k
        k = load_rows(k_base, offs_n, n_k, offs_d, d, stride_kt, stride_kd)
        v = load_rows(v_base, offs_n, n_k, offs_dv, dv, stride_vt, stride_vd)
        s, t = scores(
            q, k, offs_m, offs_n, n_q, n_k, offset, mask_base, stride_mm, stride_mn, scale, softcap,
            HAS_MASK, MASK_BOOL, CAUSAL, SOFTCAP, HALF, PRECISION,
        )  # fmt: skip
        dp, _ = _d_weights(
            do, v, s, offs_m, offs_n, seed, head, threshold, factor, DROPOUT, HAS_LEAD, ACC, PRECISION, False
        )
        ds = tl.zeros_like(s)
        if BIASED:
            y = _biased(s, offs_n, inside_k, CARRY_M, CARRY_S, carry + qb * stride_cb, COLS, col_round, kstat,
                        RUNNING, ROUNDS)  # fmt: skip
            dz = weights(y, row_b_m, row_b_s) * (w_b * dp - delta_b[:, None])
            if RUNNING:
                if last_block:  # the carry from the queries after the last
                    g_below = tl.load(G_AFTER + kstat + offs_n, mask=inside_k, other=0.0)
                else:
                    g_below = tl.load(G_CARRY + carry + (qb + 1) * stride_cb + offs_n, mask=inside_k, other=0.0)
                ds, _ = _causal_ds(dz, tl.exp(y), g_below, BQ)
            else:
                ds = _rounds(s, y, dz, COLS, ROWS, DC, DR, kstat, qstat, offs_m, offs_n, n_q, n_k,
                             col_round, row_round, ROUNDS)  # fmt: skip
        if PLAIN:
            if GATED:
                a = sigmoid(s + row_bias[:, None])
                ds += a * (1.0 - a) * dp
                d_bias += tl.sum(ds, axis=1)
            else:
                w_p = (1.0 - w_b) if MIXED else 1.0
                ds += weights(s, row_p_m, row_p_s) * (w_p * dp - delta_p[:, None])
        if MASK_GRAD:  # the mask is added to the capped scores: its gradient is dS itself, (P, T, K)
            grad_ptrs = DMASK + (qstat + offs_m)[:, None] * n_k_max + offs_n[None, :]
            tl.store(grad_ptrs, ds, mask=inside_q[:, None] & inside_k[None, :])
        if SOFTCAP:
            ds = ds * (1.0 - t * t)
        d_q = tl.dot(ds.to(k.dtype), k, d_q, input_precision=PRECISION)
    d_q = d_q * scale  # the products took k unscaled (S = scale q.k)
    tl.store(DQ + qstat * BD + offs_m[:, None] * BD + offs_d[None, :], d_q, mask=inside_q[:, None])
    if GATED:  # the row bias's gradient: sum_j dS_ij (the bias joins the capped scores)
        tl.store(D_ROW_BIAS + qstat + offs_m, d_bias, mask=inside_q)
