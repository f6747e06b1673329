"""Decoding with JAX: the state is a pytree, so a decoding step compiles once under jit."""

import jax
import jax.numpy as jnp

import dnorm

q, k, v = (jax.random.normal(jax.random.key(i), (1, 4, 9, 16)) for i in range(3))
_, state = dnorm.decode(q[..., :8, :], k[..., :8, :], v[..., :8, :])
step = jax.jit(lambda q, k, v, state: dnorm.decode(q, k, v, state))
last, state = step(q[..., 8:, :], k, v, state)

full = dnorm.attention(q, k, v, causal=True)
assert jnp.allclose(last, full[..., 8:, :], atol=1e-5)
