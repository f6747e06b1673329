"""``jax.custom_vjp`` around a forward and a backward pass: memory-light gradients under ``jit`` and ``grad``.

``impl`` is the implementation the routing layer chose (the array-API kernels), with
the methods of :class:`dnorm._routing.contract.Trainable`; see :mod:`dnorm._autodiff.torch`.
``params`` (``alpha``, or the named tuple of ``alpha`` and the sink) is a pytree, its
cotangent one of the same structure.
The residuals are arrays (O(T + K) per head), so the rule
works inside ``jax.jit``. Reverse-over-reverse differentiation traces the
backward pass itself, whose operations JAX differentiates as usual.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as xp
import numpy as np

__all__ = ["attention"]


def attention(query: Any, key: Any, value: Any, mask: Any, alpha: Any, seed: Any, /, *, impl: Any, options: Any) -> Any:
    """``impl``'s attention output, with its backward pass as the VJP rule.

    Compiled as one XLA program (``jax.jit``, the implementation and its options static): called eagerly, a
    block loop would otherwise dispatch, and compile, each of its many small operations on its own; under an
    enclosing ``jit`` it is inlined.
    """
    return _compiled(query, key, value, mask, alpha, seed, impl, options)


@partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _attention(query: Any, key: Any, value: Any, mask: Any, alpha: Any, seed: Any, impl: Any, options: Any) -> Any:
    return impl.forward(query, key, value, mask, alpha, seed, options=options, xp=xp)[0]


def _forward(query: Any, key: Any, value: Any, mask: Any, alpha: Any, seed: Any, impl: Any, options: Any) -> Any:
    out, residuals = impl.forward(query, key, value, mask, alpha, seed, options=options, xp=xp)
    return out, (query, key, value, mask, alpha, seed, out, residuals)


def _backward(impl: Any, options: Any, saved: Any, grad: Any) -> tuple[Any, ...]:
    query, key, value, mask, params, seed, out, residuals = saved
    floating_mask = mask is not None and xp.issubdtype(mask.dtype, xp.floating)
    d_query, d_key, d_value, d_mask, d_params = impl.backward(
        query, key, value, mask, params, seed, out, residuals, grad, options=options, mask_grad=floating_mask, xp=xp
    )
    if mask is not None and not floating_mask:
        d_mask = _no_cotangent(mask)
    d_seed = None if seed is None else _no_cotangent(seed)
    return d_query, d_key, d_value, d_mask, _zeros_where_none(d_params, params), d_seed


def _zeros_where_none(grads: Any, params: Any, /) -> Any:
    """The cotangent of ``params`` (``alpha``, or a named tuple of arrays and None): zeros where none came."""
    if not isinstance(params, tuple):
        return xp.zeros_like(params) if grads is None else grads
    fields = [None if p is None else _zeros_where_none(g, p) for g, p in zip(grads, params, strict=True)]
    kind: Any = type(params)  # a named tuple: its fields in order
    return kind(*fields)


def _no_cotangent(x: Any, /) -> Any:
    """The cotangent of a boolean or integer input: JAX's ``float0`` zeros."""
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


_attention.defvjp(_forward, _backward)
_compiled = jax.jit(_attention, static_argnums=(6, 7))
