"""Running an implementation: through the framework's autodiff adapter when gradients may be asked for."""

from __future__ import annotations

from typing import Any, cast

from .. import _validate as check
from .contract import Computes, Differentiable

Array = Any


def training(xp: Any, /, *arrays: Array | None) -> bool:
    """Whether autodiff may ask for gradients: always under JAX, when a tensor requires one under torch."""
    library = check.library(xp)
    if library == "jax":
        return True
    if library == "torch":
        from .._autodiff.torch import needs_grad

        return needs_grad(*arrays)
    return False


def run(impl: Computes, training: bool, /, *inputs: Array | None, options: Any, xp: Any) -> Array:
    """``impl``'s output: its forward pass alone, or wrapped by the autodiff adapter (``training``)."""
    if not training:
        return impl.infer(*inputs, options=options, xp=xp)
    trainable = cast(Differentiable, impl)  # refuses() turned down training for implementations without one
    if check.library(xp) == "jax":
        from .._autodiff import jax as adapter
    else:
        from .._autodiff import torch as adapter  # type: ignore[no-redef]
    return adapter.attention(*inputs, impl=trainable, options=options)
