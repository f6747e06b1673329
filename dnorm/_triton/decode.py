"""Decoding: a few new queries against a long cache, split over the keys (FlashDecoding; spec DEF-DECODE-STATE).

The ``T`` new queries are the last ``T`` of the ``K`` positions (bottom-right
alignment). :func:`split_step` gives each program one stretch of the cache:
for its keys it continues the running column pair of the state down the new
queries (a scan of ``T`` rows from the state), writes the new state of those
keys, and keeps per new query its share of the row softmax, ``(max, sum)``
and the unnormalized output, for each component. :func:`combine` merges the
shares of every stretch and normalizes the rows (and mixes the hybrid), each
component's sink logit joining its rows there (spec DEF-SINK). Sigmoid
attention (``GATED``) keeps no row statistic: its shares add up.
"""

from __future__ import annotations

import math
from typing import Any

import triton
import triton.language as tl
from torch import Tensor

from . import launch, sinks
from .configs import interpreted, tunable
from .layout import dense
from .rows import online, running, sigmoid
from .tiles import finite, load_rows, scores


@tunable
@triton.jit
def split_step(
    Q, K, V, MASK, STATE_M, STATE_S, NEW_M, NEW_S, PART_M, PART_L, PART_O,
    q_off, k_off, v_off, mask_off, kstat_off, n_q_of, n_k_of,
    stride_qt, stride_qd, stride_kt, stride_kd, stride_vt, stride_vd, stride_mm, stride_mn,
    d, dv, scale, softcap, n_start, n_splits, keys_per_split,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
    HAS_MASK: tl.constexpr, MASK_BOOL: tl.constexpr, SOFTCAP: tl.constexpr, BIASED: tl.constexpr,
    PLAIN: tl.constexpr, HAS_STATE: tl.constexpr, GATED: tl.constexpr, HALF: tl.constexpr, ACC: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    split, p = tl.program_id(0), tl.program_id(1)
    n_q, n_k = tl.load(n_q_of + p), tl.load(n_k_of + p)
    offset = n_k - n_q
    offs_m = tl.arange(0, BQ)
    offs_d, offs_dv = tl.arange(0, BD), tl.arange(0, BDV)
    q = load_rows(Q + tl.load(q_off + p), offs_m, n_q, offs_d, d, stride_qt, stride_qd)
    k_base, v_base, mask_base = K + tl.load(k_off + p), V + tl.load(v_off + p), MASK + tl.load(mask_off + p)
    kstat = tl.load(kstat_off + p)
    m_b = tl.full((BQ,), float("-inf"), dtype=ACC)
    l_b = tl.zeros((BQ,), dtype=ACC)
    acc_b = tl.zeros((BQ, BDV), dtype=ACC)
    m_p, l_p, acc_p = m_b, l_b, acc_b
    begin = split * keys_per_split
    for kb in range(tl.cdiv(keys_per_split, BK)):
        offs_n = begin + kb * BK + tl.arange(0, BK)
        inside = (offs_n < n_k) & (offs_n < begin + keys_per_split)
        k = load_rows(k_base, offs_n, n_k, offs_d, d, stride_kt, stride_kd)
        v = load_rows(v_base, offs_n, n_k, offs_dv, dv, stride_vt, stride_vd)
        s, _ = scores(
            q, k, offs_m, offs_n, n_q, n_k, offset, mask_base, stride_mm, stride_mn, scale, softcap,
            HAS_MASK, MASK_BOOL, True, SOFTCAP, HALF, PRECISION,
        )  # fmt: skip
        s = tl.where(inside[None, :], s, float("-inf"))
        if BIASED:
            c_m = tl.full((BK,), float("-inf"), dtype=ACC)
            c_s = tl.zeros((BK,), dtype=ACC)
            if HAS_STATE:
                earlier = inside & (offs_n < n_start)
                c_m = tl.load(STATE_M + p * n_start + offs_n, mask=earlier, other=float("-inf"))  # (P, K - T)
                c_s = tl.load(STATE_S + p * n_start + offs_n, mask=earlier, other=0.0)
            y, run_m, run_s = running(s, c_m, c_s)
            last = (offs_m == n_q - 1)[:, None]  # the last new query sees every key of the cache
            tl.store(NEW_M + kstat + offs_n, tl.sum(tl.where(last, run_m, 0.0), axis=0), mask=inside)
            tl.store(NEW_S + kstat + offs_n, tl.sum(tl.where(last, run_s, 0.0), axis=0), mask=inside)
            m_b, l_b, acc_b = online(m_b, l_b, acc_b, y, v, s, 1.0, True, False, PRECISION)
        if PLAIN:
            if GATED:  # shares that add up: each one's "max" 0 and "sum" 0
                m_p = tl.zeros((BQ,), dtype=ACC)
                acc_p += tl.dot(sigmoid(s).to(v.dtype), v, input_precision=PRECISION)
            else:
                m_p, l_p, acc_p = online(m_p, l_p, acc_p, s, v, s, 1.0, True, False, PRECISION)
    part = (p * n_splits + split) * BQ  # every row stored: those past the new queries as empty shares
    if BIASED:
        tl.store(PART_M + part + offs_m, m_b)
        tl.store(PART_L + part + offs_m, l_b)
        tl.store(PART_O + (part + offs_m[:, None]) * BDV + offs_dv[None, :], acc_b)
    if PLAIN:
        if BIASED:  # the hybrid's second component after the first, n_splits * P later
            part = (tl.num_programs(1) * n_splits + p * n_splits + split) * BQ
        tl.store(PART_M + part + offs_m, m_p)
        tl.store(PART_L + part + offs_m, l_p)
        tl.store(PART_O + (part + offs_m[:, None]) * BDV + offs_dv[None, :], acc_p)


@tunable
@triton.jit
def combine(
    PART_M, PART_L, PART_O, ALPHA, SINK_P, OUT, alpha_off, n_q_of, n_k_of, n_splits, dv, n_programs, stride_o, dropped,
    BQ: tl.constexpr, BDV: tl.constexpr, BIASED: tl.constexpr, MIXED: tl.constexpr, HAS_SINK: tl.constexpr,
    ACC: tl.constexpr,
):  # fmt: skip
    """The rows of every stretch merged and normalized: ``sum_s acc_s e^(m_s - m) / sum_s l_s e^(m_s - m)``.

    ``HAS_SINK``: each component's sink logit joins its rows, ``-log(p_i + 1)`` for the biased one (decoding is
    causal) and the sink itself for the plain one.
    """
    p = tl.program_id(0)
    n_q = tl.load(n_q_of + p)
    offs_m, offs_dv = tl.arange(0, BQ), tl.arange(0, BDV)
    plain_logit = tl.full((BQ,), float("-inf"), dtype=ACC)
    first_logit = plain_logit
    if HAS_SINK:
        plain_logit = tl.load(SINK_P + p) + tl.zeros((BQ,), dtype=ACC)
        first_logit = plain_logit
        if BIASED:
            first_logit = -tl.log((offs_m + tl.load(n_k_of + p) - n_q + dropped + 1).to(ACC))
    out = _merged(PART_M, PART_L, PART_O, p * n_splits * BQ, offs_m, offs_dv, n_splits, first_logit, BQ, BDV, ACC)
    if MIXED:
        second = _merged(
            PART_M, PART_L, PART_O, (n_programs + p) * n_splits * BQ, offs_m, offs_dv, n_splits, plain_logit,
            BQ, BDV, ACC,
        )  # fmt: skip
        alpha = tl.load(ALPHA + tl.load(alpha_off + p))
        out = alpha * out + (1 - alpha) * second
    rows = offs_m < n_q
    tl.store(
        OUT + (p * stride_o) + offs_m[:, None] * dv + offs_dv[None, :],
        out,
        mask=rows[:, None] & (offs_dv < dv)[None, :],
    )


@triton.jit
def _merged(
    PART_M, PART_L, PART_O, first, offs_m, offs_dv, n_splits, logit,
    BQ: tl.constexpr, BDV: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """The shares of every stretch merged, the sink ``logit`` joined (``-inf``: none), and normalized."""
    m = logit
    for s in range(n_splits):
        m = tl.maximum(m, tl.load(PART_M + first + s * BQ + offs_m))
    total = tl.exp(logit - finite(m))
    acc = tl.zeros((BQ, BDV), dtype=ACC)
    for s in range(n_splits):
        w = tl.exp(tl.load(PART_M + first + s * BQ + offs_m) - finite(m))
        total += w * tl.load(PART_L + first + s * BQ + offs_m)
        acc += w[:, None] * tl.load(PART_O + (first + s * BQ + offs_m[:, None]) * BDV + offs_dv[None, :])
    return acc / tl.where(total == 0, 1.0, total)[:, None]


def decode(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, params: Any, carry: Any, /, *, options: launch.LaunchOptions
) -> tuple[Tensor, Any]:
    """The new queries' output ``(*lead, T, Dv)`` and the state after them (``(*lead, 1, K)`` pairs; None for softmax).

    ``params`` are ``alpha`` and the sink (:class:`dnorm._kernels.schemes.Parameters`). More new queries than one
    block of rows take the forward pass from the state instead (chunked prefill).
    """
    alpha, sink = params
    lead = options.lead
    how = options.plan()
    acc_t, _ = launch.accumulator(q.dtype)
    n_q, n_k = q.shape[-2], k.shape[-2]
    start = None
    if carry is not None:
        start = launch.Pair(*(x.expand(*lead, 1, x.shape[-1]).reshape(-1, x.shape[-1]).to(acc_t).contiguous()
                              for x in carry))  # fmt: skip
    if n_q > 16 or (interpreted() and n_q > options.blocks.forward[0]):
        out, residuals = launch.forward(q, k, v, mask, alpha, None, options=options, start=start, sink=sink)
        state = None
        if residuals.carries is not None:
            state = _state(residuals.carries.last, lead, n_k)
        return out.reshape(*lead, n_q, v.shape[-1]), state
    inputs = launch.Inputs(q, k, v, mask, alpha, dense(q, k, v, mask, alpha, None, lead), options)
    programs = inputs.layout.programs
    block_q = max(16, triton.next_power_of_2(n_q))
    sizes = {**inputs.sizes(), "BQ": block_q}
    per_split = sizes["BK"] * max(1, math.ceil(n_k / (sizes["BK"] * 64)))  # at most 64 stretches per head
    n_splits = triton.cdiv(max(n_k, 1), per_split)
    parts = launch.Pair(*(inputs.new((1 + how.mixed) * programs * n_splits * block_q) for _ in "ms"))
    part_o = inputs.new(parts.max.numel(), sizes["BDV"])
    new = launch.Pair(inputs.new(inputs.layout.k_rows), inputs.new(inputs.layout.k_rows))
    empty = inputs.empty()
    split_step[(n_splits, programs)](
        **split_step.bind(
            inputs.arguments(), sizes, STATE_M=start.max if start else empty, STATE_S=start.sum if start else empty,
            NEW_M=new.max, NEW_S=new.sum, PART_M=parts.max, PART_L=parts.sum, PART_O=part_o,
            n_start=0 if start is None else start.max.shape[-1], n_splits=n_splits, keys_per_split=per_split,
            BIASED=how.biased, PLAIN=how.plain, HAS_STATE=start is not None,
        )
    )  # fmt: skip
    out = inputs.new(programs, n_q, v.shape[-1])
    sink_p = sinks.per_program(sink, inputs.layout, lead, acc_t) if how.sink and sink is not None else empty
    combine[(programs,)](
        **combine.bind(
            inputs.arguments(), sizes, PART_M=parts.max, PART_L=parts.sum, PART_O=part_o, OUT=out, SINK_P=sink_p,
            n_splits=n_splits, n_programs=programs, stride_o=n_q * v.shape[-1], BIASED=how.biased, MIXED=how.mixed,
        )
    )  # fmt: skip
    state = _state(new, lead, n_k) if how.biased else None
    return out.reshape(*lead, n_q, v.shape[-1]), state


def _state(pair: launch.Pair, lead: tuple[int, ...], n_k: int, /) -> Any:
    from .._kernels.logsumexp import LogSumExp

    return LogSumExp(pair.max.reshape(*lead, 1, n_k), pair.sum.reshape(*lead, 1, n_k))
