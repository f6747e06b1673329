"""dnorm.distributed.attention over the devices of a JAX mesh axis, inside ``shard_map`` under ``jit`` and ``grad``.

Four host devices in a process of their own (tests/_jax_participants.py: the device count is fixed when JAX
starts) compare every scheme, causal or not, with grouped heads, against :func:`dnorm.attention` on the whole
sequence in float64 (spec THM-SHARDED-EQUALS-FULL, THM-ZIGZAG-EQUALS-FULL, THM-ALL-GATHER-EQUALS-FULL): the cases
of ``_processes.covering_cases`` give each optional input (a key padding mask, a hybrid weight per head, a
softcap) and each layout and strategy both values, and ``JAX_FAMILY_CASES`` the normalization family's per-head
parameters (length scale, sink, sigmoid bias), every one a compilation of its own; a mesh of this process's
one device and the argument checks run here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _processes import JAX_FAMILY_CASES, TOLERANCE, covering_cases, finish, start

import dnorm

jax = pytest.importorskip("jax")


@pytest.mark.theorem("THM-SHARDED-EQUALS-FULL")
@pytest.mark.theorem("THM-ZIGZAG-EQUALS-FULL")
@pytest.mark.theorem("THM-ALL-GATHER-EQUALS-FULL")
def test_jax_devices_inside_shard_map_compute_the_whole_sequence(tmp_path):
    out = tmp_path / "jax.json"
    finish([start("_jax_participants.py", str(out), env={"JAX_PLATFORMS": "cpu"})], timeout=240)
    results = json.loads(out.read_text())
    for case in covering_cases() + JAX_FAMILY_CASES:
        errors = results[case.name]  # output, d_query, d_key, d_value, d_alpha
        assert max(errors) <= TOLERANCE, (case, errors)


def test_jax_needs_the_axis_of_an_enclosing_shard_map():
    x = jax.numpy.zeros((1, 2, 4, 3))
    with pytest.raises(ValueError, match="need axis_name="):
        dnorm.distributed.attention(x, x, x)
    with pytest.raises(TypeError, match="axis_name must be the name of a shard_map mesh axis"):
        dnorm.distributed.attention(x, x, x, axis_name=0)
    with pytest.raises(ValueError, match=r"not an axis of an enclosing jax.shard_map"):
        dnorm.distributed.attention(x, x, x, axis_name="seq")
    with pytest.raises(ValueError, match=r"group is a torch.distributed process group"):
        dnorm.distributed.attention(x, x, x, group=object(), axis_name="seq")


def test_one_device_is_the_whole_sequence():
    """A mesh axis of one device, in this process: the sharded call is :func:`dnorm.attention` itself."""
    rng = np.random.default_rng(3)
    q, k, v = (jax.numpy.asarray(rng.normal(size=(1, 2, 6, 3))) for _ in range(3))
    mesh = jax.make_mesh((1,), ("seq",))
    spec = jax.P(None, None, "seq", None)
    f = jax.jit(
        jax.shard_map(
            lambda q, k, v: dnorm.distributed.attention(q, k, v, causal=True, axis_name="seq"),
            mesh=mesh,
            in_specs=(spec, spec, spec),
            out_specs=spec,
        )
    )
    on_mesh = jax.sharding.NamedSharding(mesh, spec)
    got = f(*(jax.device_put(x, on_mesh) for x in (q, k, v)))
    np.testing.assert_allclose(got, dnorm.attention(q, k, v, causal=True), rtol=0, atol=1e-12)
