"""The backward pass, compiled: the same sweep over blocks of keys, each block seen by every query that sees it.

With ``dP = dO V^T``, ``delta_i = dO_i . O_i`` and a component's weights ``A``, ``dZ = A * (dP - delta)``
(spec DEF-BLOCKED-BACKWARD). A block of keys holds whole columns, so what the statistic adds is local to it
(spec THM-DNAS-GRADIENT, THM-CAUSAL-GRADIENT): ``gamma_j = sum_i dZ_ij`` and ``dS = dZ - B * gamma`` for doubly;
for the running statistic the reverse scan ``H_i = dZ_i + (1 - B_(i+1)) H_(i+1)`` up each column and
``dS = dZ - B * H``. Doubly, hybrid and every causal scheme take one sweep, as softmax does. Sinkhorn's earlier
rounds go back through the row and column potentials (spec THM-SINKHORN-GRADIENT): a row potential's gradient
sums over every key, so each round back is one more sweep, and a last sweep forms ``dS``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from . import blas
from .exp import fexp
from .forward import _scan_row
from .tiles import FLAGS, mask_block

Array = Any


@njit(fastmath=FLAGS, cache=True)
def _weights(
    s: Array, shift: Array, top: Array, inv: Array, lo: int, w: int, fast: Any, u: Array, ls: Array, a: Array, b: Array
) -> None:
    """A round's row-softmax weights ``a`` and column-softmax weights ``b`` of the block (rows ``i >= lo``).

    ``z = S - shift_i - top_j``; ``b = exp(z) * inv_j``; ``a = exp(z - u_i) * inv_j / ls_i``.
    """
    for i in range(lo, s.shape[0]):
        scale = 1 / ls[i] if ls[i] > 0 else ls[i] * 0
        for jj in range(w):
            z = s[i, jj] - shift[i] - top[jj]
            b[i, jj] = fexp(z) * inv[jj]
        if u[i] > fast:
            f = fexp(-u[i]) * scale
            for jj in range(w):
                a[i, jj] = b[i, jj] * f
        else:
            for jj in range(w):
                a[i, jj] = fexp(s[i, jj] - shift[i] - top[jj] - u[i]) * inv[jj] * scale


@njit(fastmath=FLAGS, cache=True)
def _dz(a: Array, g: Array, delta: Array, lo: int, w: int) -> None:
    """``g = a * (g - delta_i)``: the gradient of a component's biased scores, from ``g = dP``."""
    for i in range(lo, a.shape[0]):
        for jj in range(w):
            g[i, jj] = a[i, jj] * (g[i, jj] - delta[i])


@njit(fastmath=FLAGS, cache=True)
def _column_stat(
    col_max: Array, col_sum: Array, j0: int, w: int, top: Array, inv: Array
) -> None:  # pragma: no cover - compiled
    for jj in range(w):
        top[jj] = col_max[j0 + jj]
        inv[jj] = 1 / col_sum[j0 + jj] if col_sum[j0 + jj] > 0 else 0


