"""The backend fixture and shared test settings.

``xp`` runs a test once per array library: numpy, array_api_strict, torch,
jax, dask and cupy, skipping (with the reason) those that are not installed or
have no device.  Functions tagged with ``lazy_xp_function`` in a test module
are jitted under JAX and must not compute the graph under Dask.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType

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

BACKENDS = ("numpy", "array_api_strict", "torch", "jax", "dask", "cupy")
_MODULES = {"jax": "jax.numpy", "dask": "dask.array"}


def _import_backend(name: str) -> ModuleType:
    if name == "cupy":
        cupy = pytest.importorskip("cupy", reason="cupy is not installed")
        if not cupy.cuda.is_available():
            pytest.skip("cupy: no CUDA device on this machine")
        return cupy
    module = pytest.importorskip(_MODULES.get(name, name), reason=f"{name} is not installed")
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    return module


@pytest.fixture(params=BACKENDS)
def xp(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    """The array-API namespace of the test, patched for lazy testing of tagged functions."""
    module = _import_backend(request.param)
    namespace = array_namespace(module.asarray([0.0]))
    with patch_lazy_xp_functions(request, xp=namespace):
        yield namespace
