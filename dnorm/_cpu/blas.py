"""BLAS's ``gemm`` called from compiled code: the products of a block with any transposition, accumulating.

SciPy's BLAS (Fortran's column-major order) through the entry numba's own ``np.dot`` uses, but with
``beta``: ``C = A B + beta C`` for row-major blocks whose rows are ``ld`` numbers apart. A row-major
``(m, n)`` matrix is a column-major ``(n, m)`` one, so each product below is BLAS's on the transposes.
The caller keeps BLAS to one thread (the passes run one problem per thread, :mod:`.launch`). Products of at
most :data:`FEW_ROWS` query rows (a decoding step) are loops instead: ``gemm`` copies the whole block of keys or
values into its packed layout on every call, which costs about 12 us for 512 keys of 64 numbers here, against
2 us for the loop over one row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit
from numba.extending import overload
from numba.np.linalg import _BLAS, ensure_blas, get_blas_kind
from numba.np.numpy_support import as_dtype

from .tiles import FLAGS

Array = Any

_N, _T = ord("N"), ord("T")
#: Query rows up to which the forward products are loops (measured crossover with ``gemm``: 4 to 8 rows).
FEW_ROWS = 4


def gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """Column-major ``C (m, n) = op(A) op(B) + beta C``, inside compiled code only (numba's ``numba_xxgemm``)."""
    msg = "gemm runs inside numba-compiled functions"
    raise NotImplementedError(msg)


@overload(gemm)
def _gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    ensure_blas()
    xxgemm = _BLAS().numba_xxgemm(c.dtype)  # numba's own entry to SciPy's BLAS: a symbol, so the caller caches
    kind = ord(get_blas_kind(c.dtype))
    dtype = as_dtype(c.dtype)

    def impl(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
        scalars = np.array([1, beta], dtype=dtype)
        xxgemm(kind, _T if trans_a else _N, _T if trans_b else _N, m, n, k, scalars.ctypes, a.ctypes, lda,
               b.ctypes, ldb, scalars[1:].ctypes, c.ctypes, ldc)  # fmt: skip

    return impl


@njit(fastmath=FLAGS, cache=True)
def scores(q: Array, k: Array, rows: int, w: int, s: Array, lds: int) -> None:  # pragma: no cover - compiled
    """``s[:rows, :w] = q[:rows] @ k[:w].T`` (``s``'s rows ``lds`` apart)."""
    if rows > FEW_ROWS:
        gemm(True, False, w, rows, q.shape[1], k, k.shape[1], q, q.shape[1], 0, s, lds)
        return
    for i in range(rows):
        for jj in range(w):
            total = q[i, 0] * 0
            for d in range(q.shape[1]):
                total += q[i, d] * k[jj, d]
            s[i, jj] = total


@njit(fastmath=FLAGS, cache=True)
def add_weighted(p: Array, ldp: int, v: Array, rows: int, w: int, out: Array) -> None:  # pragma: no cover - compiled
    """``out[:rows] += p[:rows, :w] @ v[:w]`` (``p``'s rows ``ldp`` apart)."""
    if rows > FEW_ROWS:
        gemm(False, False, v.shape[1], rows, w, v, v.shape[1], p, ldp, 1, out, out.shape[1])
        return
    for i in range(rows):
        for jj in range(w):
            weight = p[i, jj]
            for d in range(v.shape[1]):
                out[i, d] += weight * v[jj, d]


@njit(cache=True)
def add_transposed(p: Array, ldp: int, x: Array, rows: int, w: int, out: Array) -> None:  # pragma: no cover - compiled
    """``out[:w] += p[:rows, :w].T @ x[:rows]`` (the key-side products of the backward pass)."""
    gemm(False, True, x.shape[1], w, rows, x, x.shape[1], p, ldp, 1, out, out.shape[1])
