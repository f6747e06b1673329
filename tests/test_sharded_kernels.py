"""The sharded kernels on every backend, participants as threads (tests/_ring.py): the whole sequence's attention.

Each participant's forward and backward pass (spec DEF-SHARDED-ATTENTION) against the array-API kernels on the
whole sequence (spec THM-SHARDED-EQUALS-FULL), float64 to 1e-12: every scheme, causal, grouped heads, padded keys,
softcap and a hybrid weight per head, with the participant's place a number or (as under ``shard_map``) an array;
zigzag shards under causal (spec THM-ZIGZAG-EQUALS-FULL) and the all-gather strategy (spec
THM-ALL-GATHER-EQUALS-FULL) likewise.
"""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from _ring import run

from dnorm._kernels import attention as kernels
from dnorm._kernels import sharded, sharded_layout
from dnorm._kernels.scores import block_bounds
from dnorm._routing.sharded import SHARDED

RNG = np.random.default_rng(18)
CASES = [
    (s, c) for s in ("softmax", "doubly", "hybrid", "sinkhorn") for c in (False, True) if (s, c) != ("sinkhorn", True)
]
SCALE = 0.4


def _problem(size, *, n=5, groups=2):
    """Whole-sequence arrays in the kernels' grouped layout: queries (B, H, G, L, D), keys (B, H, 1, L, D)."""
    length = n * size
    p = {
        "q": RNG.normal(size=(2, 2, groups, length, 4)),
        "k": RNG.normal(size=(2, 2, 1, length, 4)),
        "v": RNG.normal(size=(2, 2, 1, length, 3)),
        "d_out": RNG.normal(size=(2, 2, groups, length, 3)),
        "alpha": RNG.uniform(size=(2, 1, 1, 1)),
    }
    keep = RNG.random((2, 1, 1, 1, length)) < 0.8
    keep[1, ..., 0] = False  # the first key is padding in one batch: under causal the first query sees nothing
    p["mask"] = keep
    return p


def _whole(xp, p, *, scheme, causal, softcap):
    q, k, v, d_out, mask, alpha = (
        to_xp(xp, p[name], chunked=False) for name in ("q", "k", "v", "d_out", "mask", "alpha")
    )
    rows = block_bounds(q.shape[-2], 4)
    options = kernels.BlockedOptions(scheme, causal, 2, SCALE, rows, False, rows, 0, softcap)
    out, residuals = kernels.forward(q, k, v, mask, alpha, None, options=options, xp=xp)
    grads = kernels.backward(q, k, v, mask, alpha, None, out, residuals, d_out, options=options, mask_grad=False, xp=xp)
    return (
        [to_np(x) for x in (out, *grads[:3], grads[4])] if scheme == "hybrid" else [to_np(x) for x in (out, *grads[:3])]
    )


