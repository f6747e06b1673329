"""Hypothesis properties on the computed float32 results, every backend, scores up to 1e4.

Each property is a theorem of spec/, marked with its identifier.
"""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from _strategies import check_property, scores_and_masks
from array_api_extra.testing import lazy_xp_function
from hypothesis import strategies as st
from oracles import NORMALIZED as SCHEMES

from dnorm import attention, normalize, received_mass

lazy_xp_function(normalize)
lazy_xp_function(attention)

# float32 results: the bounds hold up to a few roundings (spec THM-MASS-BOUND-FLOAT)
REL = 1e-5


def weights(xp, scores, mask, scheme, **kwargs) -> np.ndarray:
    m = None if mask is None else to_xp(xp, mask)
    w = normalize(to_xp(xp, scores), scheme, mask=m, **kwargs)
    assert w.dtype == xp.float32
    return to_np(w).astype(np.float64)


def allowed_of(scores: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return np.ones(scores.shape, dtype=bool) if mask is None else mask


def masked_bound(allowed: np.ndarray) -> np.ndarray:
    """1 / (max over the queries that see key j of their number of allowed keys); 0 for unseen keys."""
    n_keys = allowed.sum(axis=-1, keepdims=True)
    worst = np.where(allowed, n_keys, 0).max(axis=-2)
    return np.divide(1.0, worst, out=np.zeros(worst.shape), where=worst > 0)


@pytest.mark.theorem("THM-ROWS-SUM-TO-ONE")
@pytest.mark.parametrize("scheme", SCHEMES)
def test_rows_sum_to_one(xp, scheme):
    def check(data):
        scores, mask = data
        w = weights(xp, scores, mask, scheme)
        allowed = allowed_of(scores, mask)
        assert np.isfinite(w).all()
        assert (w[~allowed] == 0).all()
        sums = w.sum(axis=-1)
        has_key = allowed.any(axis=-1)
        np.testing.assert_allclose(sums[has_key], 1.0, rtol=0, atol=2e-6)
        assert (sums[~has_key] == 0).all()

    check_property(xp, scores_and_masks(), check)


@pytest.mark.theorem("THM-MASS-LOWER-BOUND")
@pytest.mark.theorem("THM-MASS-BOUND-FLOAT")
@pytest.mark.parametrize("scheme", ["doubly", "sinkhorn"])
def test_mass_is_at_least_one_over_k_in_float32(xp, scheme):
    def check(data):
        scores, _ = data
        mass = received_mass(weights(xp, scores, None, scheme))
        assert (mass >= (1 - REL) / scores.shape[-1]).all()

    check_property(xp, scores_and_masks(with_mask=False), check)


@pytest.mark.theorem("THM-MASS-LOWER-BOUND-MASKED")
@pytest.mark.theorem("THM-MASS-BOUND-FLOAT")
@pytest.mark.parametrize("scheme", ["doubly", "sinkhorn"])
def test_masked_mass_bound_in_float32(xp, scheme):
    def check(data):
        scores, mask = data
        bound = masked_bound(allowed_of(scores, mask))
        mass = received_mass(weights(xp, scores, mask, scheme))
        assert (mass >= (1 - REL) * bound).all()
        np.testing.assert_array_equal(mass[bound == 0], 0.0)

    check_property(xp, scores_and_masks(), check)


@pytest.mark.theorem("THM-HYBRID-MASS-BOUND")
def test_hybrid_mass_is_at_least_alpha_times_the_bound(xp):
    def check(args):
        (scores, mask), alpha = args
        alpha = float(np.float32(alpha))  # as computed
        mass = received_mass(weights(xp, scores, mask, "hybrid", alpha=alpha))
        assert (mass >= (1 - REL) * alpha * masked_bound(allowed_of(scores, mask))).all()

    check_property(xp, st.tuples(scores_and_masks(), st.floats(0.0, 1.0)), check)


@pytest.mark.theorem("THM-CAUSAL-MASS-LOWER-BOUND")
@pytest.mark.parametrize("scheme", ["doubly", "hybrid"])
def test_causal_mass_bound(xp, scheme):
    """Key j gets at least alpha / k_{i0} from the first query i0 that sees it (alpha = 1 for doubly)."""

    def check(data):
        scores, mask = data
        allowed = allowed_of(scores, mask) & np.tril(np.ones(scores.shape[-2:], dtype=bool))
        w = to_np(normalize(to_xp(xp, scores), scheme, mask=to_xp(xp, allowed), causal="top-left", alpha=0.5))
        share = 1.0 if scheme == "doubly" else 0.5
        n_keys = allowed.sum(axis=-1)
        for idx in np.ndindex(*scores.shape[:-2]):
            for j in np.flatnonzero(allowed[idx].any(axis=0)):
                first = np.flatnonzero(allowed[idx][:, j])[0]
                assert w[idx][first, j] >= (1 - REL) * share / n_keys[idx][first]

    check_property(xp, scores_and_masks(), check)


@pytest.mark.theorem("THM-SINKHORN-ONE-IS-DNAS")
def test_sinkhorn_with_one_round_is_doubly_bit_for_bit(xp):
    def check(data):
        scores, mask = data
        one = weights(xp, scores, mask, "sinkhorn", n_iter=1)
        np.testing.assert_array_equal(one, weights(xp, scores, mask, "doubly"))

    check_property(xp, scores_and_masks(), check)


@pytest.mark.theorem("THM-MASS-BOUND-FLOAT")
@pytest.mark.parametrize("scheme", ["doubly", "sinkhorn"])
def test_attention_output_keeps_the_bound_in_float32(xp, scheme):
    """attention(S, I, I, scale=1) is the weights of S: its fused output path keeps the bound at 1e4."""

    def check(data):
        scores, mask = data
        eye = np.eye(scores.shape[-1], dtype=np.float32)
        m = None if mask is None else to_xp(xp, mask)
        args = (to_xp(xp, scores), to_xp(xp, eye), to_xp(xp, eye))
        out = to_np(attention(*args, scheme, mask=m, scale=1.0, block_size=3)).astype(np.float64)
        mass = out.sum(axis=-2)
        assert (mass >= (1 - REL) * masked_bound(allowed_of(scores, mask))).all()

    check_property(xp, scores_and_masks(), check)


@pytest.mark.theorem("THM-ROWS-SUM-TO-ONE")
@pytest.mark.theorem("THM-MASS-LOWER-BOUND-MASKED")
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_half_precision_keeps_rows_and_bound_up_to_its_rounding(xp, dtype_name):
    """Computed in float32 and rounded once to the half format: rows and masses are off by its unit roundoff."""
    if not hasattr(xp, dtype_name):
        pytest.skip(f"{xp.__name__} has no {dtype_name}")
    dtype = getattr(xp, dtype_name)
    unit = 2.0**-8 if dtype_name == "bfloat16" else 2.0**-11

    def check(data):
        scores, mask = data
        m = None if mask is None else to_xp(xp, mask)
        x = xp.astype(to_xp(xp, scores), dtype)
        w = normalize(x, "doubly", mask=m)
        assert w.dtype == dtype
        w = to_np(w).astype(np.float64)
        allowed = allowed_of(scores, mask)
        has_key = allowed.any(axis=-1)
        np.testing.assert_allclose(w.sum(axis=-1)[has_key], 1.0, rtol=0, atol=2 * unit)
        assert (w.sum(axis=-2) >= (1 - 2 * unit) * masked_bound(allowed)).all()

    check_property(xp, scores_and_masks(), check)
