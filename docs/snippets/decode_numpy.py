"""Incremental decoding with NumPy: prefill, then one position at a time, equal to the full computation."""

import numpy as np

import dnorm

rng = np.random.default_rng(0)
q, k, v = (rng.normal(size=(2, 4, 10, 16)) for _ in range(3))  # (batch, heads, positions, dim)

out, state = dnorm.decode(q[..., :6, :], k[..., :6, :], v[..., :6, :])  # prefill positions 0-5
steps = [out]
for p in range(6, 10):  # then one new query at a time, against the cache of keys 0..p
    out, state = dnorm.decode(q[..., p : p + 1, :], k[..., : p + 1, :], v[..., : p + 1, :], state)
    steps.append(out)

full = dnorm.attention(q, k, v, "doubly", causal=True)
assert np.allclose(np.concatenate(steps, axis=-2), full)
print(state.max.shape, state.max.dtype)  # one (max, sum) pair per key and query head