@njit(nogil=True, fastmath=FLAGS, cache=True)
def backward(
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
    col_max: Array,
    col_sum: Array,
    row_shift: Array,
    row_max: Array,
    row_sum: Array,
    plain_max: Array,
    plain_sum: Array,
    go_b: Array,
    go_p: Array,
    delta_b: Array,
    delta_p: Array,
    dq: Array,
    dk: Array,
    dv: Array,
) -> None:  # pragma: no cover - compiled
    """``dq`` (of the scaled queries), ``dk``, ``dv`` per problem; ``go_*`` and ``delta_*`` per component."""
    n_rows, n_keys = q.shape[1], k.shape[1]
    lowest, fast = consts[0], consts[1]
    last = max(rounds, 1) - 1
    for n in range(index.shape[0]):
        qn, kn, vn, bn = q[index[n, 0]], k[index[n, 1]], v[index[n, 2]], bias[index[n, 3]]
        s, e, a = (
            np.empty((n_rows, block), q.dtype),
            np.empty((n_rows, block), q.dtype),
            np.empty((n_rows, block), q.dtype),
        )
        g, ap = np.empty((n_rows, block), q.dtype), np.empty((n_rows, block), q.dtype)
        top, inv, total = np.empty(block, q.dtype), np.empty(block, q.dtype), np.empty(block, q.dtype)
        h, b_next = np.empty(block, q.dtype), np.empty(block, q.dtype)
        d_col = np.zeros((max(rounds, 1), n_keys), q.dtype)
        d_row = np.zeros((max(rounds, 1), n_rows), q.dtype)
        dq[n, :, :] = 0
        dk[n, :, :] = 0
        dv[n, :, :] = 0
        # Sinkhorn: one sweep per round back, from the last round's gamma, through the potentials' gradients
        for t in range(last if rounds > 1 else 0, 0, -1):
            for j0 in range(0, n_keys, block):
                w = min(block, n_keys - j0)
                lo = max(0, j0 - offset) if causal else 0  # 0: Sinkhorn has no causal form (one compiled lo type)
                blas.scores(qn, kn[j0:], n_rows, w, s, block)
                if masked:
                    mask_block(bn, j0, w, lo, causal, offset, s)
                _column_stat(col_max[n, t], col_sum[n, t], j0, w, top, inv)
                _weights(s, row_shift[n, t], top, inv, lo, w, fast, row_max[n, t], row_sum[n, t], a, e)
                if t == last:  # gamma of the output's component: d c^R = -gamma
                    blas.scores(go_b[n], vn[j0:], n_rows, w, g, block)
                    _dz(a, g, delta_b[n], lo, w)
                    for jj in range(w):
                        d_col[t, j0 + jj] = -np.sum(g[:, jj])
                else:  # d c^t = -R^t^T d r^t
                    for jj in range(w):
                        d_col[t, j0 + jj] = -np.sum(a[:, jj] * d_row[t])
                for i in range(n_rows):  # d r^(t-1) = -P^t d c^t
                    d_row[t - 1, i] -= np.sum(e[i, :w] * d_col[t, j0 : j0 + w])
        # the last sweep: every block's dS, then the products
        for j0 in range(0, n_keys, block):
            w = min(block, n_keys - j0)
            lo = max(0, j0 - offset) if causal else 0
            if lo >= n_rows:
                continue
            rows = n_rows - lo
            blas.scores(qn[lo:], kn[j0:], rows, w, s[lo:], block)
            if masked or causal:
                mask_block(bn, j0, w, lo, causal, offset, s)
            if plain:
                _plain_weights(s, lo, w, plain_max[n], plain_sum[n], ap)
            if running:
                for jj in range(w):
                    top[jj] = -np.inf
                    total[jj] = 0
                for i in range(lo, n_rows):
                    _scan_row(s[i], w, lowest, top, total, e[i], inv)
                    _scan_a(s[i], e[i], inv, w, row_max[n, 0, i], row_sum[n, 0, i], fast, a[i])
            elif rounds > 0:
                _column_stat(col_max[n, last], col_sum[n, last], j0, w, top, inv)
                _weights(s, row_shift[n, last], top, inv, lo, w, fast, row_max[n, last], row_sum[n, last], a, e)
            if running or rounds > 0:
                blas.scores(go_b[n, lo:], vn[j0:], rows, w, g[lo:], block)
                _dz(a, g, delta_b[n], lo, w)
                blas.add_transposed(a[lo:], block, go_b[n, lo:], rows, w, dv[n, j0:])
            if running:
                for jj in range(w):
                    h[jj] = 0
                    b_next[jj] = 0
                for i in range(n_rows - 1, lo - 1, -1):
                    for jj in range(w):
                        h[jj] = g[i, jj] + (1 - b_next[jj]) * h[jj]
                        b_next[jj] = e[i, jj]
                        g[i, jj] -= e[i, jj] * h[jj]
            elif rounds > 0:
                gamma = np.zeros(w, q.dtype)
                for i in range(n_rows):
                    for jj in range(w):
                        gamma[jj] += g[i, jj]
                for jj in range(w):
                    d_col[last, j0 + jj] = -gamma[jj]
                for t in range(rounds):
                    if t < last:
                        _column_stat(col_max[n, t], col_sum[n, t], j0, w, top, inv)
                        _weights(s, row_shift[n, t], top, inv, lo, w, fast, row_max[n, t], row_sum[n, t], ap, e)
                        if t == 0:  # d c^1 = -R^1^T d r^1: a column sum, local to the block
                            for jj in range(w):
                                d_col[0, j0 + jj] = -np.sum(ap[:, jj] * d_row[0])
                        for i in range(n_rows):
                            for jj in range(w):
                                g[i, jj] += ap[i, jj] * d_row[t, i]
                    elif rounds > 1:  # e holds an earlier round's weights: the last round's again
                        _column_stat(col_max[n, t], col_sum[n, t], j0, w, top, inv)
                        for i in range(n_rows):
                            for jj in range(w):
                                e[i, jj] = fexp(s[i, jj] - row_shift[n, t, i] - top[jj]) * inv[jj]
                    for i in range(n_rows):
                        for jj in range(w):
                            g[i, jj] += e[i, jj] * d_col[t, j0 + jj]
            if plain:
                if running or rounds > 0:  # g holds the biased component's dS: its dP goes to e
                    blas.scores(go_p[n, lo:], vn[j0:], rows, w, e[lo:], block)
                    for i in range(lo, n_rows):
                        for jj in range(w):
                            g[i, jj] += ap[i, jj] * (e[i, jj] - delta_p[n, i])
                else:
                    blas.scores(go_p[n, lo:], vn[j0:], rows, w, g[lo:], block)
                    _dz(ap, g, delta_p[n], lo, w)
                blas.add_transposed(ap[lo:], block, go_p[n, lo:], rows, w, dv[n, j0:])
            blas.add_weighted(g[lo:], block, kn[j0:], rows, w, dq[n, lo:])
            blas.add_transposed(g[lo:], block, qn[lo:], rows, w, dk[n, j0:])


@njit(fastmath=FLAGS, cache=True)
def _plain_weights(s: Array, lo: int, w: int, u: Array, ls: Array, a: Array) -> None:
    """The plain softmax weights ``a = exp(S - u_i) / l_i`` of the block (rows ``i >= lo``)."""
    for i in range(lo, s.shape[0]):
        shift = u[i] if u[i] != -np.inf else u[i] * 0
        scale = 1 / ls[i] if ls[i] > 0 else ls[i] * 0
        for jj in range(w):
            a[i, jj] = fexp(s[i, jj] - shift) * scale


@njit(fastmath=FLAGS, cache=True)
def _scan_a(z: Array, e: Array, inv: Array, w: int, u: Any, ls: Any, fast: Any, a: Array) -> None:
    """One row's weights of the causal component, ``a = exp(z - u) * inv / l``, and ``e = exp(z)`` turned into the
    running statistic's weights ``B = e * inv`` in place."""
    scale = 1 / ls if ls > 0 else ls * 0
    if u > fast:
        f = fexp(-u) * scale
        for jj in range(w):
            b = e[jj] * inv[jj]
            e[jj] = b
            a[jj] = b * f
    else:
        for jj in range(w):
            e[jj] = e[jj] * inv[jj]
            a[jj] = fexp(z[jj] - u) * inv[jj] * scale
