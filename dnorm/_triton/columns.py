"""The column statistics: one program per block of keys, the query blocks streamed (spec DEF-CHUNKED-ALGORITHM).

* :func:`column_stats`: ``colLSE`` of ``S - shift_j - r_i`` as a ``(max, sum)``
  pair per key: with neither, doubly's ``c`` (spec DEF-DNAS); with the first
  round's column maximum as ``shift`` and a round's row statistic ``r``,
  Sinkhorn's next round (spec DEF-SINKHORN, computed as in
  :func:`dnorm._kernels.bias.sinkhorn`).
* :func:`carries`: the strictly causal running statistic of every key at the
  start of every block of queries, and after the last one (spec
  DEF-CAUSAL-STATISTIC): the residuals the row pass and the backward pass
  start each query block from, and the state of decoding.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .configs import tunable
from .tiles import finite, load_rows, merge, scores


@tunable
@triton.jit
def column_stats(
    Q, K, MASK, SHIFT, ROWS_M, ROWS_S, OUT_M, OUT_S,
    q_off, k_off, mask_off, kstat_off, qstat_off, n_q_of, n_k_of,
    stride_qt, stride_qd, stride_kt, stride_kd, stride_mm, stride_mn,
    d, scale, softcap,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
    HAS_MASK: tl.constexpr, MASK_BOOL: tl.constexpr, SOFTCAP: tl.constexpr, ROUND: tl.constexpr,
    HALF: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Per key, the pair of ``S_ij - shift_j - r_i`` over the queries (``ROUND``: with the shift and rows)."""
    kb, p = tl.program_id(0), tl.program_id(1)
    n_q, n_k = tl.load(n_q_of + p), tl.load(n_k_of + p)
    if kb * BK >= n_k:
        return
    offs_n = kb * BK + tl.arange(0, BK)
    offs_d = tl.arange(0, BD)
    k = load_rows(K + tl.load(k_off + p), offs_n, n_k, offs_d, d, stride_kt, stride_kd)
    kstat = tl.load(kstat_off + p)
    shift = tl.zeros((BK,), dtype=ACC)
    if ROUND:
        shift = tl.load(SHIFT + kstat + offs_n, mask=offs_n < n_k, other=0.0)
    m_acc = tl.full((BK,), float("-inf"), dtype=ACC)
    s_acc = tl.zeros((BK,), dtype=ACC)
    q_base, mask_base, qstat = Q + tl.load(q_off + p), MASK + tl.load(mask_off + p), tl.load(qstat_off + p)
    for qb in range(tl.cdiv(n_q, BQ)):
        offs_m = qb * BQ + tl.arange(0, BQ)
        q = load_rows(q_base, offs_m, n_q, offs_d, d, stride_qt, stride_qd)
        s, _ = scores(
            q, k, offs_m, offs_n, n_q, n_k, 0, mask_base, stride_mm, stride_mn, scale, softcap,
            HAS_MASK, MASK_BOOL, False, SOFTCAP, HALF, PRECISION,
        )  # fmt: skip
        if ROUND:  # S - M - r, r the row statistic of the previous round (a pair: (x - max) - log(sum))
            r_m = tl.load(ROWS_M + qstat + offs_m, mask=offs_m < n_q, other=0.0)
            r_s = tl.load(ROWS_S + qstat + offs_m, mask=offs_m < n_q, other=1.0)
            s = ((s - shift[None, :]) - finite(r_m)[:, None]) - tl.log(tl.maximum(r_s, 1.0))[:, None]
        top = tl.max(s, axis=0)
        total = tl.sum(tl.exp(s - finite(top)[None, :]), axis=0)
        m_acc, s_acc = merge(m_acc, s_acc, top, total)
    tl.store(OUT_M + kstat + offs_n, m_acc, mask=offs_n < n_k)
    tl.store(OUT_S + kstat + offs_n, s_acc, mask=offs_n < n_k)


@tunable
@triton.jit
def carries(
    Q, K, MASK, START_M, START_S, CARRY_M, CARRY_S, LAST_M, LAST_S,
    q_off, k_off, mask_off, kstat_off, carry_off, n_q_of, n_k_of,
    stride_qt, stride_qd, stride_kt, stride_kd, stride_mm, stride_mn, stride_cb,
    d, scale, softcap, n_start, q_start,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
    HAS_MASK: tl.constexpr, MASK_BOOL: tl.constexpr, SOFTCAP: tl.constexpr, ALIGN_END: tl.constexpr,
    HAS_START: tl.constexpr, HALF: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """The running column pair before every query block (``CARRY``, ``stride_cb`` apart) and after the last.

    ``START`` (``HAS_START``) is the pair of the positions before the call (decoding's state), ``(P, n_start)``
    for the first ``n_start`` keys. A key block no query of a block sees keeps its carry unchanged through that block.
    """
    kb, p = tl.program_id(0), tl.program_id(1)
    n_q, n_k = tl.load(n_q_of + p), tl.load(n_k_of + p)
    if kb * BK >= n_k:
        return
    offset = (n_k - n_q if ALIGN_END else 0) + q_start
    offs_n = kb * BK + tl.arange(0, BK)
    offs_d = tl.arange(0, BD)
    k = load_rows(K + tl.load(k_off + p), offs_n, n_k, offs_d, d, stride_kt, stride_kd)
    kstat, carry = tl.load(kstat_off + p), tl.load(carry_off + p)
    m_acc = tl.full((BK,), float("-inf"), dtype=ACC)
    s_acc = tl.zeros((BK,), dtype=ACC)
    if HAS_START:
        earlier = offs_n < n_start
        m_acc = tl.load(START_M + p * n_start + offs_n, mask=earlier, other=float("-inf"))  # (P, n_start)
        s_acc = tl.load(START_S + p * n_start + offs_n, mask=earlier, other=0.0)
    q_base, mask_base = Q + tl.load(q_off + p), MASK + tl.load(mask_off + p)
    for qb in range(tl.cdiv(n_q, BQ)):
        tl.store(CARRY_M + carry + qb * stride_cb + offs_n, m_acc, mask=offs_n < n_k)
        tl.store(CARRY_S + carry + qb * stride_cb + offs_n, s_acc, mask=offs_n < n_k)
        if kb * BK <= qb * BQ + BQ - 1 + offset:  # some row of the block sees a key of this block
            offs_m = qb * BQ + tl.arange(0, BQ)
            q = load_rows(q_base, offs_m, n_q, offs_d, d, stride_qt, stride_qd)
            s, _ = scores(
                q, k, offs_m, offs_n, n_q, n_k, offset, mask_base, stride_mm, stride_mn, scale, softcap,
                HAS_MASK, MASK_BOOL, True, SOFTCAP, HALF, PRECISION,
            )  # fmt: skip
            top = tl.max(s, axis=0)
            total = tl.sum(tl.exp(s - finite(top)[None, :]), axis=0)
            m_acc, s_acc = merge(m_acc, s_acc, top, total)
    tl.store(LAST_M + kstat + offs_n, m_acc, mask=offs_n < n_k)
    tl.store(LAST_S + kstat + offs_n, s_acc, mask=offs_n < n_k)
