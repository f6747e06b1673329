"""The backend fixture and shared test settings.

``xp`` runs a test once per array library that can run on this machine:
numpy, array_api_strict, torch, jax and dask, and cupy, torch-cuda and
jax-gpu where a GPU is there. The backends are chosen once, at collection:
nothing is parametrized for a backend that cannot run here, and the run's
header says which ones were left out and why. Functions tagged with
``lazy_xp_function`` in a test module are jitted under JAX and must not
compute the graph under Dask. On a GPU backend the namespace puts the arrays
that ``asarray`` makes on the device.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterator
from functools import cache
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


def _cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


# Without a GPU the Triton kernels run through Triton's interpreter, on CPU tensors, when a test asks for them
# (kernel="triton"; "auto" never takes the interpreter). It must be set before their module is imported.
if "TRITON_INTERPRET" not in os.environ and not _cuda():
    os.environ["TRITON_INTERPRET"] = "1"
_MODULES = {"jax": "jax.numpy", "dask": "dask.array", "torch-cuda": "torch", "jax-gpu": "jax.numpy"}


@cache
def _backend(name: str) -> tuple[ModuleType, Any] | str:
    """The backend's module and the device its arrays go to (None: the library's default), or why it cannot run."""
    module_name = _MODULES.get(name, name)
    if importlib.util.find_spec(module_name.split(".")[0]) is None:
        return f"{module_name.split('.')[0]} is not installed"
    module = importlib.import_module(module_name)
    if name == "cupy":
        return (module, None) if module.cuda.is_available() else "no CUDA device on this machine"
    if name.startswith("jax"):
        import jax

        jax.config.update("jax_enable_x64", True)
        if name == "jax-gpu":
            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            return (module, gpus[0]) if gpus else "jax has no GPU device on this machine"
    if name == "torch-cuda":
        return (module, module.device("cuda")) if module.cuda.is_available() else "no CUDA device on this machine"
    return module, None


def available() -> list[str]:
    """The backends that run on this machine, in :data:`BACKENDS` order."""
    return [name for name in BACKENDS if not isinstance(_backend(name), str)]


def pytest_report_header(config: pytest.Config) -> list[str]:
    left_out = [f"{name} ({why})" for name in BACKENDS if isinstance(why := _backend(name), str)]
    return [f"backends: {', '.join(available())}", f"not collected: {', '.join(left_out) or 'none'}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "xp" in metafunc.fixturenames:
        metafunc.parametrize("xp", available(), indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out (deselect, not skip) the tests marked ``gpu(backend)`` whose backend cannot run here."""
    runs = set(available())
    kept, left_out = [], []
    for item in items:
        marker = item.get_closest_marker("gpu")
        (left_out if marker is not None and marker.args[0] not in runs else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


class _OnDevice:
    """A namespace whose ``asarray`` puts arrays on ``device`` unless told otherwise."""

    def __init__(self, namespace: Any, device: Any) -> None:
        self._namespace, self._device = namespace, device

    def __getattr__(self, name: str) -> Any:
        return getattr(self._namespace, name)

    def asarray(self, obj: Any, /, *, dtype: Any = None, device: Any = None, copy: Any = None) -> Any:
        return self._namespace.asarray(obj, dtype=dtype, device=device or self._device, copy=copy)


def _namespace(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The namespace of the backend ``request.param``, patched for lazy testing of tagged functions."""
    found = _backend(request.param)
    assert not isinstance(found, str), found
    module, device = found
    namespace = array_namespace(module.asarray([0.0]))
    with patch_lazy_xp_functions(request, xp=namespace):
        yield namespace if device is None else _OnDevice(namespace, device)


@pytest.fixture
def xp(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The array-API namespace of the test (parametrized over :func:`available` by ``pytest_generate_tests``)."""
    yield from _namespace(request)


#: The backends whose namespace has a fused log-cumsum-exp scan that the kernels delegate to (spec DEF-FUSED-SCAN).
FUSED_SCANS = ("torch", "dask", "torch-cuda")


@pytest.fixture(params=[name for name in FUSED_SCANS if name in available()])
def fused_xp(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The namespace of a backend with a fused scan."""
    yield from _namespace(request)


#: The backends the sharded kernels run on with threads as the participants (tests/_ring.py). JAX runs them under
#: ``shard_map`` and torch in processes (tests/test_distributed.py); Dask arrays have no collective to travel by.
RING_BACKENDS = ("numpy", "array_api_strict", "torch", "cupy", "torch-cuda")


@pytest.fixture(params=[name for name in RING_BACKENDS if name in available()])
def ring_xp(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The namespace of a backend whose arrays the thread participants of tests/_ring.py pass around."""
    yield from _namespace(request)
