"""The row pass: one program per block of queries, the keys streamed (FlashAttention-2; spec DEF-CHUNKED-ALGORITHM).

Every scheme is a row softmax of the scores plus a bias (spec
THM-DNAS-AS-BIASED-SOFTMAX): ``BIASED`` subtracts a per-key pair (doubly's
``c``, Sinkhorn's last round), ``RUNNING`` the strictly causal running
statistic, recomputed inside each tile from the carry at the query block's
start by a scan down its rows; ``PLAIN`` adds the unbiased softmax beside it
(softmax itself, and hybrid's second component, from the same tiles). The
online softmax keeps ``(max, sum)`` and the output accumulators in the compute
dtype; dropout drops weights after the normalization (spec DEF-DROPOUT). The
row pairs are stored for the backward pass; without ``VALUES`` only they are
(Sinkhorn's row statistics). ``HAS_SINK``: each component's sink logit joins
its row pair after the keys (spec DEF-SINK: ``SINK_B`` and ``SINK_P`` per
program, the running statistic's ``-log(p_i + 1)`` formed here). ``GATED``
(sigmoid attention, spec DEF-SIGMOID): the plain component weighs each key by
``sigmoid(S + b_i)`` alone (``ROW_BIAS``: ``b`` per row; zeros where the mask holds it), and its rows are not
normalized.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .configs import tunable
from .tiles import finite, keep, load_rows, log_sum, merge, scores


@triton.jit
def running(s, carry_m, carry_s):
    """``S - C`` of a causal tile (``C`` the running column statistic from ``carry`` on), and the pairs of ``C``."""
    ones = tl.where(s == float("-inf"), 0.0, 1.0).to(s.dtype)  # the pointwise pairs (S, 1), empty where hidden
    m, t = tl.associative_scan((s, ones), 0, merge)
    m, t = merge(carry_m[None, :], carry_s[None, :], m, t)
    return (s - finite(m)) - log_sum(t), m, t


@triton.jit
def biased_tile(s, shift, col_m, col_s, ROUND: tl.constexpr):
    """``S - c`` for a per-key pair ``c`` (``ROUND``: of the column-centred scores ``S - shift``)."""
    if ROUND:
        s = s - shift[None, :]
    return (s - finite(col_m)[None, :]) - log_sum(col_s)[None, :]


@triton.jit
def online(m, total, acc, y, v, kept, factor, VALUES: tl.constexpr, DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """One online-softmax step of rows ``y`` against values ``v``: the row pair ``(m, total)`` and ``acc`` updated."""
    top = tl.maximum(m, tl.max(y, axis=1))
    rescale = tl.exp(m - finite(top))
    e = tl.exp(y - finite(top)[:, None])
    total = total * rescale + tl.sum(e, axis=1)
    if VALUES:
        if DROPOUT:
            e = tl.where(kept, e * factor, 0.0)
        acc = acc * rescale[:, None] + tl.dot(e.to(v.dtype), v, input_precision=PRECISION)
    return top, total, acc


@triton.jit
def with_sink(m, total, acc, logit):
    """A row pair and its output accumulator with the sink logit joined: one more term, of value 0."""
    top = tl.maximum(m, logit)
    rescale = tl.exp(m - finite(top))
    return top, total * rescale + tl.exp(logit - top), acc * rescale[:, None]


@triton.jit
def sigmoid(s):
    """``1 / (1 + exp(-s))``: 0 for a hidden pair (``-inf``)."""
    return 1.0 / (1.0 + tl.exp(-s))


@tunable
@triton.jit
def row_pass(
    Q, K, V, MASK, SHIFT, COL_M, COL_S, CARRY_M, CARRY_S, ALPHA, SINK_B, SINK_P, ROW_BIAS,
    OUT, OUT_B, OUT_P, ROW_M_B, ROW_S_B, ROW_M_P, ROW_S_P,
    q_off, k_off, v_off, mask_off, o_off, kstat_off, qstat_off, carry_off, alpha_off, n_q_of, n_k_of, head_of, seed_of,
    stride_qt, stride_qd, stride_kt, stride_kd, stride_vt, stride_vd, stride_mm, stride_mn, stride_ot, stride_od,
    stride_cb,
    d, dv, scale, softcap, threshold, factor, dropped, q_start,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
    HAS_MASK: tl.constexpr, MASK_BOOL: tl.constexpr, SOFTCAP: tl.constexpr, CAUSAL: tl.constexpr,
    ALIGN_END: tl.constexpr, BIASED: tl.constexpr, ROUND: tl.constexpr, RUNNING: tl.constexpr,
    PLAIN: tl.constexpr, VALUES: tl.constexpr, DROPOUT: tl.constexpr, HAS_LEAD: tl.constexpr,
    HAS_SINK: tl.constexpr, GATED: tl.constexpr,
    HALF: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    qb, p = tl.program_id(0), tl.program_id(1)
    n_q, n_k = tl.load(n_q_of + p), tl.load(n_k_of + p)
    if qb * BQ >= n_q:
        return
    offset = (n_k - n_q if ALIGN_END else 0) + q_start
    offs_m = qb * BQ + tl.arange(0, BQ)
    offs_d, offs_dv = tl.arange(0, BD), tl.arange(0, BDV)
    q = load_rows(Q + tl.load(q_off + p), offs_m, n_q, offs_d, d, stride_qt, stride_qd)
    k_base, v_base, mask_base = K + tl.load(k_off + p), V + tl.load(v_off + p), MASK + tl.load(mask_off + p)
    kstat, qstat, carry = tl.load(kstat_off + p), tl.load(qstat_off + p), tl.load(carry_off + p) + qb * stride_cb
    seed, head = tl.load(seed_of + p), tl.load(head_of + p)
    row_bias = tl.zeros((BQ,), dtype=ACC)
    if GATED:  # the sigmoid's bias of each row (zeros where a mask holds it)
        row_bias = tl.load(ROW_BIAS + qstat + offs_m, mask=offs_m < n_q, other=0.0)
    m_b = tl.full((BQ,), float("-inf"), dtype=ACC)
    l_b = tl.zeros((BQ,), dtype=ACC)
    acc_b = tl.zeros((BQ, BDV), dtype=ACC)
    m_p, l_p, acc_p = m_b, l_b, acc_b
    stop = n_k
    if CAUSAL:
        stop = tl.minimum(n_k, qb * BQ + BQ + offset)
    for kb in range(tl.cdiv(stop, BK)):
        offs_n = kb * BK + tl.arange(0, BK)
        k = load_rows(k_base, offs_n, n_k, offs_d, d, stride_kt, stride_kd)
        v = load_rows(v_base, offs_n, n_k, offs_dv, dv, stride_vt, stride_vd)
        s, _ = scores(
            q, k, offs_m, offs_n, n_q, n_k, offset, mask_base, stride_mm, stride_mn, scale, softcap,
            HAS_MASK, MASK_BOOL, CAUSAL, SOFTCAP, HALF, PRECISION,
        )  # fmt: skip
        kept = s != s  # no dropout: nothing read
        if DROPOUT:
            kept = keep(offs_m, offs_n, seed, head, threshold, HAS_LEAD)
        if BIASED:
            inside = offs_n < n_k
            if RUNNING:
                c_m = tl.load(CARRY_M + carry + offs_n, mask=inside, other=float("-inf"))
                c_s = tl.load(CARRY_S + carry + offs_n, mask=inside, other=0.0)
                y, _, _ = running(s, c_m, c_s)
            else:
                shift = tl.load(SHIFT + kstat + offs_n, mask=inside, other=0.0)
                col_m = tl.load(COL_M + kstat + offs_n, mask=inside, other=0.0)
                col_s = tl.load(COL_S + kstat + offs_n, mask=inside, other=1.0)
                y = biased_tile(s, shift, col_m, col_s, ROUND)
            m_b, l_b, acc_b = online(m_b, l_b, acc_b, y, v, kept, factor, VALUES, DROPOUT, PRECISION)
        if PLAIN:
            if GATED:  # each key weighed alone: no row statistic, no normalization
                e = sigmoid(s + row_bias[:, None])
                if DROPOUT:
                    e = tl.where(kept, e * factor, 0.0)
                acc_p += tl.dot(e.to(v.dtype), v, input_precision=PRECISION)
            else:
                m_p, l_p, acc_p = online(m_p, l_p, acc_p, s, v, kept, factor, VALUES, DROPOUT, PRECISION)
    if HAS_SINK:
        if BIASED:
            if RUNNING:  # C of the sink's column at position p: sink + log(p + 1) (every query sees it)
                logit_b = -tl.log((offs_m + offset + dropped + 1).to(ACC))
            else:
                logit_b = tl.load(SINK_B + p) + tl.zeros((BQ,), dtype=ACC)
            m_b, l_b, acc_b = with_sink(m_b, l_b, acc_b, logit_b)
        if PLAIN:
            m_p, l_p, acc_p = with_sink(m_p, l_p, acc_p, tl.load(SINK_P + p) + tl.zeros((BQ,), dtype=ACC))
    rows = offs_m < n_q
    o_ptrs = offs_m[:, None] * stride_ot + offs_dv[None, :] * stride_od
    o_mask = rows[:, None] & (offs_dv[None, :] < dv)
    out = tl.zeros((BQ, BDV), dtype=ACC)
    if BIASED:
        tl.store(ROW_M_B + qstat + offs_m, m_b, mask=rows)
        tl.store(ROW_S_B + qstat + offs_m, l_b, mask=rows)
        out = acc_b / tl.where(l_b == 0, 1.0, l_b)[:, None]
    if PLAIN:
        tl.store(ROW_M_P + qstat + offs_m, m_p, mask=rows)
        tl.store(ROW_S_P + qstat + offs_m, l_p, mask=rows)
        plain = acc_p / tl.where(l_p == 0, 1.0, l_p)[:, None]
        if BIASED:  # the hybrid: both components kept for the backward pass, then mixed
            o = tl.load(o_off + p)
            tl.store(OUT_B + o + o_ptrs, out.to(OUT_B.dtype.element_ty), mask=o_mask)
            tl.store(OUT_P + o + o_ptrs, plain.to(OUT_P.dtype.element_ty), mask=o_mask)
            alpha = tl.load(ALPHA + tl.load(alpha_off + p))
            out = alpha * out + (1 - alpha) * plain
        else:
            out = plain
    if VALUES:
        tl.store(OUT + tl.load(o_off + p) + o_ptrs, out.to(OUT.dtype.element_ty), mask=o_mask)
