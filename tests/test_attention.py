"""attention(): weights applied to values; the chunked path equals the materialized one."""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from _strategies import SCHEME_CAUSAL
from array_api_compat import array_namespace
from array_api_extra.testing import lazy_xp_function
from oracles import NORMALIZED as SCHEMES
from oracles import oracle

from dnorm import attention

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
@pytest.mark.parametrize(("scheme", "causal"), SCHEME_CAUSAL)
@pytest.mark.parametrize("block_size", [1, 4, 100])
def test_chunked_equals_materialized(xp, scheme, block_size, causal):
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


@pytest.mark.parametrize(("scheme", "causal"), SCHEME_CAUSAL)
def test_grouped_heads_equal_repeated_keys(xp, scheme, causal):
    """8 query heads over 2 key/value heads (and a per-query-head alpha and mask): the keys repeated 4 times."""
    q, k, v = RNG.normal(size=(2, 8, 7, 4)), RNG.normal(size=(2, 2, 7, 4)), RNG.normal(size=(2, 2, 7, 3))
    mask = RNG.random((2, 8, 7, 7)) < 0.8
    alpha = np.linspace(0.1, 0.9, 8)
    kwargs = {"mask": to_xp(xp, mask), "causal": causal, "alpha": to_xp(xp, alpha), "block_size": 3}
    grouped = to_np(attention(*(to_xp(xp, a) for a in (q, k, v)), scheme, **kwargs))
    repeated = (to_xp(xp, a) for a in (q, np.repeat(k, 4, axis=1), np.repeat(v, 4, axis=1)))
    np.testing.assert_allclose(grouped, to_np(attention(*repeated, scheme, **kwargs)), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("block_size", [None, 3])
def test_grouped_heads_gradients_equal_repeated_keys(scheme, block_size):
    """The grouped products sum the shared keys' and values' gradients inside the contraction (torch)."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, 7, 4, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 7, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    results = []
    for repeat in (False, True):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        keys, values = (x.repeat_interleave(4, dim=1) if repeat else x for x in inputs[1:])
        out = attention(inputs[0], keys, values, scheme, block_size=block_size)
        out.sum().backward()
        results.append([out, *(t.grad for t in inputs)])
    for grouped, repeated in zip(*results, strict=True):
        torch.testing.assert_close(grouped, repeated, rtol=1e-12, atol=1e-12)
