"""dnorm.distributed.attention: one sequence sharded over torch.distributed processes or a JAX mesh axis.

torch: 2, 3 and 4 gloo processes on this machine (tests/_torch_participant.py), each bounded in time; JAX: four
host devices inside ``shard_map`` under ``jit`` and ``grad`` (tests/_jax_participants.py, a process of its own, since
the device count is fixed when JAX starts). Both compare every scheme, causal or not, with grouped heads, padded
keys, a softcap and a hybrid weight per head, against :func:`dnorm.attention` on the whole sequence in float64
(spec THM-SHARDED-EQUALS-FULL). The argument checks run here, in one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dnorm

HERE = Path(__file__).parent
TOLERANCE = 1e-12
CASES = [f"{s}-{c}" for s in ("softmax", "doubly", "hybrid", "sinkhorn") for c in (False, True)]
CASES.remove("sinkhorn-True")


def _start(script: str, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-W", "error", str(HERE / script), *args],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _finish(processes: list[subprocess.Popen[bytes]], *, timeout: float) -> None:
    """Wait for every process (killing all of them past ``timeout`` seconds); fail with the output of one that did."""
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
        pytest.fail(f"the participants did not finish within {timeout} s")
    for p, output in zip(processes, outputs, strict=True):
        assert p.returncode == 0, output.decode(errors="replace")[-3000:]


@pytest.mark.theorem("THM-SHARDED-EQUALS-FULL")
@pytest.mark.parametrize("size", [2, 3, 4])
def test_torch_processes_compute_the_whole_sequence(tmp_path, size):
    pytest.importorskip("torch.distributed")
    env = {"WORLD_SIZE": str(size), "INIT": (tmp_path / "rendezvous").as_uri()}
    outs = [tmp_path / f"rank{r}.json" for r in range(size)]
    _finish(
        [_start("_torch_participant.py", str(out), env={**env, "RANK": str(r)}) for r, out in enumerate(outs)],
        timeout=120,
    )
    for rank, out in enumerate(outs):
        results = json.loads(out.read_text())
        for case in [*CASES, "gathered"]:
            errors = results[case]["errors"]  # output, d_query, d_key, d_value, d_alpha (summed over processes)
            assert max(errors) <= TOLERANCE, (rank, case, errors)
            assert results[case]["laid_out"], (rank, case)  # gradients in their input's layout
        assert results["half"]["dtype"] == "torch.bfloat16"
        assert results["half"]["error"] < 2e-2, results["half"]  # bfloat16 rounding of the inputs and the output
        assert "split the sequence into" in results["unequal"], results["unequal"]
        if rank % 2:  # the odd ranks also share a sequence in a group of their own
            assert max(results["group"]["errors"]) <= TOLERANCE, (rank, results["group"])


@pytest.mark.theorem("THM-SHARDED-EQUALS-FULL")
def test_jax_devices_inside_shard_map_compute_the_whole_sequence(tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "jax.json"
    _finish([_start("_jax_participants.py", str(out), env={"JAX_PLATFORMS": "cpu"})], timeout=240)
    results = json.loads(out.read_text())
    for case in CASES:
        errors = results[case]  # output, d_query, d_key, d_value, d_alpha
        assert max(errors) <= TOLERANCE, (case, errors)


def test_other_libraries_and_kernels_are_refused():
    q = np.zeros((1, 2, 4, 3))
    with pytest.raises(TypeError, match=r"torch tensors .* or JAX arrays"):
        dnorm.distributed.attention(q, q, q)
    torch = pytest.importorskip("torch")
    t = torch.zeros(1, 2, 4, 3)
    with pytest.raises(ValueError, match=r"kernel='triton' cannot serve a sharded call"):
        dnorm.distributed.attention(t, t, t, kernel="triton")
    with pytest.raises(ValueError, match="kernel must be one of"):
        dnorm.distributed.attention(t, t, t, kernel="flash")


def test_torch_needs_a_process_group_and_causal_needs_equal_lengths():
    torch = pytest.importorskip("torch")
    t = torch.zeros(1, 2, 4, 3)
    with pytest.raises(ValueError, match="init_process_group"):
        dnorm.distributed.attention(t, t, t)
    with pytest.raises(ValueError, match="axis_name is for JAX"):
        dnorm.distributed.attention(t, t, t, axis_name="seq")
    with pytest.raises(ValueError, match=r"one length .* got 4 queries and 6 keys"):
        dnorm.distributed.attention(t, torch.zeros(1, 2, 6, 3), torch.zeros(1, 2, 6, 3), causal=True)
    with pytest.raises(NotImplementedError, match="sinkhorn"):
        dnorm.distributed.attention(t, t, t, "sinkhorn", causal=True)


def test_the_key_padding_mask_is_checked():
    torch = pytest.importorskip("torch")
    t = torch.zeros(2, 3, 4, 5)
    with pytest.raises(TypeError, match="key_padding_mask must be boolean"):
        dnorm.distributed.attention(t, t, t, key_padding_mask=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(\.\.\., 4\)"):
        dnorm.distributed.attention(t, t, t, key_padding_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not broadcast"):
        dnorm.distributed.attention(t, t, t, key_padding_mask=torch.ones(3, 4, dtype=torch.bool))


def test_jax_needs_the_axis_of_an_enclosing_shard_map():
    jax = pytest.importorskip("jax")
    x = jax.numpy.zeros((1, 2, 4, 3))
    with pytest.raises(ValueError, match="need axis_name="):
        dnorm.distributed.attention(x, x, x)
    with pytest.raises(ValueError, match=r"not an axis of an enclosing jax.shard_map"):
        dnorm.distributed.attention(x, x, x, axis_name="seq")
    with pytest.raises(ValueError, match=r"group is a torch.distributed process group"):
        dnorm.distributed.attention(x, x, x, group=object(), axis_name="seq")


def test_one_device_is_the_whole_sequence():
    """A mesh axis of one device, in this process: the sharded call is :func:`dnorm.attention` itself."""
    jax = pytest.importorskip("jax")
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
