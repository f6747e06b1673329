"""Masks and edge cases: empty rows and columns, -inf scores, NaN, masking equals deleting."""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from array_api_extra.testing import lazy_xp_function
from oracles import NORMALIZED as SCHEMES

from dnorm import attention, normalize

lazy_xp_function(normalize)
lazy_xp_function(attention)

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_query_with_no_key_gets_zero_row_and_output(xp, scheme):
    q, k, v = RNG.normal(size=(3, 4, 3))
    allowed = np.ones((4, 4), dtype=bool)
    allowed[2] = False
    w = to_np(normalize(to_xp(xp, q @ k.T), scheme, mask=to_xp(xp, allowed)))
    out = to_np(attention(to_xp(xp, q), to_xp(xp, k), to_xp(xp, v), scheme, mask=to_xp(xp, allowed)))
    assert np.isfinite(w).all()
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(w[2], 0.0)
    np.testing.assert_array_equal(out[2], 0.0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_key_nobody_sees_gets_zero_mass(xp, scheme):
    s = RNG.normal(size=(5, 4))
    allowed = np.ones((1, 4), dtype=bool)
    allowed[0, 1] = False
    w = to_np(normalize(to_xp(xp, s), scheme, mask=to_xp(xp, allowed)))
    assert np.isfinite(w).all()
    np.testing.assert_array_equal(w[:, 1], 0.0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_fully_masked_input_is_all_zero(xp, scheme):
    s = RNG.normal(size=(3, 4))
    w = to_np(normalize(to_xp(xp, s), scheme, mask=to_xp(xp, np.zeros((3, 4), dtype=bool))))
    np.testing.assert_array_equal(w, 0.0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_minus_inf_scores_behave_as_masked(xp, scheme):
    s = RNG.normal(size=(2, 5, 4))
    allowed = RNG.random((5, 4)) < 0.6
    by_inf = to_np(normalize(to_xp(xp, np.where(allowed, s, -np.inf)), scheme))
    by_mask = to_np(normalize(to_xp(xp, s), scheme, mask=to_xp(xp, allowed)))
    np.testing.assert_array_equal(by_inf, by_mask)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_masking_a_key_equals_deleting_it(xp, scheme):
    """A key masked for every query changes nothing else: as if it were not there."""
    q, k, v = RNG.normal(size=(5, 3)), RNG.normal(size=(6, 3)), RNG.normal(size=(6, 2))
    allowed = np.ones(6, dtype=bool)
    allowed[[1, 4]] = False
    masked = attention(to_xp(xp, q), to_xp(xp, k), to_xp(xp, v), scheme, mask=to_xp(xp, allowed))
    deleted = attention(to_xp(xp, q), to_xp(xp, k[allowed]), to_xp(xp, v[allowed]), scheme)
    np.testing.assert_allclose(to_np(masked), to_np(deleted), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
def test_masking_a_query_equals_deleting_it_for_the_others(xp, scheme):
    """A query masked from every key has a zero row; the other rows are as without it."""
    s = RNG.normal(size=(6, 4))
    allowed = np.ones((6, 1), dtype=bool)
    allowed[3] = False
    masked = to_np(normalize(to_xp(xp, s), scheme, mask=to_xp(xp, allowed)))
    deleted = to_np(normalize(to_xp(xp, np.delete(s, 3, axis=0)), scheme))
    np.testing.assert_allclose(np.delete(masked, 3, axis=0), deleted, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_nan_propagates_to_the_rows_it_touches(xp, scheme):
    s = RNG.normal(size=(4, 5))
    s[1, 2] = np.nan
    w = to_np(normalize(to_xp(xp, s), scheme))
    assert np.isnan(w[1]).all()
    if scheme == "softmax":
        assert np.isfinite(np.delete(w, 1, axis=0)).all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_masked_nan_is_masked(xp, scheme):
    s = RNG.normal(size=(4, 5))
    s[1, 2] = np.nan
    allowed = ~np.isnan(s)
    w = to_np(normalize(to_xp(xp, s), scheme, mask=to_xp(xp, allowed)))
    assert np.isfinite(w).all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_mask_broadcasts_from_one_dimension(xp, scheme):
    s = RNG.normal(size=(2, 4, 5))
    keys = np.array([True, False, True, True, False])
    got = to_np(normalize(to_xp(xp, s), scheme, mask=to_xp(xp, keys)))
    full = to_np(normalize(to_xp(xp, s), scheme, mask=to_xp(xp, np.broadcast_to(keys, s.shape).copy())))
    np.testing.assert_array_equal(got, full)
