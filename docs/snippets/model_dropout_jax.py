"""Dropout under jax.jit and jax.grad: the key is an argument, as for JAX's own random functions."""

import jax
import jax.numpy as jnp

import dnorm

q, k, v = jax.random.normal(jax.random.key(0), (3, 4, 64, 16))


@jax.jit
def loss(q, k, v, key):
    out = dnorm.attention(q, k, v, "doubly", dropout_p=0.1, dropout_key=key)
    return jnp.mean(out**2)


grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, jax.random.key(1))
assert loss(q, k, v, jax.random.key(1)) == loss(q, k, v, jax.random.key(1))  # same key, same mask
print("jax dropout: ok", [g.shape for g in grads])
