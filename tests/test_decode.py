"""dnorm.decode (spec decoding.md): any split of a sequence into calls gives the full causal computation."""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from array_api_compat import is_dask_namespace, is_jax_namespace
from array_api_extra.testing import lazy_xp_function

import dnorm
from dnorm import attention, decode

lazy_xp_function(attention)
lazy_xp_function(decode)

RNG = np.random.default_rng(41)
SCHEMES = ["softmax", "doubly", "hybrid"]


def _sequence(length=11, *, heads=4, kv_heads=4, d=3, dtype=np.float64):
    q = RNG.normal(size=(2, heads, length, d)).astype(dtype)
    k, v = (RNG.normal(size=(2, kv_heads, length, d)).astype(dtype) for _ in range(2))
    return q, k, v


def _left_padding(length, pads=(0, 3)):
    """Boolean (2, 1, 1, L) key mask: batch element b has pads[b] padding positions at the front."""
    return np.stack([np.arange(length) >= p for p in pads])[:, None, None, :]


def _decode_in_calls(xp, q, k, v, splits, *, scheme, mask=None, alpha=0.5):
    """Outputs of consecutive decode calls of the given lengths, concatenated, and the last state."""
    outputs, state, pos = [], None, 0
    for n in splits:
        stop = pos + n
        rows = (
            None
            if mask is None
            else to_xp(
                xp, np.broadcast_to(mask, (*mask.shape[:-2], q.shape[-2], mask.shape[-1]))[..., pos:stop, :stop].copy()
            )
        )
        out, state = decode(
            *(to_xp(xp, a) for a in (q[..., pos:stop, :], k[..., :stop, :], v[..., :stop, :])),
            state,
            scheme,
            mask=rows,
            alpha=alpha,
        )
        outputs.append(to_np(out))
        pos = stop
    return np.concatenate(outputs, axis=-2), state


def _random_splits(length):
    cuts = np.sort(RNG.choice(np.arange(1, length), size=3, replace=False))
    return np.diff(np.concatenate(([0], cuts, [length]))).tolist()


@pytest.mark.theorem("THM-DECODE-EQUALS-FULL")
@pytest.mark.parametrize("scheme", SCHEMES)
def test_any_split_into_calls_equals_the_full_sequence(xp, scheme):
    q, k, v = _sequence()
    full = to_np(attention(*(to_xp(xp, a) for a in (q, k, v)), scheme, causal=True))
    for splits in ([11], [5, 6], _random_splits(11)):  # steps of one: the bit-identity test below
        got, state = _decode_in_calls(xp, q, k, v, splits, scheme=scheme)
        np.testing.assert_allclose(got, full, rtol=1e-12, atol=1e-14, err_msg=str(splits))
        if scheme == "softmax":
            assert state is None
        else:
            assert tuple(state.max.shape) == tuple(state.sum.shape) == (2, 4, 11)


@pytest.mark.theorem("THM-DECODE-EQUALS-FULL")
@pytest.mark.parametrize("scheme", SCHEMES)
def test_steps_of_one_are_bit_identical_to_blocks_of_one_row(xp, scheme):
    q, k, v = _sequence(length=6)
    full = to_np(attention(*(to_xp(xp, a) for a in (q, k, v)), scheme, causal=True, block_size=1))
    got, _ = _decode_in_calls(xp, q, k, v, [1] * 6, scheme=scheme)
    if is_jax_namespace(xp) or is_dask_namespace(xp):
        # XLA compiles each program on its own (and may contract a * b + c differently); Dask sums over chunks
        # whose boundaries follow each call's shapes. Neither runs the same arithmetic twice.
        np.testing.assert_allclose(got, full, rtol=1e-14, atol=1e-15)
    else:
        np.testing.assert_array_equal(got, full)


