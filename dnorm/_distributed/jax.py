"""A ring over the devices of a mesh axis, inside ``jax.shard_map`` (under ``jit`` and ``grad``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax


@dataclass(frozen=True)
class AxisRing:
    """The devices along the mesh axis ``axis_name``, in the order of their index on it."""

    axis_name: str
    size: int

    def rank(self) -> Any:
        return jax.lax.axis_index(self.axis_name)

    def pass_on(self, arrays: tuple[Any, ...], by: int, /) -> Callable[[], tuple[Any, ...]]:
        """``ppermute`` by ``by`` places (XLA schedules the transfer beside the computation that does not need it)."""
        pairs = [(i, (i + by) % self.size) for i in range(self.size)]
        moved = tuple(jax.lax.ppermute(x, self.axis_name, pairs) for x in arrays)
        return lambda: moved

    def shared_gradient(self, grad: Any, primal: Any, /) -> Any:
        """The gradient of an input the devices share (``alpha``, unvarying along the axis): the sum of their shares,
        which ``shard_map`` requires of the cotangent of an unvarying input."""
        if self.axis_name in jax.typeof(primal).manual_axis_type.varying:
            return grad
        return jax.lax.psum(grad, self.axis_name)

    def gather(self, x: Any, axis: int, /) -> Any:
        return jax.lax.all_gather(x, self.axis_name, axis=axis % x.ndim, tiled=True)

    def total(self, x: Any, /) -> Any:
        return jax.lax.psum(x, self.axis_name)

    def largest(self, x: Any, /) -> Any:
        return jax.lax.pmax(x, self.axis_name)

    def scatter_total(self, x: Any, axis: int, /) -> Any:
        return jax.lax.psum_scatter(x, self.axis_name, scatter_dimension=axis % x.ndim, tiled=True)


def ring(axis_name: str, /) -> AxisRing:
    """The ring of the enclosing ``shard_map``'s axis ``axis_name``; ``NameError`` where there is none."""
    return AxisRing(axis_name, int(jax.lax.axis_size(axis_name)))
