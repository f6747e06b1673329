"""No queries or no keys, at every entry point and on every backend (spec DEF-EMPTY-ROWS-AND-KEYS).

With ``T = 0`` the output has no rows; with ``K = 0`` every query sees no key and gets a zero row, as a fully
masked row does. Where the definitions have no answer (the default scale ``1 / sqrt(D)`` for ``D = 0``, a decoding
state for keys nobody processed), a ValueError says so. The oracle is the definition itself: shapes and zeros.
"""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from oracles import NORMALIZED

import dnorm

RNG = np.random.default_rng(26)
SIZES = [(0, 5), (4, 0), (0, 0)]  # (T, K)


def _qkv(xp, n_queries, n_keys, *, heads=2, kv_heads=2):
    q = RNG.normal(size=(3, heads, n_queries, 4))
    k, v = RNG.normal(size=(3, kv_heads, n_keys, 4)), RNG.normal(size=(3, kv_heads, n_keys, 6))
    return tuple(to_xp(xp, a) for a in (q, k, v))


def _assert_zeros(out, shape):
    got = to_np(out)
    assert got.shape == shape
    np.testing.assert_array_equal(got, np.zeros(shape))


@pytest.mark.parametrize(("n_queries", "n_keys"), SIZES)
def test_attention_and_sdpa(xp, n_queries, n_keys):
    """Every scheme, grouped heads (4 query heads over 2) and a mask; torch's signature too (top-left causal)."""
    q, k, v = _qkv(xp, n_queries, n_keys, heads=4)
    want = (3, 4, n_queries, 6)
    mask = to_xp(xp, RNG.random((n_queries, n_keys)) < 0.5)
    for scheme in NORMALIZED:
        _assert_zeros(dnorm.attention(q, k, v, scheme, mask=mask), want)
        causal = scheme != "sinkhorn"  # Sinkhorn has no causal form
        if causal:
            _assert_zeros(dnorm.attention(q, k, v, scheme, causal="bottom-right"), want)
        sdpa = dnorm.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True, scheme=scheme)
        _assert_zeros(sdpa, want)


@pytest.mark.parametrize(("n_queries", "n_keys"), SIZES)
def test_normalize(xp, n_queries, n_keys):
    scores = to_xp(xp, RNG.normal(size=(2, n_queries, n_keys)))
    for scheme in NORMALIZED:
        for log in (False, True):
            assert to_np(dnorm.normalize(scores, scheme, log=log)).shape == (2, n_queries, n_keys)


def test_decode_without_new_queries(xp):
    """Zero new queries give no rows and leave the state as it was; an empty cache gives an empty state."""
    q, k, v = _qkv(xp, 0, 4)
    state = dnorm.DecodeState(*(to_xp(xp, RNG.uniform(1.0, 2.0, size=(3, 2, 4))) for _ in range(2)))  # of 4 keys
    out, same = dnorm.decode(q, k, v, state)
    _assert_zeros(out, (3, 2, 0, 6))
    for before, after in zip(state, same, strict=True):
        np.testing.assert_array_equal(to_np(after), to_np(before))
    out, empty = dnorm.decode(*_qkv(xp, 0, 0))
    _assert_zeros(out, (3, 2, 0, 6))
    assert [to_np(x).shape for x in empty] == [(3, 2, 0)] * 2
    assert dnorm.decode(*_qkv(xp, 0, 0), scheme="softmax")[1] is None


@pytest.mark.parametrize("layout", ["htd", "thd"])
def test_varlen_attention(xp, layout):
    """A packed batch whose sequences lack queries or keys, and a batch of no positions at all."""
    q, k, v = _qkv(xp, 5, 7)
    qn, kn, vn = (to_np(x) for x in (q, k, v))
    if layout == "thd":  # FlashAttention's (..., total, heads, D)
        q, k, v = (xp.permute_dims(x, (0, 2, 1, 3)) for x in (q, k, v))
    out = to_np(dnorm.varlen_attention(q, k, v, [0, 0, 2, 5], cu_seqlens_k=[0, 3, 7, 7], layout=layout))
    got = out if layout == "htd" else np.swapaxes(out, -3, -2)
    alone = dnorm.attention(qn[..., :2, :], kn[..., 3:, :], vn[..., 3:, :])  # the second sequence
    np.testing.assert_allclose(got[..., :2, :], alone, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(got[..., 2:, :], 0.0)  # the third has no keys
    none = q[:, :0, ...] if layout == "thd" else q[..., :0, :]
    assert to_np(dnorm.varlen_attention(none, k, v, [0, 0], cu_seqlens_k=[0, 7], layout=layout)).size == 0


def test_gradients_through_empty_calls_are_zeros():
    """torch autograd reaches the inputs of a call without keys or queries, and their gradients are zeros."""
    torch = pytest.importorskip("torch")
    for n_queries, n_keys in SIZES:
        q, k, v = (torch.tensor(a, requires_grad=True) for a in _qkv(np, n_queries, n_keys))
        dnorm.attention(q, k, v).sum().backward()
        for x in (q, k, v):
            assert x.grad is not None
            assert x.grad.shape == x.shape
            assert not x.grad.any()


def test_what_the_definitions_do_not_answer_raises():
    q, k, v = (np.ones((2, 3, 0)), np.ones((2, 4, 0)), np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match=r"scale defaults to 1 / sqrt\(D\), which has no value for D = 0"):
        dnorm.attention(q, k, v)
    assert dnorm.attention(q, k, v, scale=1.0).shape == (2, 3, 5)  # scores 0: every scheme averages the values
    with pytest.raises(ValueError, match="state is None, but key holds 4 positions before the new queries"):
        dnorm.decode(np.ones((2, 0, 3)), np.ones((2, 4, 3)), np.ones((2, 4, 3)))
