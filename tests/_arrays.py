"""Moving test data between NumPy and the backend under test."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import is_cupy_array, is_dask_array, is_dask_namespace, is_torch_array


def to_xp(xp: ModuleType, a: Any, /, *, dtype: Any = None, chunked: bool = True) -> Any:
    """``a`` (NumPy or nested lists) as an array of ``xp``; Dask arrays get several chunks (one unless ``chunked``)."""
    a = np.asarray(a)
    if is_dask_namespace(xp):
        import dask.array

        chunks = tuple(max(1, (n + 1) // 2) if chunked else n for n in a.shape)
        out = xp.asarray(dask.array.from_array(a, chunks=chunks))
    else:
        out = xp.asarray(a)
    return out if dtype is None else xp.astype(out, dtype)


def to_np(x: Any, /) -> np.ndarray:
    """``x`` of any backend as a NumPy array (computing Dask graphs, detaching torch)."""
    if is_dask_array(x):
        x = x.compute()
    if is_torch_array(x):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            x = x.float()
    if is_cupy_array(x):
        x = x.get()
    try:
        return np.asarray(x)
    except (TypeError, ValueError, RuntimeError):
        return np.from_dlpack(x)
