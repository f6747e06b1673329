"""``dnorm.masks``: what a mask allows, its additive form, combining masks, and padding queries (spec masks.md)."""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp

import dnorm
from dnorm import masks

RNG = np.random.default_rng(13)


def test_allowed_and_additive_forms(xp):
    boolean = RNG.random((2, 3, 4)) < 0.6
    floating = np.where(boolean, RNG.normal(size=boolean.shape), -np.inf)
    np.testing.assert_array_equal(to_np(masks.allowed(to_xp(xp, boolean))), boolean)
    np.testing.assert_array_equal(to_np(masks.allowed(to_xp(xp, floating))), boolean)
    additive = masks.additive(to_xp(xp, boolean))
    assert additive.dtype == xp.float32
    np.testing.assert_array_equal(to_np(additive), np.where(boolean, 0.0, -np.inf))
    np.testing.assert_array_equal(to_np(masks.additive(to_xp(xp, floating), dtype=xp.float64)), floating)


def test_combine_allows_a_pair_only_where_every_mask_does(xp):
    a, b = RNG.random((2, 3, 4)) < 0.7
    both = masks.combine(to_xp(xp, a), to_xp(xp, b))
    assert xp.isdtype(both.dtype, "bool")
    np.testing.assert_array_equal(to_np(both), a & b)
    bias = np.where(b, RNG.normal(size=b.shape), -np.inf)
    mixed = to_np(masks.combine(to_xp(xp, a), to_xp(xp, bias)))
    np.testing.assert_array_equal(mixed, np.where(a, 0.0, -np.inf) + bias)
    assert masks.combine() is None


@pytest.mark.theorem("THM-PACKED-EQUALS-SEPARATE")
@pytest.mark.parametrize("scheme", ["doubly", "hybrid", "sinkhorn"])
def test_hiding_padding_queries_makes_the_real_rows_those_of_the_sequence_alone(xp, scheme):
    """spec DEF-PADDING-QUERIES: padding found from a key-padding mask, hidden as queries; real rows as if alone."""
    q, k, v = (RNG.normal(size=(2, 7, 4)) for _ in range(3))
    real = np.array([[True] * 7, [True] * 4 + [False] * 3])  # the second sequence has 4 real positions
    keys_only = np.broadcast_to(real[:, None, :], (2, 7, 7)).copy()
    padding = masks.unseen_keys(to_xp(xp, keys_only))
    np.testing.assert_array_equal(to_np(padding), ~real)
    mask = masks.hide_queries(to_xp(xp, keys_only), padding)
    out = to_np(dnorm.attention(*(to_xp(xp, x) for x in (q, k, v)), scheme, mask=mask))
    alone = to_np(dnorm.attention(*(to_xp(xp, x[1:, :4]) for x in (q, k, v)), scheme))
    np.testing.assert_allclose(out[1:, :4], alone, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out[1, 4:], 0.0)  # padding queries see nothing
    floating = masks.hide_queries(to_xp(xp, np.where(keys_only, 0.0, -np.inf)), padding)
    np.testing.assert_array_equal(to_np(masks.allowed(floating)), to_np(mask))


def test_bad_masks_name_the_argument():
    square = np.ones((3, 3), dtype=bool)
    with pytest.raises(TypeError, match="positions must be boolean"):
        masks.hide_queries(square, np.zeros(3))
    with pytest.raises(ValueError, match="mask must be square"):
        masks.hide_queries(np.ones((3, 4), dtype=bool), np.zeros(3, dtype=bool))
    with pytest.raises(TypeError, match=r"mask must be boolean .* or real floating"):
        masks.allowed(np.ones((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="at least two dimensions"):
        masks.unseen_keys(np.ones(3, dtype=bool))
    with pytest.raises(TypeError, match=r"masks\[1\] must be an array"):
        masks.combine(square, [[True]])
