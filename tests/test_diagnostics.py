"""Explaining-away diagnostics against hand computations in NumPy, and the mass bounds on computed weights."""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from array_api_extra.testing import lazy_xp_function
from oracles import NORMALIZED as SCHEMES

from dnorm import normalize, received_mass
from dnorm.diagnostics import explained_away_share, least_received_mass, mass_lower_bound, report

lazy_xp_function(explained_away_share)
lazy_xp_function(least_received_mass)
lazy_xp_function(mass_lower_bound)
lazy_xp_function(report)

RNG = np.random.default_rng(20200930)


def _weights(*shape: int) -> np.ndarray:
    w = RNG.random(shape) ** 4
    return w / w.sum(axis=-1, keepdims=True)


def _masks(*shape: int) -> np.ndarray:
    """Random boolean masks with an empty query, an unseen key and, in the last element, nothing allowed."""
    allowed = RNG.random(shape) < 0.6
    allowed[..., 0, :] = False
    allowed[..., :, 1] = False
    allowed[-1] = False
    return allowed


def _hand_share(w: np.ndarray, allowed: np.ndarray, threshold: float) -> float:
    mass, visible, active = (w * allowed).sum(axis=0), allowed.any(axis=0), allowed.any(axis=1)
    if not visible.any():
        return 0.0
    low = visible & (mass < threshold * active.sum() / visible.sum())
    return low.sum() / visible.sum()


def _hand_least(w: np.ndarray, allowed: np.ndarray) -> float:
    mass, visible = (w * allowed).sum(axis=0), allowed.any(axis=0)
    return mass[visible].min() if visible.any() else np.inf


def _brute_bound(allowed: np.ndarray) -> np.ndarray:
    """1 / (the most keys any query seeing key j may attend), 0 for unseen keys, by plain loops."""
    n_queries, n_keys = allowed.shape
    bound = np.zeros(n_keys)
    for j in range(n_keys):
        widths = [allowed[i].sum() for i in range(n_queries) if allowed[i, j]]
        bound[j] = 1.0 / max(widths) if widths else 0.0
    return bound


def test_share_and_least_mass_match_hand_computation(xp):
    w, allowed, threshold = _weights(4, 6, 5), _masks(4, 6, 5), 0.7
    share = to_np(explained_away_share(to_xp(xp, w), mask=to_xp(xp, allowed), threshold=threshold))
    least = to_np(least_received_mass(to_xp(xp, w), mask=to_xp(xp, allowed)))
    np.testing.assert_allclose(share, [_hand_share(w[b], allowed[b], threshold) for b in range(4)], rtol=1e-12)
    np.testing.assert_allclose(least, [_hand_least(w[b], allowed[b]) for b in range(4)], rtol=1e-12)
    assert least[-1] == np.inf
    assert share[-1] == 0.0


def test_float_mask_counts_like_boolean_mask(xp):
    w, allowed = _weights(3, 5, 4), _masks(3, 5, 4)
    additive = to_xp(xp, np.where(allowed, 0.0, -np.inf))
    np.testing.assert_array_equal(
        to_np(explained_away_share(to_xp(xp, w), mask=additive, threshold=0.5)),
        [_hand_share(w[b], allowed[b], 0.5) for b in range(3)],
    )


def test_key_padding_mask_broadcasts_over_queries(xp):
    w = _weights(2, 6, 5)
    keys = RNG.random((2, 1, 5)) < 0.7
    share = to_np(explained_away_share(to_xp(xp, w), mask=to_xp(xp, keys), threshold=0.9))
    full = np.broadcast_to(keys, w.shape)
    np.testing.assert_allclose(share, [_hand_share(w[b], full[b], 0.9) for b in range(2)], rtol=1e-12)


def test_without_mask_the_mean_is_t_over_k(xp):
    w = np.array([[0.7, 0.25, 0.05], [0.6, 0.39, 0.01]])  # masses 1.3, 0.64, 0.06; T/K = 2/3
    assert float(to_np(explained_away_share(to_xp(xp, w)))) == pytest.approx(1 / 3)
    assert float(to_np(explained_away_share(to_xp(xp, w), threshold=1.0))) == pytest.approx(2 / 3)
    assert float(to_np(least_received_mass(to_xp(xp, w)))) == pytest.approx(0.06)


def test_nan_weights_give_a_nan_share(xp):
    w = _weights(2, 4, 3)
    w[0, 1, 2] = np.nan
    share = to_np(explained_away_share(to_xp(xp, w)))
    assert np.isnan(share[0])
    assert share[1] == _hand_share(w[1], np.ones((4, 3), dtype=bool), 0.1)


