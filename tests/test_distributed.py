"""dnorm.distributed.attention over torch.distributed processes (JAX meshes: tests/test_distributed_jax.py).

2, 3 and 4 gloo processes on this machine (tests/_torch_participant.py), each run bounded in time, compare every
scheme, causal or not, with grouped heads, against :func:`dnorm.attention` on the whole sequence in float64 (spec
THM-SHARDED-EQUALS-FULL, THM-ZIGZAG-EQUALS-FULL, THM-ALL-GATHER-EQUALS-FULL): two processes run every combination of
the optional inputs (a key padding mask, one hybrid weight per head or one number, a softcap) under both layouts
(causal) and both strategies (not causal), three and four a set of cases that gives each option and transport both
values, and every size the normalization family's cases (a length scale, a sink or a sigmoid bias per head,
contiguous shards on the ring; tests/_processes.py). One process group runs all the cases of a size: starting the
processes takes much of the time. The argument checks run here, in one process.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _processes import TOLERANCE, cases, finish, start

import dnorm


@pytest.mark.theorem("THM-SHARDED-EQUALS-FULL")
@pytest.mark.theorem("THM-ZIGZAG-EQUALS-FULL")
@pytest.mark.theorem("THM-ALL-GATHER-EQUALS-FULL")
@pytest.mark.parametrize("size", [2, 3, 4])
def test_torch_processes_compute_the_whole_sequence(tmp_path, size):
    pytest.importorskip("torch.distributed")
    env = {"WORLD_SIZE": str(size), "INIT": (tmp_path / "rendezvous").as_uri()}
    outs = [tmp_path / f"rank{r}.json" for r in range(size)]
    finish(
        [start("_torch_participant.py", str(out), env={**env, "RANK": str(r)}) for r, out in enumerate(outs)],
        timeout=120,
    )
    for rank, out in enumerate(outs):
        results = json.loads(out.read_text())
        for case in [*(case.name for case in cases(size)), "gathered"]:
            errors = results[case]["errors"]  # output, d_query, d_key, d_value, d_alpha (summed over processes)
            assert max(errors) <= TOLERANCE, (rank, case, errors)
            assert results[case]["laid_out"], (rank, case)  # gradients in their input's layout
        assert results["half"]["dtype"] == "torch.bfloat16"
        assert results["half"]["error"] < 2e-2, results["half"]  # bfloat16 rounding of the inputs and the output
        if "half_fused" in results:  # float16 read as it is by the fused stops, accumulated in float32
            assert results["half_fused"]["dtype"] == "torch.float16"
            assert results["half_fused"]["error"] < 5e-3, results["half_fused"]  # measured 1.1e-3
        assert "split the sequence into" in results["unequal"], results["unequal"]
        if rank % 2:  # the odd ranks also share a sequence in a group of their own
            assert max(results["group"]["errors"]) <= TOLERANCE, (rank, results["group"])


def test_other_libraries_and_kernels_are_refused():
    q = np.zeros((1, 2, 4, 3))
    with pytest.raises(TypeError, match=r"torch tensors .* or JAX arrays"):
        dnorm.distributed.attention(q, q, q)
    torch = pytest.importorskip("torch")
    t = torch.zeros(1, 2, 4, 3)
    with pytest.raises(ValueError, match=r"kernel='torch' cannot serve a sharded call"):
        dnorm.distributed.attention(t, t, t, kernel="torch")
    with pytest.raises(ValueError, match="kernel must be one of"):
        dnorm.distributed.attention(t, t, t, kernel="flash")
    # the family's options over other transports than contiguous shards on the ring: refused by name, never dropped
    for scheme, given, transport, named in [
        ("doubly", {"sink": 1.0}, {"layout": "zigzag", "causal": True}, "sink="),
        ("softmax", {"length_scale": torch.ones(1, 2)}, {"layout": "zigzag"}, "length_scale="),
        ("hybrid", {"sink": 1.0}, {"strategy": "all-gather"}, "sink="),
        ("sigmoid", {}, {"strategy": "all-gather"}, "scheme='sigmoid'"),
        ("sigmoid", {"bias": -1.0}, {"layout": "zigzag", "causal": True}, "scheme='sigmoid', bias="),
    ]:
        with pytest.raises(ValueError, match=rf"{named} with layout=.* is not sharded yet"):
            dnorm.distributed.attention(t, t, t, scheme, **given, **transport)


def test_the_fused_stops_serve_what_they_can_and_name_what_they_cannot(tmp_path):
    """kernel='triton' on one process (a sweep of one stop) equals dnorm.attention; what its stops do not serve
    raises, naming why; "auto" never takes the interpreter."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=(tmp_path / "rendezvous").as_uri(), rank=0, world_size=1)
    try:
        t = torch.randn(1, 2, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        if os.environ.get("TRITON_INTERPRET") == "1":
            for scheme, given in [("hybrid", {"alpha": 0.3}), ("sigmoid", {"bias": -1.5})]:
                got = dnorm.distributed.attention(t, t, t, scheme, causal=True, **given, kernel="triton")
                want = dnorm.attention(t, t, t, scheme, causal=True, **given, kernel="array-api")
                np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-12)
            auto = dnorm.distributed.attention(t, t, t, "doubly")
            assert torch.equal(auto, dnorm.distributed.attention(t, t, t, "doubly", kernel="array-api"))
            with pytest.raises(ValueError, match="no bfloat16 arithmetic"):
                dnorm.distributed.attention(*(t.bfloat16() for _ in range(3)), kernel="triton")
        else:  # CPU tensors for the compiled kernels
            with pytest.raises(ValueError, match="cannot serve this sharded call: the Triton kernels need a CUDA"):
                dnorm.distributed.attention(t, t, t, "sigmoid", kernel="triton")
    finally:
        dist.destroy_process_group()


