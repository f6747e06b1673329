"""BLAS's ``gemm`` called from compiled code: the products of a block with any transposition, accumulating.

SciPy's BLAS (Fortran's column-major order) through the entry numba's own ``np.dot`` uses, but with
``beta``: ``C = A B + beta C`` for row-major blocks whose rows are ``ld`` numbers apart. A row-major
``(m, n)`` matrix is a column-major ``(n, m)`` one, so each product below is BLAS's on the transposes.
The caller keeps BLAS to one thread (the passes run one problem per thread, :mod:`.launch`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit
from numba.extending import overload
from numba.np.linalg import _BLAS, ensure_blas, get_blas_kind
from numba.np.numpy_support import as_dtype

Array = Any

_N, _T = ord("N"), ord("T")


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


@njit(cache=True)
def scores(q: Array, k: Array, rows: int, w: int, s: Array, lds: int) -> None:  # pragma: no cover - compiled
    """``s[:rows, :w] = q[:rows] @ k[:w].T`` (``s``'s rows ``lds`` apart)."""
    gemm(True, False, w, rows, q.shape[1], k, k.shape[1], q, q.shape[1], 0, s, lds)


@njit(cache=True)
def add_weighted(p: Array, ldp: int, v: Array, rows: int, w: int, out: Array) -> None:  # pragma: no cover - compiled
    """``out[:rows] += p[:rows, :w] @ v[:w]`` (``p``'s rows ``ldp`` apart)."""
    gemm(False, False, v.shape[1], rows, w, v, v.shape[1], p, ldp, 1, out, out.shape[1])


@njit(cache=True)
def add_transposed(p: Array, ldp: int, x: Array, rows: int, w: int, out: Array) -> None:  # pragma: no cover - compiled
    """``out[:w] += p[:rows, :w].T @ x[:rows]`` (the key-side products of the backward pass)."""
    gemm(False, True, x.shape[1], w, rows, x, x.shape[1], p, ldp, 1, out, out.shape[1])