@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid", "sinkhorn"])
def test_mass_lower_bound_is_the_brute_force_bound(xp, scheme):
    allowed = _masks(3, 7, 6)
    alpha = np.array([0.0, 0.4, 1.0])[:, None] if scheme == "hybrid" else np.ones((3, 1))
    got = to_np(mass_lower_bound(scheme, mask=to_xp(xp, allowed), alpha=to_xp(xp, alpha[:, 0])))
    expected = np.stack([_brute_bound(a) for a in allowed]) * alpha
    np.testing.assert_allclose(got, 0 * expected if scheme == "softmax" else expected, rtol=1e-12)


def test_mass_lower_bound_broadcasts_the_mask_to_shape(xp):
    """A mask of shape (T, 1) lets a query see all K keys or none; K comes from ``shape``."""
    rows = RNG.random((5, 1)) < 0.5
    rows[0] = True
    got = to_np(mass_lower_bound("doubly", shape=(2, 5, 4), mask=to_xp(xp, rows)))
    np.testing.assert_allclose(got, np.full((2, 4), 0.25), rtol=1e-12)


def test_mass_lower_bound_without_mask_is_one_over_k():
    np.testing.assert_array_equal(mass_lower_bound("doubly", shape=(2, 3, 4)), np.full((2, 4), 0.25))
    np.testing.assert_array_equal(mass_lower_bound("hybrid", shape=(3, 4), alpha=0.2), np.full(4, 0.05))
    np.testing.assert_array_equal(mass_lower_bound("softmax", shape=(3, 4)), np.zeros(4))


@pytest.mark.theorem("THM-MASS-LOWER-BOUND")
def test_doubly_masses_reach_one_over_k(xp):
    k, s = 3, RNG.normal(size=(2, 7, 3)) * 1e3
    w = normalize(to_xp(xp, s), "doubly")
    assert np.all(to_np(received_mass(w)) >= (1 - 1e-12) / k)
    assert np.all(to_np(least_received_mass(w)) >= to_np(mass_lower_bound("doubly", shape=s.shape)).min(axis=-1))


@pytest.mark.theorem("THM-MASS-LOWER-BOUND-MASKED")
def test_doubly_masses_reach_the_masked_bound(xp):
    s, allowed = RNG.normal(size=(5, 8, 6)) * 30, _masks(5, 8, 6)
    mass = to_np(received_mass(normalize(to_xp(xp, s), "doubly", mask=to_xp(xp, allowed))))
    bound = np.stack([_brute_bound(a) for a in allowed])
    assert np.all(mass >= bound * (1 - 1e-12))
    assert np.all(mass[~allowed.any(axis=-2)] == 0)
    np.testing.assert_array_equal(to_np(mass_lower_bound("doubly", mask=to_xp(xp, allowed))) > 0, bound > 0)


@pytest.mark.theorem("THM-HYBRID-MASS-BOUND")
def test_hybrid_masses_reach_alpha_times_the_bound(xp):
    s, allowed = RNG.normal(size=(2, 3, 8, 6)) * 30, _masks(3, 8, 6)
    alpha = np.array([0.1, 0.5, 1.0])
    w = normalize(to_xp(xp, s), "hybrid", mask=to_xp(xp, allowed), alpha=to_xp(xp, alpha))
    bound = to_np(mass_lower_bound("hybrid", shape=s.shape, mask=to_xp(xp, allowed), alpha=to_xp(xp, alpha)))
    np.testing.assert_allclose(bound[0], alpha[:, None] * np.stack([_brute_bound(a) for a in allowed]), rtol=1e-12)
    assert np.all(to_np(received_mass(w)) >= bound * (1 - 1e-12))


@pytest.mark.theorem("THM-MASS-BOUND-TIGHT")
def test_one_query_meets_the_bound_exactly(xp):
    s = RNG.normal(size=(3, 1, 7)) * 10
    mass = to_np(received_mass(normalize(to_xp(xp, s), "doubly")))
    np.testing.assert_allclose(mass, to_np(mass_lower_bound("doubly", shape=s.shape)), rtol=1e-12)


def test_sinkhorn_masses_reach_the_doubly_bound(xp):
    s, allowed = RNG.normal(size=(4, 7, 6)) * 30, _masks(4, 7, 6)
    w = normalize(to_xp(xp, s), "sinkhorn", mask=to_xp(xp, allowed), n_iter=4)
    bound = to_np(mass_lower_bound("sinkhorn", mask=to_xp(xp, allowed)))
    assert np.all(to_np(received_mass(w)) >= bound * (1 - 1e-12))


