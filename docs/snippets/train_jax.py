"""Train with doubly-normalized attention on JAX: jit(grad) through dnorm's custom VJP."""

import jax
import jax.numpy as jnp

import dnorm

q, k, v = (jax.random.normal(jax.random.key(i), (2, 4, 256, 64)) for i in range(3))


def loss(q, k, v):
    return jnp.mean(dnorm.attention(q, k, v, "doubly", causal=True) ** 2)


grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
print([g.shape for g in grads])