def test_torch_needs_a_process_group_and_causal_needs_equal_lengths():
    torch = pytest.importorskip("torch")
    t = torch.zeros(1, 2, 4, 3)
    with pytest.raises(ValueError, match="init_process_group"):
        dnorm.distributed.attention(t, t, t)
    with pytest.raises(TypeError, match=r"group must be a torch\.distributed ProcessGroup or None"):
        dnorm.distributed.attention(t, t, t, group="world")
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


def test_layouts_and_strategies_are_checked():
    torch = pytest.importorskip("torch")
    t = torch.zeros(1, 2, 4, 3)
    with pytest.raises(ValueError, match=r"layout must be one of \('contiguous', 'zigzag'\), got 'striped'"):
        dnorm.distributed.attention(t, t, t, layout="striped")
    with pytest.raises(ValueError, match=r"strategy must be one of \('ring', 'all-gather'\), got 'broadcast'"):
        dnorm.distributed.attention(t, t, t, strategy="broadcast")
    with pytest.raises(ValueError, match=r"strategy='all-gather' serves non-causal calls"):
        dnorm.distributed.attention(t, t, t, causal=True, strategy="all-gather")
    odd = torch.zeros(1, 2, 5, 3)
    with pytest.raises(ValueError, match=r"layout='zigzag' shards hold two equal chunks: .* got 5"):
        dnorm.distributed.attention(odd, odd, odd, layout="zigzag")


def test_shard_and_unshard_are_inverse_and_check_their_arguments():
    x = np.arange(2 * 12).reshape(2, 12, 1)
    for layout in ("contiguous", "zigzag"):
        parts = [dnorm.distributed.shard(x, rank=r, size=3, layout=layout) for r in range(3)]
        np.testing.assert_array_equal(dnorm.distributed.unshard(parts, layout=layout), x)
    assert dnorm.distributed.shard(x, rank=0, size=3, layout="zigzag")[0, :, 0].tolist() == [0, 1, 10, 11]
    mask = np.arange(12)[None, :] % 5 > 0  # a key padding mask: the sequence on axis -1
    np.testing.assert_array_equal(dnorm.distributed.shard(mask, rank=2, size=3, layout="zigzag", axis=-1), mask[:, 4:8])
    with pytest.raises(ValueError, match=r"cuts the sequence into 8 equal chunks: .* multiple of 8, got 12"):
        dnorm.distributed.shard(x, rank=0, size=4, layout="zigzag")
    with pytest.raises(ValueError, match=r"rank must satisfy 0 <= rank < size, got rank=3 and size=3"):
        dnorm.distributed.shard(x, rank=3, size=3)
    with pytest.raises(TypeError, match="rank must be an int"):
        dnorm.distributed.shard(x, rank=1.0, size=3)
    with pytest.raises(ValueError, match=r"axis must be an axis of the array \(-3 <= axis < 3\), got 3"):
        dnorm.distributed.shard(x, rank=0, size=3, axis=3)
    with pytest.raises(ValueError, match="layout must be one of"):
        dnorm.distributed.unshard([x], layout="striped")
    with pytest.raises(ValueError, match="parts must all have one shape"):
        dnorm.distributed.unshard([x, x[:, :4]])
    with pytest.raises(TypeError, match="parts must be a non-empty sequence"):
        dnorm.distributed.unshard([])
    with pytest.raises(ValueError, match="zigzag parts hold two equal chunks"):
        dnorm.distributed.unshard([x[:, :3]], layout="zigzag")