@pytest.mark.theorem("THM-SOFTMAX-EXPLAINS-AWAY")
def test_softmax_explains_a_key_away_and_doubly_does_not(xp):
    t, k, big = 3, 4, 20.0
    s = np.full((t, k), big)
    s[:, 0] = 0.0
    r = report(to_xp(xp, s), schemes=["softmax", "doubly"])
    softmax, doubly = r.schemes["softmax"], r.schemes["doubly"]
    np.testing.assert_allclose(to_np(softmax.mass)[0], t / (1 + (k - 1) * np.exp(big)), rtol=1e-9)
    assert float(to_np(softmax.least_mass)) < 1e-6
    assert float(to_np(softmax.share)) == pytest.approx(1 / k)
    np.testing.assert_allclose(to_np(doubly.mass), t / k, rtol=1e-12)
    assert float(to_np(doubly.share)) == 0.0


def test_report_puts_the_schemes_side_by_side(xp):
    s, allowed = RNG.normal(size=(3, 6, 5)) * 5, _masks(3, 6, 5)
    s[0, 2, 3] = -np.inf  # counts as masked
    seen = allowed & (s != -np.inf)
    r = report(to_xp(xp, s), mask=to_xp(xp, allowed), alpha=0.3, threshold=0.5, schemes=SCHEMES)
    assert list(r.schemes) == ["softmax", "doubly", "hybrid", "sinkhorn"]
    for name, got in r.schemes.items():
        w = to_np(normalize(to_xp(xp, s), name, mask=to_xp(xp, allowed), alpha=0.3))
        np.testing.assert_allclose(to_np(got.mass), w.sum(axis=-2), rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(to_np(got.share), [_hand_share(w[b], seen[b], 0.5) for b in range(3)])
        np.testing.assert_allclose(to_np(got.least_mass), [_hand_least(w[b], seen[b]) for b in range(3)], rtol=1e-10)
        factor = {"softmax": 0.0, "hybrid": 0.3}.get(name, 1.0)
        bound = [factor * _brute_bound(seen[b])[seen[b].any(axis=0)].min() for b in range(2)]
        np.testing.assert_allclose(to_np(got.bound)[:2], bound, rtol=1e-12)
        assert np.all(to_np(got.least_mass) >= to_np(got.bound) * (1 - 1e-12))


def test_report_on_weights_has_no_bound(xp):
    w = _weights(2, 4, 3)
    r = report(to_xp(xp, w), kind="weights")
    assert list(r.schemes) == ["weights"]
    assert r.schemes["weights"].bound is None
    np.testing.assert_allclose(to_np(r.schemes["weights"].least_mass), w.sum(axis=-2).min(axis=-1), rtol=1e-12)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: explained_away_share(np.ones((2, 2), dtype=int)), TypeError, "weights"),
        (lambda: explained_away_share(np.ones(2)), ValueError, "weights"),
        (lambda: least_received_mass(np.ones((2, 0))), ValueError, "weights"),
        (lambda: explained_away_share(np.ones((2, 2)), threshold=-1), ValueError, "threshold"),
        (lambda: explained_away_share(np.ones((2, 2)), threshold="0.1"), TypeError, "threshold"),
        (lambda: least_received_mass(np.ones((2, 2)), mask=np.ones((3, 2), dtype=bool)), ValueError, "mask"),
        (lambda: mass_lower_bound("fast", shape=(2, 2)), ValueError, "scheme"),
        (lambda: mass_lower_bound("doubly"), ValueError, "shape or mask"),
        (lambda: mass_lower_bound("doubly", shape=(3,)), ValueError, "shape"),
        (lambda: mass_lower_bound("doubly", shape=("2", 2)), TypeError, "shape"),
        (lambda: mass_lower_bound("doubly", shape=(2, 2), mask=np.ones(3, dtype=bool)), ValueError, "mask"),
        (lambda: mass_lower_bound("hybrid", shape=(2, 2), alpha=1.5), ValueError, "alpha"),
        (lambda: report(np.ones((2, 2)), kind="probabilities"), ValueError, "kind"),
        (lambda: report(np.ones((2, 2)), kind="weights", schemes=["doubly"]), ValueError, "schemes"),
        (lambda: report(np.ones((2, 2)), schemes=["doubly", "fast"]), ValueError, "scheme"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
