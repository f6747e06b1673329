"""What every Triton kernel of dnorm computes on a tile: scores, masks, dropout's mask, and log-sum-exp pairs.

A tile is ``BQ`` query rows by ``BK`` keys of one program's sequence (a lead
index of the arrays, or one sequence of a packed batch). Its scores are those
of :mod:`dnorm._kernels.scores`: ``(scale * q) . k``, capped by ``softcap *
tanh(S / softcap)``, then the mask (boolean True = may attend, floating added)
and the causal triangle (query ``i`` sees the keys ``j <= i + offset``); a
hidden pair, and every row or key outside the sequence, is ``-inf``.
Log-sum-exp statistics are pairs ``(max, sum)`` as in
:mod:`dnorm._kernels.logsumexp`, merged with a shift that is never ``-inf``.
"""

from __future__ import annotations

import triton
import triton.language as tl

#: lowbias32's multipliers and the golden-ratio constant that separates rows and heads (dnorm._kernels.dropout).
MIX_1 = tl.constexpr(0x7FEB352D)
MIX_2 = tl.constexpr(0x846CA68B)
GOLDEN = tl.constexpr(0x9E3779B9)


@triton.jit
def finite(m):
    """``m`` with ``-inf`` replaced by 0: a shift ``x - finite(m)`` that is ``-inf`` where ``x`` is, never NaN."""
    return tl.where(m == float("-inf"), 0.0, m)


@triton.jit
def merge(m1, s1, m2, s2):
    """The union of two log-sum-exp pairs (the online step); merging with an empty pair returns the other."""
    m = tl.maximum(m1, m2)
    shift = finite(m)
    return m, s1 * tl.exp(m1 - shift) + s2 * tl.exp(m2 - shift)


@triton.jit
def compose(a1, b1, a2, b2):
    """The affine map ``h -> b2 + a2 h`` after ``h -> b1 + a1 h`` (the reverse recurrence of the causal gradient)."""
    return a1 * a2, b2 + a2 * b1


@triton.jit
def log_sum(s):
    """``log(s)`` of a pair's sum, 0 for the empty pair (whose sum is 0; a non-empty one's is at least 1)."""
    return tl.log(tl.maximum(s, 1.0))


@triton.jit
def load_rows(base, offs_rows, n_rows, offs_d, n_d, stride_row, stride_d):
    """A ``(rows, D)`` tile of a ``(n_rows, n_d)`` matrix, zeros outside."""
    ptrs = base + offs_rows[:, None] * stride_row + offs_d[None, :] * stride_d
    return tl.load(ptrs, mask=(offs_rows[:, None] < n_rows) & (offs_d[None, :] < n_d), other=0.0)


@triton.jit
def scores(
    q,
    k,
    offs_m,
    offs_n,
    n_q,
    n_k,
    offset,
    mask_base,
    stride_mm,
    stride_mn,
    scale,
    softcap,
    HAS_MASK: tl.constexpr,
    MASK_BOOL: tl.constexpr,
    CAUSAL: tl.constexpr,
    SOFTCAP: tl.constexpr,
    HALF: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """The masked scores ``(BQ, BK)`` of queries ``q`` against keys ``k``, and tanh of the softcap (or 0).

    ``S = (scale * q) . k`` as the array-API kernels form it; for half-precision inputs (``HALF``) the product
    runs on the inputs and the scale multiplies its float32 result. Outside the sequence (rows ``>= n_q``, keys
    ``>= n_k``) the scores are ``-inf``.
    """
    if HALF:
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
    else:
        s = tl.dot(q * scale, tl.trans(k), input_precision=PRECISION)
    t = tl.zeros_like(s)
    if SOFTCAP:
        t = _tanh(s / softcap)
        s = softcap * t
    inside = (offs_m[:, None] < n_q) & (offs_n[None, :] < n_k)
    if HAS_MASK:
        ptrs = mask_base + offs_m[:, None] * stride_mm + offs_n[None, :] * stride_mn
        if MASK_BOOL:
            allowed = tl.load(ptrs, mask=inside, other=0) != 0
            inside = inside & allowed
        else:
            s = s + tl.load(ptrs, mask=inside, other=0.0).to(s.dtype)
    if CAUSAL:
        inside = inside & (offs_n[None, :] <= offs_m[:, None] + offset)
    return tl.where(inside, s, float("-inf")), t


@triton.jit
def _tanh(x):
    """tanh from one exponential of a non-positive number: ``sign(x) (1 - e) / (1 + e)``, ``e = exp(-2|x|)``."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _mix(x):
    """lowbias32 on uint32 (wrapping arithmetic, logical shifts)."""
    x = x ^ (x >> 16)
    x = x * MIX_1
    x = x ^ (x >> 15)
    x = x * MIX_2
    return x ^ (x >> 16)


@triton.jit
def keep(offs_m, offs_n, seed, head, threshold, HAS_LEAD: tl.constexpr):
    """Dropout's mask of the tile (True = kept): the hash of dnorm._kernels.dropout, the same bits on every backend.

    ``offs_m`` and ``offs_n`` are the query and key positions in the call, ``head`` the flat index of the
    program's lead position, ``seed`` the call's 32-bit seed; ``threshold = round(p * 2**31)``.
    """
    keys = offs_n.to(tl.uint32)[None, :]
    queries = offs_m.to(tl.uint32)[:, None]
    h = _mix(keys ^ seed.to(tl.uint32))
    h = _mix(h + _mix(queries) * GOLDEN)
    if HAS_LEAD:
        h = _mix(h ^ (_mix(head.to(tl.uint32) + 1) * GOLDEN))
    return (h & 0x7FFFFFFF) >= threshold
