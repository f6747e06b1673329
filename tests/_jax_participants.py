"""Four JAX host devices along one mesh axis, for tests/test_distributed.py: ``python _jax_participants.py OUT``.

The device count must be set before JAX starts, hence a process of its own. Every case of
``_processes.covering_cases`` and ``JAX_FAMILY_CASES`` runs :func:`dnorm.distributed.attention` inside
``jax.shard_map`` under ``jit`` and ``grad`` and :func:`dnorm.attention` on the whole sequence, and records the
largest differences of the output and the gradients as JSON in ``OUT``. Zigzag cases run on two of the devices:
their two sweeps each way, three tiles at a device's own block and operands chosen by the traced place make the
largest programs, and compiling them for four devices takes twice as long without a path that two do not take.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from _processes import JAX_FAMILY_CASES, covering_cases

import dnorm

jax.config.update("jax_enable_x64", True)
N = 4


def compare(case, rng):
    """Largest differences of the output and of the gradients of (query, key, value, alpha).

    Grouped heads (4 query heads over 2); as the case says, padded keys (sharded with the keys), a softcap and one
    hybrid weight per head (or the family's length scale, sink or sigmoid bias: ``case.family``), unvarying
    along the axis (its gradient is the sum of the devices' shares), or one number. The whole sequence's arrays
    are put in the order of the case's layout, so that the mesh's contiguous sharding hands each device its
    shard, and the results are put back in order before they are compared.
    """
    size = 2 if case.layout == "zigzag" else 4
    length = size * N
    q, d_out = (jnp.asarray(rng.normal(size=(2, 4, length, 3))) for _ in range(2))
    k, v = (jnp.asarray(rng.normal(size=(2, 2, length, 3))) for _ in range(2))
    keep = jnp.asarray(rng.random((2, length)) < 0.8).at[1, 0].set(False)
    alpha = jnp.asarray([0.2, 0.4, 0.6, 0.9]) if case.alpha_array else jnp.asarray(0.3)
    options = {"causal": case.causal, "softcap": 2.0 if case.softcap else None, "scale": 0.5}
    a_or_number = (lambda a: a) if case.alpha_array else (lambda a: 0.3)

    def whole(q, k, v, a):
        mask = keep[:, None, None, :] if case.padding else None
        return dnorm.attention(q, k, v, case.scheme, mask=mask, **{case.family: a_or_number(a)}, **options)

    def ordered(x, axis=-2):  # the positions of every device, one after the other
        parts = [dnorm.distributed.shard(x, rank=r, size=size, layout=case.layout, axis=axis) for r in range(size)]
        return jnp.concatenate(parts, axis=axis)

    def in_order(x):  # back in the sequence's order (on the host: the mesh's arrays are sharded)
        return dnorm.distributed.unshard(np.split(np.asarray(x), size, axis=-2), layout=case.layout)

    mesh = jax.make_mesh((size,), ("seq",), devices=jax.devices()[:size])
    seq = jax.P(None, None, "seq", None)
    sharded = jax.shard_map(
        lambda q, k, v, m, a: dnorm.distributed.attention(
            q,
            k,
            v,
            case.scheme,
            key_padding_mask=m if case.padding else None,
            **{case.family: a_or_number(a)},
            axis_name="seq",
            layout=case.layout,
            strategy=case.strategy,
            **options,
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
    q, k, v, d_out = (jax.device_put(ordered(x), on_devices) for x in (q, k, v, d_out))
    keep = jax.device_put(ordered(keep, -1), jax.sharding.NamedSharding(mesh, jax.P(None, "seq")))
    got = run(lambda q, k, v, a: sharded(q, k, v, keep, a), d_out, q, k, v, alpha)
    got = [*(in_order(x) for x in got[:4]), np.asarray(got[4])]
    return [float(np.max(np.abs(x - np.asarray(y)))) for x, y in zip(got, want, strict=True)]


def main(out_path):
    rng = np.random.default_rng(2009)
    results = {case.name: compare(case, rng) for case in covering_cases() + JAX_FAMILY_CASES}
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
