"""Strict causality: with causal=True row i depends on nothing after position i."""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from array_api_extra.testing import lazy_xp_function

from dnorm import attention, normalize

lazy_xp_function(attention)
lazy_xp_function(normalize)

RNG = np.random.default_rng(3)
CAUSAL_SCHEMES = ["softmax", "doubly", "hybrid"]


def _perturbed_after(a: np.ndarray, i: int) -> np.ndarray:
    b = a.copy()
    b[..., i + 1 :, :] = RNG.normal(size=b[..., i + 1 :, :].shape) * 5
    return b


@pytest.mark.theorem("THM-STRICT-CAUSALITY")
@pytest.mark.parametrize("scheme", CAUSAL_SCHEMES)
@pytest.mark.parametrize("block_size", [None, 3])
def test_rows_up_to_i_are_bit_identical_whatever_follows(xp, scheme, block_size):
    t, d = 9, 4
    q, k, v = (RNG.normal(size=(2, t, d)) for _ in range(3))
    base = to_np(attention(*(to_xp(xp, a) for a in (q, k, v)), scheme, causal=True, block_size=block_size))
    for i in (0, 4, 7):
        changed = (_perturbed_after(a, i) for a in (q, k, v))
        out = to_np(attention(*(to_xp(xp, a) for a in changed), scheme, causal=True, block_size=block_size))
        np.testing.assert_array_equal(out[..., : i + 1, :], base[..., : i + 1, :])
        assert not np.array_equal(out[..., i + 1 :, :], base[..., i + 1 :, :])


@pytest.mark.theorem("THM-STRICT-CAUSALITY")
@pytest.mark.parametrize("scheme", CAUSAL_SCHEMES)
def test_incremental_decoding_equals_full_sequence(xp, scheme):
    t, d = 8, 3
    q, k, v = (RNG.normal(size=(t, d)) for _ in range(3))
    full = to_np(attention(*(to_xp(xp, a) for a in (q, k, v)), scheme, causal=True))
    for i in range(t):
        prefix = to_np(attention(*(to_xp(xp, a[: i + 1]) for a in (q, k, v)), scheme, causal=True))
        np.testing.assert_allclose(prefix[i], full[i], rtol=1e-13, atol=1e-15)


@pytest.mark.theorem("THM-MASKED-DNAS-NOT-CAUSAL")
@pytest.mark.parametrize("scheme", ["doubly", "hybrid", "sinkhorn"])
def test_triangular_mask_gives_the_bidirectional_definition(xp, scheme):
    """With an explicit triangular mask, row 0 of doubly still reads the later queries."""
    t = 6
    s = RNG.normal(size=(t, t))
    tri = np.tril(np.ones((t, t), dtype=bool))
    base = to_np(normalize(to_xp(xp, s), scheme, mask=to_xp(xp, tri)))
    later = _perturbed_after(s, 2)
    changed = to_np(normalize(to_xp(xp, later), scheme, mask=to_xp(xp, tri)))
    assert not np.allclose(changed[:3], base[:3])
    strict = to_np(normalize(to_xp(xp, s), "doubly", causal=True))
    assert not np.allclose(strict, to_np(normalize(to_xp(xp, s), "doubly", mask=to_xp(xp, tri))))


def test_causal_softmax_equals_triangular_mask(xp):
    s = RNG.normal(size=(2, 6, 6))
    tri = np.tril(np.ones((6, 6), dtype=bool))
    np.testing.assert_array_equal(
        to_np(normalize(to_xp(xp, s), "softmax", causal=True)),
        to_np(normalize(to_xp(xp, s), "softmax", mask=to_xp(xp, tri))),
    )


def test_causal_is_top_left_aligned_for_rectangular_scores(xp):
    s = RNG.normal(size=(3, 5))
    w = to_np(normalize(to_xp(xp, s), "doubly", causal="top-left"))
    np.testing.assert_array_equal(w[np.triu_indices(3, 1, 5)], 0.0)
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-14)


def test_bottom_right_softmax_is_the_shifted_triangle(xp):
    q, k, v = RNG.normal(size=(3, 4)), RNG.normal(size=(7, 4)), RNG.normal(size=(7, 2))
    shifted = np.tril(np.ones((3, 7), dtype=bool), k=4)
    args = [to_xp(xp, a) for a in (q, k, v)]
    got = to_np(attention(*args, "softmax", causal="bottom-right"))
    np.testing.assert_allclose(got, to_np(attention(*args, "softmax", mask=to_xp(xp, shifted))), rtol=1e-13)


def test_ambiguous_causal_alignment_is_refused():
    q, k = RNG.normal(size=(1, 4)), RNG.normal(size=(6, 4))
    with pytest.raises(ValueError, match="causal=True is ambiguous with 1 queries and 6 keys"):
        attention(q, k, k, "softmax", causal=True)
    with pytest.raises(ValueError, match=r"dnorm\.decode"):
        attention(q, k, k, "doubly", causal="bottom-right")
    with pytest.raises(ValueError, match="'top-left' or 'bottom-right'"):
        attention(q, k, k, causal="left")
    with pytest.raises(TypeError, match="causal must be True, False"):
        attention(q, k, k, causal=1)
