"""The contract every implementation of attention satisfies, and the description of a call it is offered.

An implementation says whether it can serve a :class:`Call` (and why not),
what static options it runs with, and computes: :class:`Implementation` is
what every one of them provides (the forward pass without autodiff,
:class:`Computes`); :class:`Trainable` adds the forward pass with its
residuals and the backward pass that the autodiff adapters
(:mod:`dnorm._autodiff`) wrap (:class:`Differentiable`, which the sharded
computation of :mod:`.sharded` also is); :class:`Decoding`
adds the strictly causal continuation from a carry (:func:`dnorm.decode`).
The arrays a method receives are checked, in the compute dtype, grouped-query
heads split (:mod:`dnorm._routing.heads`), the mask at least two-dimensional and
``params`` the learned numbers (:class:`dnorm._kernels.schemes.Parameters`:
``alpha``, an array that broadcasts against ``(..., T, K)``, and the sink's; the
sharded computation takes ``alpha`` alone).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .._validate import Request

Array = Any


@dataclass(frozen=True)
class Call:
    """What a call asks for, as the implementations see it: every static fact that decides who can serve it.

    ``entry`` is ``"attention"`` or ``"decode"``; ``library`` the name of
    :func:`dnorm._validate.library`; ``lead`` the leading shape of the scores
    (grouped heads as ``(..., H, G)``); ``dtype`` the compute dtype;
    ``training`` whether autodiff may ask for gradients (always under JAX);
    ``symbolic`` whether the lengths may be symbols (``torch.compile``);
    ``accelerated`` whether the arrays live on an accelerator; ``seeded``
    whether dropout's seed is drawn.
    """

    entry: str
    library: str
    request: Request
    lead: tuple[int, ...]
    n_queries: int
    n_keys: int
    dtype: Any
    training: bool
    symbolic: bool
    accelerated: bool
    seeded: bool


class Computes(Protocol):
    """What the routing layer runs: the forward pass without autodiff (every implementation, and the sharded one)."""

    def infer(
        self,
        query: Array,
        key: Array,
        value: Array,
        mask: Array | None,
        params: Any,
        seed: Array | None,
        /,
        *,
        options: Any,
        xp: Any,
    ) -> Array:
        """The attention output, where no gradient can be asked for."""
        ...


class Differentiable(Computes, Protocol):
    """A computation with a backward pass: the autodiff adapters wrap :meth:`forward` and :meth:`backward`."""

    def forward(
        self,
        query: Array,
        key: Array,
        value: Array,
        mask: Array | None,
        params: Any,
        seed: Array | None,
        /,
        *,
        options: Any,
        xp: Any,
    ) -> tuple[Array, Any]:
        """The output and the residuals (arrays only, O(T + K) per head) :meth:`backward` needs."""
        ...

    def backward(
        self,
        query: Array,
        key: Array,
        value: Array,
        mask: Array | None,
        params: Any,
        seed: Array | None,
        out: Array,
        residuals: Any,
        grad: Array,
        /,
        *,
        options: Any,
        mask_grad: bool,
        xp: Any,
    ) -> tuple[Array, Array, Array, Array | None, Any]:
        """Gradients of query, key, value, a floating mask (if ``mask_grad``) and the parameters, in their shapes (the
        parameters' in their structure)."""
        ...


class Implementation(Computes, Protocol):
    """An implementation of attention: what it serves, its options, and the forward pass without autodiff.

    ``upcasts``: it takes half precision already in float32 (the routing layer casts); else in its own dtype.
    An implementation that computes a packed batch in one launch is also :class:`Packs`; the routing layer runs
    the sequences of a packed batch one by one through the others.
    """

    name: str
    upcasts: bool

    def refuses(self, call: Call, query: Array, key: Array, value: Array, mask: Array | None, /) -> str | None:
        """Why it cannot serve ``call`` on these arrays (a sentence naming what to change), or None when it can."""
        ...

    def options(self, call: Call, query: Array, key: Array, mask: Array | None, /, *, xp: Any) -> Hashable:
        """The static options of its passes for ``call`` (hashable: a static argument under JAX)."""
        ...


@runtime_checkable
class Packs(Implementation, Protocol):
    """An implementation that computes every sequence of a packed batch in one launch."""

    def packed_options(self, options: Any, starts_q: tuple[int, ...], starts_k: tuple[int, ...], /) -> Hashable:
        """``options`` for the packed batch whose sequences start at ``starts_q`` and ``starts_k`` along axis -2."""
        ...


class Trainable(Implementation, Differentiable, Protocol):
    """An implementation with a backward pass (:class:`Differentiable`)."""


class Decoding(Implementation, Protocol):
    """An implementation that continues the strictly causal pass from a carry (spec DEF-DECODE-STATE)."""

    def decode(
        self,
        query: Array,
        key: Array,
        value: Array,
        mask: Array | None,
        params: Any,
        carry: Any,
        /,
        *,
        options: Any,
        xp: Any,
    ) -> tuple[Array, Any]:
        """The new queries' output and the carry after them (None for softmax)."""
        ...
