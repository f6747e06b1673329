"""Autodiff adapters: each gives one framework's autodiff system a forward and a backward pass.

The passes themselves are array-API kernels (:mod:`dnorm._kernels.attention`)
or a backend's fused ones (:mod:`dnorm._fastpath`); nothing here computes
attention. :mod:`.torch` wraps them in a ``torch.autograd.Function``,
:mod:`.jax` in a ``jax.custom_vjp``.
"""
