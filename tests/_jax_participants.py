"""Four JAX host devices along one mesh axis, for tests/test_distributed.py: ``python _jax_participants.py OUT``.

The device count must be set before JAX starts, hence a process of its own. Every case runs
:func:`dnorm.distributed.attention` inside ``jax.shard_map`` under ``jit`` and ``grad`` and :func:`dnorm.attention`
on the whole sequence, and records the largest differences of the output and the gradients as JSON in ``OUT``.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from _processes import JAX_FAMILY_CASES, family_case

import dnorm

jax.config.update("jax_enable_x64", True)
CASES = [
    (s, c) for s in ("softmax", "doubly", "hybrid", "sinkhorn") for c in (False, True) if (s, c) != ("sinkhorn", True)
]
SIZE, N = 4, 3


def compare(scheme, causal, rng, *, per_head="alpha", masked=True):
    """Largest differences of the output and of the gradients of (query, key, value, alpha), and the dtypes.

    Grouped heads (4 query heads over 2), padded keys (sharded with the keys; none where not ``masked``), a
    softcap and one hybrid weight per head (or one length scale, sink or sigmoid bias per head, ``per_head``),
    unvarying along the axis (its gradient is the sum of the devices' shares).
    """
    length = SIZE * N
    q, d_out = (jnp.asarray(rng.normal(size=(2, 4, length, 3))) for _ in range(2))
    k, v = (jnp.asarray(rng.normal(size=(2, 2, length, 3))) for _ in range(2))
    keep = jnp.asarray(rng.random((2, length)) < 0.8).at[1, 0].set(False)
    if not masked:
        keep = jnp.ones_like(keep)
    alpha = jnp.asarray([0.2, 0.4, 0.6, 0.9])
    options = {"causal": causal, "softcap": 2.0, "scale": 0.5}

    def whole(q, k, v, a):
        return dnorm.attention(q, k, v, scheme, mask=keep[:, None, None, :], **{per_head: a}, **options)

    mesh = jax.make_mesh((SIZE,), ("seq",))
    seq = jax.P(None, None, "seq", None)
    sharded = jax.shard_map(
        lambda q, k, v, m, a: dnorm.distributed.attention(
            q, k, v, scheme, key_padding_mask=m if masked else None, **{per_head: a}, axis_name="seq", **options
        ),
        mesh=mesh,
        in_specs=(seq, seq, seq, jax.P(None, "seq"), jax.P()),
        out_specs=seq,
    )

    def values_and_grads(f, cotangent, *inputs):
        out, pull = jax.vjp(f, *inputs)
        return [out, *pull(cotangent)]

    run = jax.jit(values_and_grads, static_argnums=0)
    want = run(whole, d_out, q, k, v, alpha)
    on_devices = jax.sharding.NamedSharding(mesh, seq)
    q, k, v, d_out = (jax.device_put(x, on_devices) for x in (q, k, v, d_out))
    keep = jax.device_put(keep, jax.sharding.NamedSharding(mesh, jax.P(None, "seq")))
    got = run(lambda q, k, v, a: sharded(q, k, v, keep, a), d_out, q, k, v, alpha)
    diffs = [x - y for x, y in zip(got, want, strict=True)]
    return [float(jnp.max(jnp.abs(d))) for d in diffs]


def main(out_path):
    rng = np.random.default_rng(2009)
    results = {f"{s}-{c}": compare(s, c, rng) for s, c in CASES}
    for per_head, s, c, masked in JAX_FAMILY_CASES:
        results[family_case(per_head, s, c, masked)] = compare(s, c, rng, per_head=per_head, masked=masked)
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
