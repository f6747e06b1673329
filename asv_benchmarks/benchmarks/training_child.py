"""Print the peak resident memory (MiB) and the time (s) of one training step, in a process of its own.

Arguments: what (``torch-doubly``, ``torch-sdpa``, ``torch-causal``, ``torch-sdpa-causal``, ``jax-doubly``,
``jax-sdpa``), T = K, heads, D. A step is the forward pass and ``sum(out).backward()`` (JAX: ``jit(grad)``,
compiled once before the timed call). Imports only what the step needs.
"""

import os
import resource
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")


def torch_step(what: str, size: int, heads: int, dim: int):
    import torch
    import torch.nn.functional as F

    import dnorm

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, size, dim, generator=gen).requires_grad_() for _ in range(3))
    steps = {
        "torch-doubly": lambda: dnorm.attention(q, k, v, "doubly"),
        "torch-causal": lambda: dnorm.attention(q, k, v, "doubly", causal=True),
        "torch-sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
        "torch-sdpa-causal": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    }
    return lambda: steps[what]().sum().backward()


def jax_step(what: str, size: int, heads: int, dim: int):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import dnorm

    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((1, heads, size, dim), dtype=np.float32)) for _ in range(3))

    def loss(q, k, v):
        if what == "jax-doubly":
            return jnp.sum(dnorm.attention(q, k, v, "doubly"))
        t = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731 (jax's layout is (batch, length, heads, dim))
        return jnp.sum(jax.nn.dot_product_attention(t(q), t(k), t(v)))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    jax.block_until_ready(grad(q, k, v))  # compile
    return lambda: jax.block_until_ready(grad(q, k, v))


def main(what: str, size: int, heads: int, dim: int) -> None:
    step = (jax_step if what.startswith("jax") else torch_step)(what, size, heads, dim)
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, seconds)


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
