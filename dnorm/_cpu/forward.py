"""The forward pass, compiled: one sweep over blocks of keys, each block seen by every query that may see it.

A statistic of the key alone (doubly, each Sinkhorn round) is a column reduction over every query, so a block of
keys holds all of it: the block's scores give its column statistic, and at once the rows' online softmax of the
biased scores, with the values (spec THM-DNAS-AS-BIASED-SOFTMAX). Doubly and hybrid take one sweep, as softmax
does; Sinkhorn one per round (the row potential of a round needs every key). The strictly causal running
statistic runs down each key's column (spec DEF-CAUSAL-DNAS), also inside the block: the scan and the row pass are
one loop over the rows. Decoding is the same sweep from a carry (spec DEF-DECODE-STATE).

With ``z = S - max`` (the column's, or the running one) and ``L`` the column's sum, the biased weights are
``exp(z - u) / L`` for a row shift ``u``: no logarithm per score. ``exp(z)`` is already at hand from the column
statistic, so while ``exp(-u)`` is finite (``u`` above ``fast``) a weight costs one product.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from . import blas
from .exp import fexp
from .tiles import FLAGS, finish, mask_block, plain_row, rescale, row_max

Array = Any


@njit(fastmath=FLAGS, cache=True)
def _columns(s: Array, e: Array, lo: int, w: int, lowest: Any, top: Array, total: Array) -> None:
    """The block's column statistic over the rows ``i >= lo``: ``top`` the maximum, ``e = exp(s - top)``, ``total``."""
    n_rows = s.shape[0]
    for jj in range(w):
        top[jj] = s[lo, jj]
        total[jj] = 0
    for i in range(lo + 1, n_rows):
        for jj in range(w):
            top[jj] = max(top[jj], s[i, jj])
    for jj in range(w):
        top[jj] = max(top[jj], lowest)
    for i in range(lo, n_rows):
        for jj in range(w):
            x = fexp(s[i, jj] - top[jj])
            e[i, jj] = x
            total[jj] += x


@njit(fastmath=FLAGS, cache=True)
def _biased_row(
    z: Array,
    e: Array,
    inv: Array,
    w: int,
    i: int,
    fast: Any,
    stats_max: Array,
    stats_sum: Array,
    out: Array,
) -> None:
    """Row ``i``'s online softmax of ``z = s - c``, ``c`` the column statistic (of the key alone, or the running
    one): weights ``exp(z - u) * inv`` into ``e``, which holds ``exp(z)``."""
    top = rescale(stats_max, stats_sum, out, i, row_max(z, w))
    if top == -np.inf:
        for jj in range(w):
            e[jj] = 0
        return
    total = stats_sum[i] * 0
    if top > fast:
        f = fexp(-top)
        for jj in range(w):
            pj = e[jj] * inv[jj] * f
            e[jj] = pj
            total += pj
    else:
        for jj in range(w):
            pj = fexp(z[jj] - top) * inv[jj]
            e[jj] = pj
            total += pj
    stats_sum[i] += total


@njit(fastmath=FLAGS, cache=True)
def _scan_row(row: Array, w: int, lowest: Any, run_max: Array, run_sum: Array, e: Array, inv: Array) -> None:
    """One row of the running column statistic, in place: ``row`` holds ``s`` and becomes ``z = s - max``;
    ``e = exp(z)`` and ``inv = 1 / sum`` after the row (the row's weights ``B = e * inv``).

    In place on purpose: with ``z`` a second name of the same row the compiler cannot prove the two apart and
    runs its scalar loop, five times slower (measured 4.4 against 0.8 ns per key in float32).
    """
    for jj in range(w):
        x = row[jj]
        m = run_max[jj]
        big = max(m, x)
        shift = max(big, lowest)
        d = fexp(min(m, x) - shift)
        up = x > m
        total = run_sum[jj] * d + 1 if up else run_sum[jj] + d
        run_max[jj] = big
        run_sum[jj] = total
        row[jj] = x - shift
        e[jj] = 1 if up else d  # exp(z)
        inv[jj] = 1 / total if total > 0 else 0


