"""attention(): weights applied to values; the chunked path equals the materialized one."""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from array_api_compat import array_namespace
from array_api_extra.testing import lazy_xp_function
from oracles import oracle

from dnorm import SCHEMES, attention

lazy_xp_function(attention)

RNG = np.random.default_rng(11)


def _qkv(lead=(2,), t=7, k=5, d=4, dv=3):
    return RNG.normal(size=(*lead, t, d)), RNG.normal(size=(*lead, k, d)), RNG.normal(size=(*lead, k, dv))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_attention_is_oracle_weights_times_values(xp, scheme):
    q, k, v = _qkv()
    expected = oracle(scheme, q @ np.swapaxes(k, -1, -2) / 2.0) @ v
    got = to_np(attention(to_xp(xp, q), to_xp(xp, k), to_xp(xp, v), scheme))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)


def test_scale_multiplies_scores(xp):
    q, k, v = _qkv()
    expected = oracle("doubly", q @ np.swapaxes(k, -1, -2) * 0.3) @ v
    got = to_np(attention(to_xp(xp, q), to_xp(xp, k), to_xp(xp, v), scale=0.3))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)


@pytest.mark.theorem("THM-CHUNKED-EQUALS-DENSE")
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("block_size", [1, 4, 100])
@pytest.mark.parametrize("causal", [False, True])
def test_chunked_equals_materialized(xp, scheme, block_size, causal):
    if causal and scheme == "sinkhorn":
        pytest.skip("sinkhorn has no causal form")
    q, k, v = _qkv(lead=(2, 3), t=10, k=10)
    allowed = RNG.random((2, 3, 10, 10)) < 0.7
    allowed[0, 0, 4] = False
    args = [to_xp(xp, a) for a in (q, k, v)]
    kwargs = {"mask": to_xp(xp, allowed), "causal": causal, "n_iter": 4}
    dense = to_np(attention(*args, scheme, **kwargs))
    chunked = to_np(attention(*args, scheme, block_size=block_size, **kwargs))
    assert dense.shape == (2, 3, 10, 3)
    np.testing.assert_allclose(chunked, dense, rtol=1e-12, atol=1e-14)


@pytest.mark.theorem("THM-CHUNKED-EQUALS-DENSE")
@pytest.mark.parametrize("scheme", SCHEMES)
def test_chunked_equals_materialized_in_float32(xp, scheme):
    q, k, v = (a.astype(np.float32) for a in _qkv(t=37, k=29))
    args = [to_xp(xp, a) for a in (q, k, v)]
    dense = to_np(attention(*args, scheme))
    chunked = to_np(attention(*args, scheme, block_size=8))
    assert chunked.dtype == np.float32
    np.testing.assert_allclose(chunked, dense, rtol=2e-5, atol=2e-6)


def test_leading_dimensions_broadcast(xp):
    q = RNG.normal(size=(2, 3, 5, 4))
    k, v = RNG.normal(size=(1, 3, 6, 4)), RNG.normal(size=(6, 2))
    got = to_np(attention(to_xp(xp, q), to_xp(xp, k), to_xp(xp, v)))
    expected = oracle("doubly", q @ np.swapaxes(k, -1, -2) / 2.0) @ v
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(("t", "k"), [(1, 1), (1, 5), (5, 1)])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_single_query_or_key(xp, t, k, scheme):
    q, kk, v = _qkv(t=t, k=k)
    got = to_np(attention(to_xp(xp, q), to_xp(xp, kk), to_xp(xp, v), scheme))
    expected = oracle(scheme, q @ np.swapaxes(kk, -1, -2) / 2.0) @ v
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)


def test_non_contiguous_inputs(xp):
    q, k, v = (RNG.normal(size=(4, 6, 2)) for _ in range(3))
    qt, kt, vt = (np.swapaxes(a, 0, 1) for a in (q, k, v))  # (6, 4, 2) views
    args = [array_namespace(x).permute_dims(x, (1, 0, 2)) for x in (to_xp(xp, a) for a in (qt, kt, vt))]
    got = to_np(attention(*args, "hybrid"))
    expected = oracle("hybrid", q @ np.swapaxes(k, -1, -2) / np.sqrt(2)) @ v
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)
