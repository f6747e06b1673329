"""Packed variable-length batches (spec DEF-PACKED-BATCH, THM-PACKED-EQUALS-SEPARATE), on every backend."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _arrays import to_np, to_xp
from hypothesis import given
from hypothesis import strategies as st
from oracles import NORMALIZED as SCHEMES

import dnorm

RNG = np.random.default_rng(53)
CASES = [(s, c) for s in SCHEMES for c in (False, True) if not (c and s == "sinkhorn")]


def _packed(lengths_q, lengths_k, *, heads=(4,), kv_heads=(4,), d=3):
    tq, tk = sum(lengths_q), sum(lengths_k)
    q = RNG.normal(size=(*heads, tq, d)) * 2
    k, v = RNG.normal(size=(*kv_heads, tk, d)), RNG.normal(size=(*kv_heads, tk, 2))
    return q, k, v, np.cumsum([0, *lengths_q]), np.cumsum([0, *lengths_k])


@pytest.mark.theorem("THM-PACKED-EQUALS-SEPARATE")
@pytest.mark.parametrize(("scheme", "causal"), CASES)
def test_packed_equals_each_sequence_alone(xp, scheme, causal):
    """Sequences of 1, 5, 0 and 3 positions, 4 query heads over 2 key heads: slice by slice, attention alone."""
    lengths = [1, 5, 0, 3]
    q, k, v, cu, _ = _packed(lengths, lengths, kv_heads=(2,))
    got = to_np(dnorm.varlen_attention(*(to_xp(xp, a) for a in (q, k, v)), cu, scheme=scheme, causal=causal))
    for a, b in itertools.pairwise(cu):
        if b > a:
            alone = dnorm.attention(*(to_xp(xp, x[..., a:b, :]) for x in (q, k, v)), scheme, causal=causal)
            np.testing.assert_allclose(got[..., a:b, :], to_np(alone), rtol=1e-13, atol=1e-14)


@pytest.mark.theorem("THM-PACKED-EQUALS-SEPARATE")
@given(
    lengths=st.lists(st.tuples(st.integers(0, 6), st.integers(1, 6)), min_size=1, max_size=4),
    scheme=st.sampled_from(SCHEMES),
)
def test_cross_attention_packs_queries_and_keys_separately(lengths, scheme):
    """Different query and key lengths per sequence (``cu_seqlens_k``), against the padded batch with a mask."""
    lq, lk = [a for a, _ in lengths], [b for _, b in lengths]
    q, k, v, cu_q, cu_k = _packed(lq, lk)
    got = dnorm.varlen_attention(q, k, v, cu_q, scheme, cu_seqlens_k=cu_k)
    n, tq, tk = len(lengths), max(lq), max(lk)
    pad = np.zeros((n, 4, tq, 3)), np.zeros((n, 4, tk, 3)), np.zeros((n, 4, tk, 2))
    mask = np.zeros((n, 1, tq, tk), dtype=bool)  # padding queries see nothing: they leave the statistics alone
    for b in range(n):
        pad[0][b, :, : lq[b]] = q[:, cu_q[b] : cu_q[b + 1]]
        pad[1][b, :, : lk[b]] = k[:, cu_k[b] : cu_k[b + 1]]
        pad[2][b, :, : lk[b]] = v[:, cu_k[b] : cu_k[b + 1]]
        mask[b, :, : lq[b], : lk[b]] = True
    padded = dnorm.attention(*pad, scheme, mask=mask)
    for b in range(n):
        np.testing.assert_allclose(got[:, cu_q[b] : cu_q[b + 1]], padded[b, :, : lq[b]], rtol=1e-12, atol=1e-13)


def test_packed_gradients_equal_separate_gradients():
    torch = pytest.importorskip("torch")
    q, k, v, cu, _ = _packed([3, 4, 2], [3, 4, 2])
    packed = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    dnorm.varlen_attention(*packed, cu, "hybrid", causal=True).square().sum().backward()
    for a, b in itertools.pairwise(cu):
        alone = [torch.tensor(x[..., a:b, :], requires_grad=True) for x in (q, k, v)]
        dnorm.attention(*alone, "hybrid", causal=True).square().sum().backward()
        for whole, part in zip(packed, alone, strict=True):
            torch.testing.assert_close(whole.grad[..., a:b, :], part.grad, rtol=1e-12, atol=1e-13)


def test_offsets_are_static_under_jax_jit():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    q, k, v, cu, _ = _packed([2, 5], [2, 5])
    fn = jax.jit(lambda q, k, v: dnorm.varlen_attention(q, k, v, (0, 2, 7), scheme="doubly"))
    np.testing.assert_allclose(np.asarray(fn(q, k, v)), dnorm.varlen_attention(q, k, v, cu), rtol=1e-12)
    traced = jax.jit(lambda q, cu: dnorm.varlen_attention(q, q, q, cu))
    with pytest.raises(TypeError, match="cu_seqlens_q must be concrete"):
        traced(q, jax.numpy.asarray(cu))


@pytest.mark.parametrize(
    ("cu", "match"),
    [([0, 3], "to the packed length 7"), ([1, 7], "from 0"), ([0, 5, 4, 7], "without decreasing"), ([0], "from 0")],
)
def test_bad_offsets_raise(cu, match):
    q = np.ones((7, 2))
    with pytest.raises(ValueError, match=match):
        dnorm.varlen_attention(q, q, q, cu)
    with pytest.raises(TypeError, match="cu_seqlens_q must be concrete integer offsets"):
        dnorm.varlen_attention(q, q, q, [0.0, 7.0])
    with pytest.raises(ValueError, match="as many sequences"):
        dnorm.varlen_attention(q, q, q, [0, 7], cu_seqlens_k=[0, 3, 7])


def test_flash_attention_layout_is_an_option_and_the_error_names_it():
    """FlashAttention's (total, heads, head_dim) is ``layout="thd"``; without it the error says where dnorm packs."""
    q, k, v, cu, _ = _packed([3, 5], [3, 5], heads=(4,), kv_heads=(2,))
    thd = [np.swapaxes(x, 0, 1) for x in (q, k, v)]  # (8, heads, D)
    got = dnorm.varlen_attention(*thd, cu, causal=True, layout="thd")
    np.testing.assert_allclose(np.swapaxes(got, 0, 1), dnorm.varlen_attention(q, k, v, cu, causal=True), rtol=1e-13)
    with pytest.raises(ValueError, match=r"packed length is axis -2, \(\.\.\., total, D\).*pass layout='thd'"):
        dnorm.varlen_attention(*thd, cu)
    with pytest.raises(ValueError, match=r"with layout='thd', query must have shape \(\.\.\., total, heads, D\)"):
        dnorm.varlen_attention(q[0], k[0], v[0], cu, layout="thd")
    with pytest.raises(ValueError, match=r"layout must be one of \('htd', 'thd'\), got 'bshd'"):
        dnorm.varlen_attention(q, k, v, cu, layout="bshd")