def _sharded(xp, p, size, *, scheme, causal, softcap, traced, layout="contiguous", strategy="ring"):
    halves = 2 if causal and layout == "zigzag" else 1

    def participant(ring):
        def mine(x, axis=-2):
            return to_xp(xp, sharded_layout.shard(x, rank=ring.place, size=size, layout=layout, axis=axis, xp=np))

        q, k, v, d_out = (mine(p[name]) for name in ("q", "k", "v", "d_out"))
        mask, alpha = mine(p["mask"], -1), to_xp(xp, p["alpha"], chunked=False)
        rows = block_bounds(q.shape[-2] // halves, 2)
        options = sharded.ShardedOptions(scheme, causal, 2, SCALE, rows, ring, softcap, layout, strategy)
        out, residuals = SHARDED.forward(q, k, v, mask, alpha, None, options=options, xp=xp)
        grads = SHARDED.backward(
            q, k, v, mask, alpha, None, out, residuals, d_out, options=options, mask_grad=False, xp=xp
        )
        return [to_np(x) for x in (out, *grads[:3])] + ([to_np(grads[4])] if scheme == "hybrid" else [])

    shards = run(size, participant, traced=xp if traced else None)
    joined = [sharded_layout.unshard([s[i] for s in shards], layout=layout, axis=-2, xp=np) for i in range(4)]
    return joined + ([sum(s[4] for s in shards)] if scheme == "hybrid" else [])  # alpha: the sum of the shares


@pytest.mark.theorem("THM-SHARDED-EQUALS-FULL")
@pytest.mark.parametrize(("scheme", "causal"), CASES)
def test_every_participant_computes_its_rows_of_the_whole_sequence(ring_xp, scheme, causal):
    p = _problem(3)
    xp = ring_xp
    want = _whole(xp, p, scheme=scheme, causal=causal, softcap=None)
    got = _sharded(xp, p, 3, scheme=scheme, causal=causal, softcap=None, traced=False)
    _assert_equal(got, want)


@pytest.mark.theorem("THM-SHARDED-EQUALS-FULL")
@pytest.mark.parametrize("size", [1, 2, 4])
@pytest.mark.parametrize(("scheme", "causal"), [("doubly", True), ("hybrid", True), ("sinkhorn", False)])
def test_a_traced_place_and_softcap_give_the_same_rows(ring_xp, size, scheme, causal):
    """Where the place is an array (JAX under ``shard_map``), later causal blocks are masked rather than skipped."""
    p = _problem(size, n=4)
    xp = ring_xp
    want = _whole(xp, p, scheme=scheme, causal=causal, softcap=2.0)
    got = _sharded(xp, p, size, scheme=scheme, causal=causal, softcap=2.0, traced=True)
    _assert_equal(got, want)


@pytest.mark.theorem("THM-ZIGZAG-EQUALS-FULL")
@pytest.mark.parametrize(("size", "traced"), [(2, True), (3, False), (4, True)])
@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
def test_zigzag_shards_compute_their_rows_of_the_causal_sequence(ring_xp, size, traced, scheme):
    """Chunks ``r`` and ``2P - 1 - r`` of ``2P``: the running statistic by a two-level scan over the chunks, the
    tiles of a traced place chosen by their operands (spec DEF-ZIGZAG-LAYOUT)."""
    p = _problem(size, n=4)
    want = _whole(ring_xp, p, scheme=scheme, causal=True, softcap=2.0)
    got = _sharded(ring_xp, p, size, scheme=scheme, causal=True, softcap=2.0, traced=traced, layout="zigzag")
    _assert_equal(got, want)


@pytest.mark.theorem("THM-ALL-GATHER-EQUALS-FULL")
@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid", "sinkhorn"])
def test_gathered_keys_compute_the_whole_sequence(ring_xp, scheme):
    """Every participant holds every key: column statistics all-reduced, key gradients reduce-scattered (spec
    DEF-ALL-GATHER-STRATEGY)."""
    p = _problem(3)
    want = _whole(ring_xp, p, scheme=scheme, causal=False, softcap=2.0)
    got = _sharded(ring_xp, p, 3, scheme=scheme, causal=False, softcap=2.0, traced=False, strategy="all-gather")
    _assert_equal(got, want)


def test_zigzag_shards_join_back_in_order():
    """Participant ``r`` holds chunks ``r`` and ``2P - 1 - r`` (spec DEF-ZIGZAG-LAYOUT); the parts join back."""
    x = np.arange(2 * 3 * 2).reshape(1, 12, 1)
    parts = [sharded_layout.shard(x, rank=r, size=3, layout="zigzag", axis=-2, xp=np) for r in range(3)]
    assert [part[0, :, 0].tolist() for part in parts] == [[0, 1, 10, 11], [2, 3, 8, 9], [4, 5, 6, 7]]
    np.testing.assert_array_equal(sharded_layout.unshard(parts, layout="zigzag", axis=-2, xp=np), x)


def _assert_equal(got, want):
    assert len(got) == len(want)
    for name, a, b in zip(("output", "d_query", "d_key", "d_value", "d_alpha"), got, want, strict=False):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, err_msg=name)
