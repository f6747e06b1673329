"""The backend fixture and shared test settings.

``xp`` runs a test once per array library: numpy, array_api_strict, torch,
jax, dask and cupy, and the GPU backends torch-cuda and jax-gpu, skipping
(with the reason) those that are not installed or have no device.  Functions
tagged with ``lazy_xp_function`` in a test module are jitted under JAX and
must not compute the graph under Dask.  On a GPU backend the namespace puts
the arrays that ``asarray`` makes on the device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from array_api_compat import array_namespace
from array_api_extra.testing import patch_lazy_xp_functions
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

BACKENDS = ("numpy", "array_api_strict", "torch", "jax", "dask", "cupy", "torch-cuda", "jax-gpu")
_MODULES = {"jax": "jax.numpy", "dask": "dask.array", "torch-cuda": "torch", "jax-gpu": "jax.numpy"}


def _import_backend(name: str) -> tuple[ModuleType, Any]:
    """The backend's module and the device its arrays go to (None: the library's default)."""
    if name == "cupy":
        cupy = pytest.importorskip("cupy", reason="cupy is not installed")
        if not cupy.cuda.is_available():
            pytest.skip("cupy: no CUDA device on this machine")
        return cupy, None
    module = pytest.importorskip(_MODULES.get(name, name), reason=f"{name} is not installed")
    if name.startswith("jax"):
        import jax

        jax.config.update("jax_enable_x64", True)
        if name == "jax-gpu":
            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            if not gpus:
                pytest.skip("jax: no GPU device on this machine")
            return module, gpus[0]
    if name == "torch-cuda":
        if not module.cuda.is_available():
            pytest.skip("torch: no CUDA device on this machine")
        return module, module.device("cuda")
    return module, None


class _OnDevice:
    """A namespace whose ``asarray`` puts arrays on ``device`` unless told otherwise."""

    def __init__(self, namespace: Any, device: Any) -> None:
        self._namespace, self._device = namespace, device

    def __getattr__(self, name: str) -> Any:
        return getattr(self._namespace, name)

    def asarray(self, obj: Any, /, *, dtype: Any = None, device: Any = None, copy: Any = None) -> Any:
        return self._namespace.asarray(obj, dtype=dtype, device=device or self._device, copy=copy)


@pytest.fixture(params=BACKENDS)
def xp(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The array-API namespace of the test, patched for lazy testing of tagged functions."""
    module, device = _import_backend(request.param)
    namespace = array_namespace(module.asarray([0.0]))
    with patch_lazy_xp_functions(request, xp=namespace):
        yield namespace if device is None else _OnDevice(namespace, device)
