"""Key blocks passed around the participants of a sharded sequence (spec DEF-SHARDED-ATTENTION).

``P`` participants hold shards of one sequence (:mod:`.sharded_layout`),
participant ``r`` the ``r``-th. A *sweep* brings every key block to every participant once:
at each turn a participant's queries meet the block it holds (:class:`Turn`),
then every participant hands its block to a neighbour. What travels with a
block is of two kinds: what a turn only reads (the keys, values, key mask and
finished per-key statistics) and what turns add to (a statistic being
collected, gradients of the keys). A forward sweep visits a block's owner
first and then the participants after it, in order; a backward one visits the
participants from the last to the owner. Either way what was added to comes
back to the block's owner at the end.

The collective itself is a :class:`Ring` (``torch.distributed`` or a JAX mesh
axis, :mod:`dnorm._distributed`): the kernels only ask it to pass arrays on.
The next block is sent off before a turn computes, so that its transfer
overlaps the turn's work; what the turn adds to follows after it. Under the
all-gather strategy every participant gathers every key (:meth:`Ring.gather`),
its sweeps go around :data:`ALONE` in one turn, and what they collected is
summed over the participants by the ring's other collectives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Array = Any
Arrays = tuple[Array, ...]


class Ring(Protocol):
    """The participants of a sharded sequence, in the order of their shards (hashable: a static option)."""

    @property
    def size(self) -> int:
        """The number of participants ``P``."""
        ...

    def rank(self) -> Any:
        """This participant's place, ``0 <= r < P``: a number, or an integer array where it is traced (JAX)."""
        ...

    def pass_on(self, arrays: Arrays, by: int, /) -> Callable[[], Arrays]:
        """Start sending ``arrays`` to the participant ``by`` places after this one (cyclically); the function
        returned waits for the ones of the participant ``by`` places before and returns them. Every participant
        calls it, and the function, in the same order."""
        ...

    def shared_gradient(self, grad: Array, primal: Array, /) -> Array:
        """The gradient to return for an input every participant holds (``alpha``), from this participant's share."""
        ...

    def gather(self, x: Array, axis: int, /) -> Array:
        """Every participant's ``x`` joined along ``axis`` in the order of their places (an all-gather)."""
        ...

    def total(self, x: Array, /) -> Array:
        """The sum of every participant's ``x`` (an all-reduce)."""
        ...

    def largest(self, x: Array, /) -> Array:
        """The largest of every participant's ``x``, entry by entry (an all-reduce)."""
        ...

    def scatter_total(self, x: Array, axis: int, /) -> Array:
        """This participant's part, along ``axis`` cut into ``size`` equal parts, of the sum of every participant's
        ``x`` (a reduce-scatter)."""
        ...


@dataclass(frozen=True)
class Turn:
    """Where a sweep stands at one participant: the key block it holds.

    ``own``: the participant's own block (the diagonal one under causal).
    ``earlier``: the block's positions come before the participant's: True,
    False, or a boolean array where the participant's place is traced.
    ``step``: how many turns the sweep took here before this one.
    """

    own: bool
    earlier: Any
    step: int


Visit = Callable[[Turn, Arrays, Arrays], Arrays]


@dataclass(frozen=True)
class Alone:
    """One participant holding every key: the sweeps of the all-gather strategy, one turn each, nothing passed on."""

    size: int = 1

    def rank(self) -> int:
        return 0

    def pass_on(self, arrays: Arrays, by: int, /) -> Callable[[], Arrays]:
        return lambda: arrays

    def shared_gradient(self, grad: Array, primal: Array, /) -> Array:
        return grad

    def gather(self, x: Array, axis: int, /) -> Array:
        return x

    def total(self, x: Array, /) -> Array:
        return x

    def largest(self, x: Array, /) -> Array:
        return x

    def scatter_total(self, x: Array, axis: int, /) -> Array:
        return x


ALONE = Alone()


def sweep(
    ring: Ring, read: Arrays, added: Arrays, visit: Visit, /, *, backwards: bool = False, home: bool = True
) -> Arrays:
    """Bring every key block here once; return ``added`` for this participant's own block, back home.

    ``read`` is what the block carries for the stops to read, ``added`` what
    each turn's ``visit(turn, read, added)`` returns with its share added.
    Forwards, a block visits its owner first, then the participants after it
    in order; ``backwards``, the participants from the last to the owner
    (those before the owner first, where a causal block is not seen). A forward sweep whose ``added`` nobody
    reads afterwards (the running statistic after the last participant) leaves it where it is (``home=False``).
    """
    size = ring.size
    rank = ring.rank()
    by = -1 if backwards else 1
    if backwards:
        read = _pass_on(ring, read, by)()
    for step in range(size):
        held = step + 1 if backwards else -step  # this participant holds block rank + held
        turn = Turn(own=held % size == 0, earlier=(rank + held) % size < rank, step=step)
        incoming = _pass_on(ring, read, by) if step < size - 1 else None  # the next block travels meanwhile
        added = visit(turn, read, added)
        if incoming is not None:
            read = incoming()
            added = _pass_on(ring, added, by)()
    return added if backwards or not home else _pass_on(ring, added, by)()


def _pass_on(ring: Ring, arrays: Arrays, by: int, /) -> Callable[[], Arrays]:
    """:meth:`Ring.pass_on` where something moves; None entries (an absent mask) stay None."""
    present = tuple(x for x in arrays if x is not None)
    if ring.size == 1 or not present:
        return lambda: arrays
    receive = ring.pass_on(present, by)

    def received() -> Arrays:
        moved = iter(receive())
        return tuple(None if x is None else next(moved) for x in arrays)

    return received