@pytest.mark.theorem("THM-DECODE-EQUALS-FULL")
@pytest.mark.parametrize("scheme", SCHEMES)
def test_left_padding_and_grouped_heads(xp, scheme):
    """A left-padded batch with 8 query heads over 2 key heads, per-head alpha, decoded in random splits."""
    q, k, v = _sequence(heads=8, kv_heads=2)
    mask = _left_padding(11)
    alpha = np.linspace(0.1, 0.9, 8)
    repeated = [to_xp(xp, a) for a in (q, np.repeat(k, 4, axis=1), np.repeat(v, 4, axis=1))]
    full = to_np(attention(*repeated, scheme, causal=True, mask=to_xp(xp, mask), alpha=to_xp(xp, alpha)))
    got, state = _decode_in_calls(xp, q, k, v, _random_splits(11), scheme=scheme, mask=mask, alpha=to_xp(xp, alpha))
    np.testing.assert_allclose(got, full, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(got[1, :, :3], 0.0)  # padding queries see nothing
    if state is not None:
        assert tuple(state.max.shape) == (2, 8, 11)  # one pair per query head
        assert (to_np(state.sum)[1, :, :3] == 0).all()  # padding keys are never seen


@pytest.mark.theorem("THM-DECODE-EQUALS-FULL")
@pytest.mark.parametrize("scheme", ["doubly", "hybrid"])
def test_float32_decoding_within_rounding_and_a_float32_state(xp, scheme):
    q, k, v = _sequence(length=16, dtype=np.float32)
    full = to_np(attention(*(to_xp(xp, a) for a in (q, k, v)), scheme, causal=True))
    got, state = _decode_in_calls(xp, q, k, v, [9, 1, 6], scheme=scheme)
    np.testing.assert_allclose(got, full, rtol=2e-5, atol=2e-6)
    assert state.max.dtype == state.sum.dtype == xp.float32


def test_half_precision_keeps_a_float32_state():
    torch = pytest.importorskip("torch")
    q, k, v = (torch.randn(1, 2, 6, 8, dtype=torch.bfloat16) for _ in range(3))
    out, state = decode(q, k, v)
    assert out.dtype == torch.bfloat16
    assert state.max.dtype == state.sum.dtype == torch.float32
    step, state = decode(
        torch.randn(1, 2, 1, 8, dtype=torch.bfloat16), *(torch.cat((x, x[..., :1, :]), -2) for x in (k, v)), state
    )
    assert step.shape == (1, 2, 1, 8)
    assert state.max.shape == (1, 2, 7)


def test_decoding_works_under_jax_jit():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    q, k, v = (jnp.asarray(a) for a in _sequence(length=6))
    full = attention(q, k, v, causal=True)
    step = jax.jit(lambda q, k, v, state: decode(q, k, v, state))
    _, state = decode(q[..., :5, :], k[..., :5, :], v[..., :5, :])
    last, state = step(q[..., 5:, :], k, v, state)
    np.testing.assert_allclose(np.asarray(last), np.asarray(full[..., 5:, :]), rtol=1e-12)
    assert isinstance(state, dnorm.DecodeState)


def test_bad_states_and_shapes_are_refused():
    q, k, v = _sequence(length=5)
    _, state = decode(q[..., :3, :], k[..., :3, :], v[..., :3, :])
    with pytest.raises(ValueError, match="state is None, but key holds 3 positions"):
        decode(q[..., 3:, :], k, v)
    with pytest.raises(
        ValueError,
        match=r"state\.max must have shape \(2, 4, 4\) \(query heads, then the K - T earlier keys\), got \(2, 4, 3\)",
    ):
        decode(q[..., 4:, :], k, v, state)  # one position skipped
    with pytest.raises(ValueError, match="query has 5 new positions but key holds only 3"):
        decode(q, k[..., :3, :], v[..., :3, :])
    with pytest.raises(ValueError, match="softmax' keeps no state"):
        decode(q[..., 3:, :], k, v, state, "softmax")
    with pytest.raises(TypeError, match="state must be a DecodeState"):
        decode(q[..., 3:, :], k, v, state.max)
    with pytest.raises(NotImplementedError, match="sinkhorn"):
        decode(q, k, v, None, "sinkhorn")
    with pytest.raises(TypeError, match=r"state\.sum must have a real floating dtype"):
        decode(q[..., 3:, :], k, v, (state.max, state.sum > 0))
