"""Sinkhorn's backward pass through its potentials, one round back per launch pair (spec THM-SINKHORN-GRADIENT).

From the last column potential's gradient ``dc^(n-1) = -gamma``, each step back gives a row potential's
gradient (a reduction over the keys, one program per query block) and then the earlier column potential's (a
reduction over the queries, one program per key block); the whole ``dS`` then comes from every round's
(:func:`dnorm._triton.backward.keys` and ``queries`` with all rounds).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .configs import tunable
from .rows import biased_tile
from .tiles import finite, load_rows, log_sum, scores


@tunable
@triton.jit
def potentials(
    Q, K, MASK, COLS, ROWS, D_IN, D_OUT,
    q_off, k_off, mask_off, kstat_off, qstat_off, n_q_of, n_k_of,
    stride_qt, stride_qd, stride_kt, stride_kd, stride_mm, stride_mn,
    col_round, row_round, u, d, scale, softcap,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
    HAS_MASK: tl.constexpr, MASK_BOOL: tl.constexpr, SOFTCAP: tl.constexpr, TO_ROWS: tl.constexpr,
    HALF: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """One step back through Sinkhorn's potentials (0-based round ``u``; spec THM-SINKHORN-GRADIENT).

    ``TO_ROWS``: ``dr^u_i = -sum_j exp(S - c^(u+1) - r^u) dc^(u+1)_j``, one program per query block;
    else ``dc^u_j = -sum_i exp(S - c^u - r^u) dr^u_i``, one program per key block.
    """
    b, p = tl.program_id(0), tl.program_id(1)
    n_q, n_k = tl.load(n_q_of + p), tl.load(n_k_of + p)
    offs_d = tl.arange(0, BD)
    q_base, k_base, mask_base = Q + tl.load(q_off + p), K + tl.load(k_off + p), MASK + tl.load(mask_off + p)
    kstat, qstat = tl.load(kstat_off + p), tl.load(qstat_off + p)
    if TO_ROWS:
        n_b, col_u, outer = n_q, u + 1, tl.cdiv(n_k, BK)
        acc = tl.zeros((BQ,), dtype=ACC)
    else:
        n_b, col_u, outer = n_k, u, tl.cdiv(n_q, BQ)
        acc = tl.zeros((BK,), dtype=ACC)
    if b * (BQ if TO_ROWS else BK) >= n_b:
        return
    for j in range(outer):
        qb = b if TO_ROWS else j
        kb = j if TO_ROWS else b
        offs_m, offs_n = qb * BQ + tl.arange(0, BQ), kb * BK + tl.arange(0, BK)
        inside_q, inside_k = offs_m < n_q, offs_n < n_k
        q = load_rows(q_base, offs_m, n_q, offs_d, d, stride_qt, stride_qd)
        k = load_rows(k_base, offs_n, n_k, offs_d, d, stride_kt, stride_kd)
        s, _ = scores(
            q, k, offs_m, offs_n, n_q, n_k, 0, mask_base, stride_mm, stride_mn, scale, softcap,
            HAS_MASK, MASK_BOOL, False, SOFTCAP, HALF, PRECISION,
        )  # fmt: skip
        base = COLS + col_u * 3 * col_round + kstat
        shift = tl.load(base + offs_n, mask=inside_k, other=0.0)
        col_m = tl.load(base + col_round + offs_n, mask=inside_k, other=0.0)
        col_s = tl.load(base + 2 * col_round + offs_n, mask=inside_k, other=1.0)
        y = biased_tile(s, shift, col_m, col_s, col_u > 0)
        r_m = tl.load(ROWS + u * 2 * row_round + qstat + offs_m, mask=inside_q, other=0.0)
        r_s = tl.load(ROWS + u * 2 * row_round + row_round + qstat + offs_m, mask=inside_q, other=1.0)
        e = tl.exp((y - finite(r_m)[:, None]) - log_sum(r_s)[:, None])
        if TO_ROWS:
            dc = tl.load(D_IN + col_u * col_round + kstat + offs_n, mask=inside_k, other=0.0)
            acc -= tl.sum(e * dc[None, :], axis=1)
        else:
            dr = tl.load(D_IN + u * row_round + qstat + offs_m, mask=inside_q, other=0.0)
            acc -= tl.sum(e * dr[:, None], axis=0)
    if TO_ROWS:
        offs = b * BQ + tl.arange(0, BQ)
        tl.store(D_OUT + u * row_round + qstat + offs, acc, mask=offs < n_q)
    else:
        offs = b * BK + tl.arange(0, BK)
        tl.store(D_OUT + u * col_round + kstat + offs, acc, mask=offs < n_k)
