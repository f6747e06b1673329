"""Softcapping and dropout in ``attention`` (spec DEF-SOFTCAP, DEF-DROPOUT), on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from array_api_compat import is_jax_array, is_numpy_array, is_torch_array
from oracles import NORMALIZED as SCHEMES
from oracles import oracle

import dnorm

RNG = np.random.default_rng(41)
CAUSAL_CASES = [(s, c) for s in SCHEMES for c in (False, True) if not (c and s == "sinkhorn")]


def _qkv(t=9, k=9, d=4, dv=3, magnitude=3.0):
    return RNG.normal(size=(2, t, d)) * magnitude, RNG.normal(size=(2, k, d)), RNG.normal(size=(2, k, dv))


def _generator(xp, seed=0):
    """What ``dropout_key`` takes on this backend, or None where dnorm has no generator."""
    probe = xp.asarray([0.0])
    if is_torch_array(probe):
        import torch

        return torch.Generator(device=probe.device).manual_seed(seed)
    if is_jax_array(probe):
        import jax

        return jax.random.key(seed)
    if is_numpy_array(probe):
        return np.random.default_rng(seed)
    return None


@pytest.mark.theorem("DEF-SOFTCAP")
@pytest.mark.parametrize(("scheme", "causal"), CAUSAL_CASES)
@pytest.mark.parametrize("block_size", [None, 4])
def test_softcap_is_attention_of_the_capped_scores(xp, scheme, causal, block_size):
    q, k, v = _qkv()
    mask = RNG.random((2, 9, 9)) < 0.8
    if causal:
        mask = mask & np.tril(np.ones((9, 9), dtype=bool))
    scores = 2.5 * np.tanh(q @ np.swapaxes(k, -1, -2) / np.sqrt(4) / 2.5)
    expected = oracle(scheme, np.where(mask, scores, -np.inf), causal=causal) @ v
    args = (to_xp(xp, a) for a in (q, k, v))
    got = dnorm.attention(*args, scheme, mask=to_xp(xp, mask), causal=causal, softcap=2.5, block_size=block_size)
    np.testing.assert_allclose(to_np(got), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.theorem("DEF-DROPOUT")
@pytest.mark.parametrize(("scheme", "causal"), CAUSAL_CASES)
def test_dropout_drops_normalized_weights_and_keeps_the_statistic(xp, scheme, causal):
    """With the identity as values the output is the weights: each is 0 or ``A / (1 - p)``, ``A`` without dropout."""
    key = _generator(xp)
    if key is None:
        pytest.skip("dnorm has no random generator for dropout on this backend (tested to raise)")
    t = 32
    q, k, _ = _qkv(t=t, k=t, magnitude=1.0)
    identity = np.tile(np.eye(t), (2, 1, 1))
    args = [to_xp(xp, a) for a in (q, k, identity)]
    p = 0.3
    dropped = to_np(dnorm.attention(*args, scheme, causal=causal, dropout_p=p, dropout_key=key))
    weights = to_np(dnorm.attention(*args, scheme, causal=causal))
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], weights[kept] / (1 - p), rtol=1e-12)
    share = 1 - kept[weights > 0].mean()
    assert abs(share - p) < 0.06, share  # at least 1056 weights: 4 standard deviations
    blocked = dnorm.attention(*args, scheme, causal=causal, dropout_p=p, dropout_key=_generator(xp), block_size=8)
    np.testing.assert_allclose(to_np(blocked), dropped, rtol=1e-12, atol=1e-15)  # the same mask in blocks


def test_dropout_needs_a_generator_where_dnorm_has_none(xp):
    q, k, v = (to_xp(xp, a) for a in _qkv())
    if _generator(xp) is not None:
        if is_torch_array(q):
            pytest.skip("torch tensors draw from torch's default generator")
        with pytest.raises(TypeError, match="dropout_key"):
            dnorm.attention(q, k, v, dropout_p=0.1)
        return
    with pytest.raises(TypeError, match="random generator"):
        dnorm.attention(q, k, v, dropout_p=0.1)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_dropout_probability_outside_zero_one_raises(bad):
    q = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"dropout_p must be a number in \[0, 1\)"):
        dnorm.attention(q, q, q, dropout_p=bad)
    with pytest.raises(TypeError, match="dropout_p"):
        dnorm.attention(q, q, q, dropout_p="0.1")


@pytest.mark.parametrize(
    ("bad", "error"), [(0.0, ValueError), (-1.0, ValueError), (np.inf, ValueError), ("2", TypeError)]
)
def test_softcap_must_be_positive_and_finite(bad, error):
    q = np.ones((3, 2))
    with pytest.raises(error, match="softcap"):
        dnorm.attention(q, q, q, softcap=bad)


def test_torch_dropout_follows_torch_manual_seed_and_trains():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 6, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    torch.manual_seed(7)
    first = dnorm.attention(q, k, v, dropout_p=0.2)
    torch.manual_seed(7)
    again = dnorm.attention(q, k, v, dropout_p=0.2)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, dnorm.attention(q, k, v, dropout_p=0.2))  # a new draw
    for scheme in ("doubly", "hybrid", "softmax"):

        def step(q, k, v, scheme=scheme):
            key = torch.Generator().manual_seed(11)
            return dnorm.attention(q, k, v, scheme, dropout_p=0.3, dropout_key=key, softcap=3.0)

        assert torch.autograd.gradcheck(step, (q, k, v))


def test_scaled_dot_product_attention_dropout_is_attention_dropout():
    """The torch drop-in takes ``attention``'s blocked dropout: GQA without copies, no materialized weights."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 10, 8, generator=gen)
    k, v = (torch.randn(1, 2, 10, 8, generator=gen) for _ in range(2))
    got = dnorm.scaled_dot_product_attention(
        q, k, v, dropout_p=0.5, enable_gqa=True, dropout_key=torch.Generator().manual_seed(1)
    )
    want = dnorm.attention(q, k, v, dropout_p=0.5, dropout_key=torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_jax_dropout_under_jit_and_grad_uses_the_key():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    q, k, v = (jnp.asarray(a) for a in _qkv(t=16, k=16))

    @jax.jit
    def loss(q, k, v, key):
        return jnp.sum(dnorm.attention(q, k, v, "hybrid", dropout_p=0.25, dropout_key=key, softcap=4.0) ** 2)

    key = jax.random.key(5)
    assert loss(q, k, v, key) == loss(q, k, v, key)
    assert loss(q, k, v, key) != loss(q, k, v, jax.random.key(6))
    from jax.test_util import check_grads

    check_grads(lambda q, k, v: loss(q, k, v, key), (q, k, v), order=1, modes=["rev"])


def test_fast_path_inputs_with_softcap_or_dropout_take_the_kernels():
    """CPU torch tensors: the fused path has no softcap or dropout, and the kernels give them (float32 here)."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 16, generator=gen) for _ in range(3))
    capped = dnorm.attention(q, k, v, "hybrid", softcap=1.0)
    scores = torch.tanh(q @ k.mT / 4.0)
    weights = dnorm.normalize(scores.double(), "hybrid")
    torch.testing.assert_close(capped, (weights @ v.double()).float(), rtol=1e-5, atol=1e-6)
    assert dnorm.attention(q, k, v, dropout_p=0.5).isfinite().all()


def test_half_precision_caps_and_drops_in_float32():
    """bfloat16 inputs: the cap, the mask and the weights in float32, the result rounded once (DEF-HALF-PRECISION)."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 8, generator=gen) * 4 for _ in range(3))
    options = {"softcap": 2.0, "dropout_p": 0.3, "block_size": 7}
    half = dnorm.attention(*(t.bfloat16() for t in (q, k, v)), "hybrid", **options, dropout_key=_generator(torch))
    single = dnorm.attention(
        *(t.bfloat16().float() for t in (q, k, v)), "hybrid", **options, dropout_key=_generator(torch)
    )
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half, single.bfloat16(), rtol=0, atol=0)
