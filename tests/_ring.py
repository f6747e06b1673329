"""Participants of a sharded sequence as threads of one process: the sharded kernels on any backend, no collective.

:func:`run` starts one thread per participant; each gets a :class:`ThreadRing`, whose ``pass_on`` hands arrays over
through a shared box between barriers. ``traced=True`` gives each participant its place as a 0-d array of the
backend instead of a number, as a JAX mesh axis does under ``shard_map``: the kernels then hide later causal
blocks by a mask instead of skipping them.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace


class _Box:
    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size)
        self.slots: list[Any] = [None] * size


@dataclass(frozen=True, eq=False)
class ThreadRing:
    box: _Box
    place: int
    traced: Any = None  # a namespace: the place as its 0-d integer array

    @property
    def size(self) -> int:
        return self.box.size

    def rank(self) -> Any:
        return self.place if self.traced is None else self.traced.asarray(self.place)

    def pass_on(self, arrays: tuple[Any, ...], by: int, /) -> Callable[[], tuple[Any, ...]]:
        """The exchange happens when the returned function is called (every participant calls it in one order)."""

        def exchange() -> tuple[Any, ...]:
            box = self.box
            box.barrier.wait()
            box.slots[(self.place + by) % box.size] = arrays
            box.barrier.wait()
            received = box.slots[self.place]
            box.barrier.wait()
            return received

        return exchange

    def shared_gradient(self, grad: Any, primal: Any, /) -> Any:
        return grad

    def _everyone(self, x: Any) -> list[Any]:
        """Every participant's ``x``, in the order of their places."""
        box = self.box
        box.barrier.wait()
        box.slots[self.place] = x
        box.barrier.wait()
        everyone = list(box.slots)
        box.barrier.wait()
        return everyone

    def gather(self, x: Any, axis: int, /) -> Any:
        return array_namespace(x).concat(self._everyone(x), axis=axis)

    def total(self, x: Any, /) -> Any:
        everyone = self._everyone(x)
        return functools.reduce(lambda a, b: a + b, everyone)

    def largest(self, x: Any, /) -> Any:
        xp = array_namespace(x)
        return functools.reduce(xp.maximum, self._everyone(x))

    def scatter_total(self, x: Any, axis: int, /) -> Any:
        whole = self.total(x)
        n = whole.shape[axis] // self.size
        index = [slice(None)] * whole.ndim
        index[axis] = slice(self.place * n, (self.place + 1) * n)
        return whole[tuple(index)]


def run(size: int, work: Callable[[ThreadRing], Any], /, *, traced: Any = None) -> list[Any]:
    """``work(ring)`` for each of ``size`` participants, in threads; their results in the order of their places."""
    box = _Box(size)
    results: list[Any] = [None] * size
    errors: list[BaseException] = []

    def participant(place: int) -> None:
        try:
            results[place] = work(ThreadRing(box, place, traced))
        except BaseException as error:
            errors.append(error)
            box.barrier.abort()

    threads = [threading.Thread(target=participant, args=(place,)) for place in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results