def _nested(torch, parts):
    """A (B, H, j, D) jagged nested tensor, as torch's SDPA takes them."""
    return torch.nested.as_nested_tensor([p.transpose(0, 1) for p in parts], layout=torch.jagged).transpose(1, 2)


@pytest.mark.theorem("THM-PACKED-EQUALS-SEPARATE")
@pytest.mark.parametrize(("scheme", "causal"), CASES)
def test_nested_tensors_are_packed_batches(scheme, causal):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    parts = [
        [torch.randn(2, n, 4, generator=gen, dtype=torch.float64, requires_grad=True) for n in (3, 6)] for _ in "qkv"
    ]
    out = dnorm.attention(*(_nested(torch, p) for p in parts), scheme, causal=causal)
    assert out.is_nested
    assert (out.shape[0], out.dim()) == (2, 4)
    (out.values() ** 2).sum().backward()
    for b, got in enumerate(out.unbind()):
        alone = [p[b].detach().clone().requires_grad_() for p in parts]
        want = dnorm.attention(*alone, scheme, causal=causal)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
        (want**2).sum().backward()
        for nested_part, part in zip(parts, alone, strict=True):
            torch.testing.assert_close(nested_part[b].grad, part.grad, rtol=1e-12, atol=1e-13)


def test_nested_tensors_must_be_ragged_along_the_sequence_axis():
    torch = pytest.importorskip("torch")
    flat = torch.nested.as_nested_tensor([torch.randn(3, 2, 4), torch.randn(5, 2, 4)], layout=torch.jagged)
    with pytest.raises(ValueError, match="ragged along axis -2"):
        dnorm.attention(flat, flat, flat)
    nested = _nested(torch, [torch.randn(2, 3, 4), torch.randn(2, 5, 4)])
    with pytest.raises(TypeError, match="must be a nested tensor"):
        dnorm.attention(nested, torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4))
    with pytest.raises(TypeError, match="take no mask"):
        dnorm.attention(nested, nested, nested, mask=torch.ones(5, 5, dtype=torch.bool))


def test_each_sequence_draws_its_own_dropout_seed():
    """torch: one generator drawn once per sequence, in order; JAX: the key split into one key per sequence."""
    torch = pytest.importorskip("torch")
    q, k, v, cu, _ = _packed([4, 6], [4, 6])
    tq, tk, tv = (torch.tensor(a) for a in (q, k, v))
    packed = dnorm.varlen_attention(tq, tk, tv, cu, dropout_p=0.5, dropout_key=torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(2)
    for a, b in itertools.pairwise(cu):
        alone = dnorm.attention(tq[..., a:b, :], tk[..., a:b, :], tv[..., a:b, :], dropout_p=0.5, dropout_key=gen)
        torch.testing.assert_close(packed[..., a:b, :], alone, rtol=0, atol=0)
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    key = jax.random.key(0)
    q, k, v = (jax.numpy.asarray(a) for a in (q, k, v))
    packed = dnorm.varlen_attention(q, k, v, (0, 4, 10), dropout_p=0.5, dropout_key=key)
    for (a, b), part in zip(itertools.pairwise(cu), jax.random.split(key, 2), strict=True):
        alone = dnorm.attention(q[..., a:b, :], k[..., a:b, :], v[..., a:b, :], dropout_p=0.5, dropout_key=part)
        np.testing.assert_array_equal(np.asarray(packed[..., a:b, :]), np.asarray(alone))
