"""``jax.custom_vjp`` around a forward and a backward pass: memory-light gradients under ``jit`` and ``grad``.

``impl`` is :mod:`dnorm._kernels.attention`; see :mod:`dnorm._autodiff.torch`
for its protocol. The residuals are arrays (O(T + K) per head), so the rule
works inside ``jax.jit``. Reverse-over-reverse differentiation traces the
backward pass itself, whose operations JAX differentiates as usual.
"""

from __future__ import annotations

from functools import partial
from types import ModuleType
from typing import Any

import jax
import jax.numpy as xp
import numpy as np

__all__ = ["attention"]


def attention(query: Any, key: Any, value: Any, mask: Any, alpha: Any, /, *, impl: ModuleType, options: Any) -> Any:
    """``impl``'s attention output, with its backward pass as the VJP rule."""
    return _attention(query, key, value, mask, alpha, impl, options)


@partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _attention(query: Any, key: Any, value: Any, mask: Any, alpha: Any, impl: ModuleType, options: Any) -> Any:
    return impl.forward(query, key, value, mask, alpha, options=options, xp=xp)[0]


def _forward(query: Any, key: Any, value: Any, mask: Any, alpha: Any, impl: ModuleType, options: Any) -> Any:
    out, residuals = impl.forward(query, key, value, mask, alpha, options=options, xp=xp)
    return out, (query, key, value, mask, alpha, out, residuals)


def _backward(impl: ModuleType, options: Any, saved: Any, grad: Any) -> tuple[Any, ...]:
    query, key, value, mask, alpha, out, residuals = saved
    floating_mask = mask is not None and xp.issubdtype(mask.dtype, xp.floating)
    d_query, d_key, d_value, d_mask, d_alpha = impl.backward(
        query, key, value, mask, alpha, out, residuals, grad, options=options, mask_grad=floating_mask, xp=xp
    )
    if mask is not None and not floating_mask:
        d_mask = np.zeros(mask.shape, dtype=jax.dtypes.float0)
    return d_query, d_key, d_value, d_mask, xp.zeros_like(alpha) if d_alpha is None else d_alpha


_attention.defvjp(_forward, _backward)
