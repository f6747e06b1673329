"""Where to create new arrays beside an existing one."""

from __future__ import annotations

from typing import Any


def device_of(x: Any, /) -> Any:
    """``x.device``, or None (the default device) where an array has none: Dask arrays, JAX arrays under ``jit``.

    A plain attribute read, so that tracing compilers (``torch.compile``) see
    no cached helper functions.
    """
    return getattr(x, "device", None)
