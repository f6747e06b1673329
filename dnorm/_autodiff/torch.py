"""``torch.autograd.Function`` around a forward and a backward pass: memory-light, first-order gradients.

``impl`` is an implementation the routing layer chose (the array-API kernels or
torch's fused kernels), with the methods of :class:`dnorm._routing.contract.Trainable`:
``forward(query, key, value, mask, params, seed, *, options, xp) -> (out, residuals)``
and ``backward(..., seed, out, residuals, grad, *, options, mask_grad, xp)``, ``seed``
dropout's integer array or None. ``params`` is ``alpha`` or a named tuple of
tensors (``alpha``, the sink: :class:`dnorm._kernels.schemes.Parameters`), each a
tensor autograd sees; its gradient comes back in the same structure.
Autograd records one node and saves the inputs, the output and the residuals
(O(T + K) per head), never the blocks of scores. The backward pass is first
order only: asked to build a graph for a second derivative
(``create_graph=True``), it raises a ``RuntimeError`` instead of returning one
that holds the statistics constant. (``once_differentiable`` is not enough:
it returns zeros for the second derivative with respect to the inputs.)
"""

from __future__ import annotations

from typing import Any

import array_api_compat.torch as xp
import torch

from ._tree import flatten, unflatten

__all__ = ["attention", "needs_grad"]


def needs_grad(*tensors: Any) -> bool:
    """Whether autograd would record a function of these tensors (None entries skipped)."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    params: Any,
    seed: torch.Tensor | None,
    /,
    *,
    impl: Any,
    options: Any,
) -> torch.Tensor:
    """``impl``'s attention output, differentiable in every floating tensor argument (``params``' included)."""
    leaves, spec = flatten(params)
    return _Attention.apply(query, key, value, mask, seed, impl, options, spec, *leaves)


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        seed: torch.Tensor | None,
        impl: Any,
        options: Any,
        params_spec: Any,
        *params: torch.Tensor,
    ) -> torch.Tensor:
        given = unflatten(params_spec, params)
        out, residuals = impl.forward(query, key, value, mask, given, seed, options=options, xp=xp)
        leaves, spec = flatten(residuals)
        ctx.save_for_backward(query, key, value, mask, seed, out, *params, *leaves)
        ctx.spec, ctx.impl, ctx.options, ctx.params_spec, ctx.n_params = spec, impl, options, params_spec, len(params)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():
            msg = (
                "dnorm's attention backward pass is first order only (create_graph=True asks for a second "
                "derivative); differentiate twice with JAX, or through dnorm.normalize(...) @ value"
            )
            raise RuntimeError(msg)
        query, key, value, mask, seed, out, *saved = ctx.saved_tensors
        params, leaves = saved[: ctx.n_params], saved[ctx.n_params :]
        needs = ctx.needs_input_grad
        *grads, d_params = ctx.impl.backward(
            query,
            key,
            value,
            mask,
            unflatten(ctx.params_spec, params),
            seed,
            out,
            unflatten(ctx.spec, leaves),
            grad,
            options=ctx.options,
            mask_grad=needs[3],
            xp=xp,
        )
        # the parameters' gradients leaf by leaf: a plain alpha's is its own, a named tuple's come field by field
        d_leaves = list(d_params) if isinstance(d_params, tuple) else [d_params]
        inputs = (query, key, value, mask)
        laid_out = [_like(g, x) if need else None for g, x, need in zip(grads, inputs, needs[:4], strict=True)]
        d_given = [_like(g, x) if need else None for g, x, need in zip(d_leaves, params, needs[8:], strict=False)]
        return (*laid_out, None, None, None, None, *d_given)


def _like(grad: torch.Tensor | None, x: torch.Tensor, /) -> torch.Tensor | None:
    """``grad`` in the layout of its input ``x`` (contiguous for a contiguous ``x``).

    A slice or a transpose would otherwise reach the caller's graph, where a collective that reads the storage
    (``torch.distributed.nn.functional.all_gather``'s backward on gloo) sums the wrong numbers.
    """
    if grad is None or grad.stride() == x.stride():
        return grad
    return torch.empty_like(x, dtype=grad.dtype).copy_(grad)
