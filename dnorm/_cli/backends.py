"""The array libraries the command runs on, imported only when asked for."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import is_cupy_array, is_dask_array, is_jax_array, is_torch_array

NAMES = ("numpy", "array_api_strict", "torch", "jax", "dask", "cupy")
_MODULES = {"jax": "jax.numpy", "dask": "dask.array"}


@dataclass(frozen=True)
class Backend:
    """One installed array library: its namespace and how to wait for and read back results."""

    name: str
    xp: ModuleType
    device: Any = None

    def asarray(self, a: np.ndarray, /) -> Any:
        """``a`` as an array of this library, on its device."""
        if self.device is None:
            return self.xp.asarray(a)
        return self.xp.asarray(a, device=self.device)

    @staticmethod
    def wait(x: Any, /) -> Any:
        """``x`` computed: Dask graphs run, asynchronous GPU and JAX work finished."""
        if is_dask_array(x):
            return x.compute()
        if is_jax_array(x):
            return x.block_until_ready()
        if is_torch_array(x) and x.is_cuda:
            import torch

            torch.cuda.synchronize(x.device)
        if is_cupy_array(x):
            x.device.synchronize()
        return x

    @staticmethod
    def numpy(x: Any, /) -> np.ndarray:
        """``x`` as a NumPy array on the host."""
        if is_cupy_array(x):
            return np.asarray(x.get())
        if is_torch_array(x):
            return np.asarray(x.detach().cpu())
        return np.asarray(x)


class Unavailable(Exception):
    """The backend cannot run here; the message says why."""


def load(name: str, /) -> Backend:
    """Import one backend; :class:`Unavailable` when it is not installed or has no device."""
    try:
        module = importlib.import_module(_MODULES.get(name, name))
    except ImportError as exc:
        msg = f"not installed ({exc})"
        raise Unavailable(msg) from None
    if name == "cupy" and not module.cuda.is_available():
        msg = "no CUDA device on this machine"
        raise Unavailable(msg)
    if name == "torch" and module.cuda.is_available():
        return Backend(name, module, module.device("cuda"))
    return Backend(name, module)


def installed(names: tuple[str, ...] = NAMES, /) -> tuple[list[Backend], dict[str, str]]:
    """The backends that load, and the reason for each one that does not."""
    found, skipped = [], {}
    for name in names:
        try:
            found.append(load(name))
        except Unavailable as exc:
            skipped[name] = str(exc)
    return found, skipped