@njit(nogil=True, fastmath=FLAGS, cache=True)
def forward(
    q: Array,
    k: Array,
    v: Array,
    bias: Array,
    consts: Array,
    masked: bool,
    rounds: int,
    running: bool,
    plain: bool,
    causal: bool,
    offset: int,
    block: int,
    index: Array,
    carry_max: Array,
    carry_sum: Array,
    out_b: Array,
    out_p: Array,
    col_max: Array,
    col_sum: Array,
    row_shift: Array,
    row_max_: Array,
    row_sum: Array,
    plain_max: Array,
    plain_sum: Array,
    last_max: Array,
    last_sum: Array,
) -> None:  # pragma: no cover - compiled
    """Every output and statistic of the forward pass, for each of the ``N`` rows of ``index``.

    ``index[n]`` picks the query, key, value and bias arrays of problem ``n`` (it and every argument after it
    are per problem: :mod:`.launch` gives each thread a share of the problems); ``consts`` is
    ``(lowest, fast)`` in the dtype. The biased component goes to ``out_b`` (``rounds`` column rounds, or the
    ``running`` statistic from ``carry``), the plain one to ``out_p`` when ``plain``. Per round ``t``:
    ``col_max, col_sum`` (per key), ``row_shift`` (the row potential it starts from) and ``row_max_, row_sum``
    (its rows' online statistics); ``last_max, last_sum``: the running statistic after the last row.
    """
    n_rows, n_keys = q.shape[1], k.shape[1]
    lowest, fast = consts[0], consts[1]
    biased = rounds > 0 or running
    passes = max(rounds, 1)
    for n in range(index.shape[0]):
        qn, kn, vn, bn = q[index[n, 0]], k[index[n, 1]], v[index[n, 2]], bias[index[n, 3]]
        s = np.empty((n_rows, block), q.dtype)
        e = np.empty((n_rows, block), q.dtype)
        wt = np.empty((n_rows, block), q.dtype)
        top = np.empty(block, q.dtype)
        total = np.empty(block, q.dtype)
        inv = np.empty(block, q.dtype)
        no_out = np.empty((n_rows, 0), q.dtype)  # the output row of a Sinkhorn round before the last: none
        row_shift[n, 0, :] = 0
        if plain:
            out_p[n, :, :] = 0
            plain_max[n, :] = -np.inf
            plain_sum[n, :] = 0
        for t in range(passes):
            last = t == passes - 1
            shift, stats_max, stats_sum = row_shift[n, t], row_max_[n, t], row_sum[n, t]
            stats_max[:] = -np.inf
            stats_sum[:] = 0
            if biased and last:
                out_b[n, :, :] = 0
            for j0 in range(0, n_keys, block):
                w = min(block, n_keys - j0)
                lo = max(0, j0 - offset) if causal else 0
                if running:
                    for jj in range(w):
                        seen = j0 + jj < carry_max.shape[1]
                        top[jj] = carry_max[n, j0 + jj] if seen else -np.inf
                        total[jj] = carry_sum[n, j0 + jj] if seen else 0
                if lo < n_rows:
                    blas.scores(qn[lo:], kn[j0:], n_rows - lo, w, s[lo:], block)
                    if masked or causal:
                        mask_block(bn, j0, w, lo, causal, offset, s)
                    if rounds > 1 and t > 0:
                        for i in range(lo, n_rows):
                            for jj in range(w):
                                s[i, jj] -= shift[i]
                    if rounds > 0:
                        _columns(s, e, lo, w, lowest, top, total)
                        for jj in range(w):
                            col_max[n, t, j0 + jj] = top[jj]
                            col_sum[n, t, j0 + jj] = total[jj]
                            inv[jj] = 1 / total[jj] if total[jj] > 0 else 0
                    for i in range(lo, n_rows):
                        row = s[i]
                        if plain and last:
                            plain_row(row, w, i, plain_max[n], plain_sum[n], out_p[n], wt[i])
                        if running:
                            _scan_row(row, w, lowest, top, total, e[i], inv)
                            _biased_row(row, e[i], inv, w, i, fast, stats_max, stats_sum, out_b[n])
                        elif rounds > 0:
                            for jj in range(w):
                                row[jj] -= top[jj]
                            _biased_row(row, e[i], inv, w, i, fast, stats_max, stats_sum, out_b[n] if last else no_out)
                    if plain and last:
                        blas.add_weighted(wt[lo:], block, vn[j0:], n_rows - lo, w, out_p[n, lo:])
                    if biased and last:
                        blas.add_weighted(e[lo:], block, vn[j0:], n_rows - lo, w, out_b[n, lo:])
                if running:
                    for jj in range(w):
                        last_max[n, j0 + jj] = top[jj]
                        last_sum[n, j0 + jj] = total[jj]
            if not last:
                following = row_shift[n, t + 1]
                for i in range(n_rows):
                    if stats_max[i] == -np.inf:
                        following[i] = lowest
                    else:
                        following[i] = shift[i] + stats_max[i] + np.log(stats_sum[i])
        if biased:
            finish(out_b[n], row_sum[n, passes - 1])
        if plain:
            finish(out_p[n], plain_sum[n])
