"""The loops over one block of keys that every pass shares: its scores, a row's online softmax, a row's products.

A block holds the scores of the keys ``j0 <= j < j0 + w`` against the query rows ``lo <= i < T`` (every query that
may see them), row by row in a ``(T, block)`` buffer: each loop over the keys of a row runs on contiguous numbers,
which the compiler vectorizes. Masked pairs are ``-inf``; ``lowest`` (the dtype's lowest finite number) is the
shift that keeps ``-inf - (-inf)`` from making NaN (spec numerics.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from .exp import fexp

#: Fast-math flags without ``nnan`` and ``ninf``: masked scores are ``-inf`` and must stay so.
FLAGS = {"nsz", "arcp", "contract", "reassoc"}

Array = Any


@njit(fastmath=FLAGS, cache=True)
def mask_block(bias: Array, j0: int, w: int, lo: int, causal: bool, offset: int, s: Array) -> None:
    """Add the mask's rows to the block's scores ``s`` (rows ``i >= lo``); ``-inf`` past the causal diagonal."""
    n_rows = s.shape[0]
    by_row, by_key = bias.shape[0] > 1, bias.shape[1] > 1
    for i in range(lo, n_rows):
        row = bias[i if by_row else 0]
        for jj in range(w):
            j = j0 + jj
            x = s[i, jj] + row[j if by_key else 0]
            s[i, jj] = x if not causal or j <= i + offset else -np.inf


@njit(fastmath=FLAGS, cache=True)
def row_max(z: Array, w: int) -> Any:
    """The largest of the first ``w`` numbers of a row."""
    top = z[0]
    for jj in range(1, w):
        top = max(top, z[jj])
    return top


@njit(fastmath=FLAGS, cache=True)
def rescale(stats_max: Array, stats_sum: Array, out: Array, i: int, top: Any) -> Any:
    """Raise row ``i``'s running maximum to include ``top``; rescale its sum and its output row (``out`` has no
    columns for a pass that makes no output). Returns the new maximum."""
    old = stats_max[i]
    new = max(old, top)
    if new != old:
        factor = fexp(old - new)
        stats_sum[i] *= factor
        for d in range(out.shape[1]):
            out[i, d] *= factor
        stats_max[i] = new
    return new


@njit(fastmath=FLAGS, cache=True)
def plain_row(s_row: Array, w: int, i: int, stats_max: Array, stats_sum: Array, out: Array, p: Array) -> None:
    """Row ``i`` of the plain softmax component over this block: online statistics and ``exp(s - max)`` into ``p``."""
    top = rescale(stats_max, stats_sum, out, i, row_max(s_row, w))
    if top == -np.inf:
        for jj in range(w):
            p[jj] = 0
        return
    total = stats_sum[i] * 0
    for jj in range(w):
        pj = fexp(s_row[jj] - top)
        p[jj] = pj
        total += pj
    stats_sum[i] += total


@njit(fastmath=FLAGS, cache=True)
def finish(out: Array, stats_sum: Array) -> None:
    """Divide each row of ``out`` by its sum; rows that saw no key stay zero."""
    for i in range(out.shape[0]):
        total = stats_sum[i]
        if total > 0:
            for d in range(out.shape[1]):
                out[i, d] /= total
