"""The namespace's own fused log-cumsum-exp scan, where it pays (array-api-extra's ``_delegation`` pattern).

The strictly causal statistic is a running log-sum-exp down the queries
(spec DEF-CAUSAL-STATISTIC, DEF-FUSED-SCAN). :func:`log_cumsum_exp` computes it with a
namespace's fused scan: ``torch.logcumsumexp``, or, for Dask arrays of NumPy
chunks, ``dask.array.reductions.cumreduction`` of NumPy's
``logaddexp.accumulate`` (one task per chunk and a few to carry between
chunks, where the array-API scan of :mod:`.scan` makes a task per array
operation per chunk). :func:`native_scan` says where the kernels take it.

Where they do not, and why (``python scripts/scan_forms.py`` measures it):
on the CPU the fused scans of torch, NumPy (``logaddexp.accumulate``) and
JAX (``lax.cumlogsumexp``) are sequential scalar loops, slower than the
two-level array-API scan, which runs vectorized passes over whole slices;
array_api_strict and CuPy have none. On CUDA, ``torch.logcumsumexp`` is one
parallel kernel where the two-level scan launches ``O(sqrt(n))`` of them.

This is the one kernels module that imports a library (dask, lazily); the
rest reach a namespace only through ``xp``.
"""

from __future__ import annotations

from typing import Any

Array = Any


def native_scan(like: Array, /, *, xp: Any) -> bool:
    """Whether the kernels take the fused scan for arrays like ``like``: torch on CUDA, Dask of NumPy chunks."""
    name = getattr(xp, "__name__", "")
    if name == "array_api_compat.torch":
        return bool(like.device.type == "cuda")
    if name == "array_api_compat.dask.array":
        return type(getattr(like, "_meta", None)).__module__ == "numpy"
    return False


def log_cumsum_exp(x: Array, /, *, xp: Any) -> Array:
    """``log(cumsum(exp(x)))`` along axis -2, by the namespace's fused scan; ``-inf`` where nothing came yet.

    Row ``i`` combines rows ``<= i`` only (a scan), so it does not depend on
    the later rows' values (spec THM-STRICT-CAUSALITY).
    """
    name = getattr(xp, "__name__", "")
    if name == "array_api_compat.torch":
        return xp.logcumsumexp(x, dim=-2)
    if name == "array_api_compat.dask.array":
        import numpy as np
        from dask.array import reductions

        cumreduction: Any = reductions.cumreduction  # untyped in dask
        return cumreduction(np.logaddexp.accumulate, np.logaddexp, -np.inf, x, axis=x.ndim - 2, dtype=x.dtype)
    msg = f"{name or xp!r} has no fused log-cumsum-exp scan that dnorm delegates to (see native_scan)"
    raise ValueError(msg)
