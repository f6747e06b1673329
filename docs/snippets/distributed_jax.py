"""One sequence over the devices of a mesh axis: causal doubly-normalized attention inside shard_map, under jit
and grad, over zigzag shards (every device meets the same amount of work).

On a machine with one device, this asks JAX for two CPU devices (in a process of its own: JAX fixes the number
when it starts).
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp

import dnorm


def sharded_loss(q, k, v):
    mesh = jax.make_mesh((jax.device_count(),), ("seq",))
    seq = jax.P(None, None, "seq", None)  # (batch, heads, positions, features): positions split over "seq"
    attend = jax.shard_map(
        lambda q, k, v: dnorm.distributed.attention(q, k, v, "doubly", causal=True, axis_name="seq", layout="zigzag"),
        mesh=mesh,
        in_specs=(seq, seq, seq),
        out_specs=seq,
    )
    return jnp.mean(attend(q, k, v) ** 2)


def zigzag(x):
    """The positions in the order of the devices' zigzag shards: device r's block of the mesh is its shard."""
    size = jax.device_count()
    parts = [dnorm.distributed.shard(x, rank=r, size=size, layout="zigzag") for r in range(size)]
    return jnp.concatenate(parts, axis=-2)  # dnorm.distributed.unshard(parts, layout="zigzag") undoes it


def main():
    mesh = jax.make_mesh((jax.device_count(),), ("seq",))
    on_devices = jax.sharding.NamedSharding(mesh, jax.P(None, None, "seq", None))
    q, k, v = (
        jax.device_put(zigzag(jax.random.normal(jax.random.key(i), (1, 4, 512, 32))), on_devices) for i in range(3)
    )
    loss, grads = jax.jit(jax.value_and_grad(sharded_loss, argnums=(0, 1, 2)))(q, k, v)
    print(f"{jax.device_count()} devices: loss {float(loss):.6f}, gradient shapes {[g.shape for g in grads]}")


if jax.device_count() > 1:
    main()
else:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, __file__], env=env, check=True, timeout=300)
