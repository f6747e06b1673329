"""The theorems of spec/theorems.md, each checked on every backend and marked with its identifier.

The mass bounds, row sums and Sinkhorn's first round are hypothesis properties
in test_properties.py; here are the identities, invariances, tightness, the
counterexamples, and the two checks against oracles outside this code (POT's
Sinkhorn solver, scipy.stats Gaussian densities).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _arrays import to_np, to_xp
from _strategies import check_property, scores_and_masks
from array_api_extra.testing import lazy_xp_function
from hypothesis import strategies as st

from dnorm import attention, normalize, received_mass

lazy_xp_function(normalize)
lazy_xp_function(attention)

RNG = np.random.default_rng(2009_14308)


def _w(xp, scores, scheme="doubly", mask=None, **kwargs) -> np.ndarray:
    m = None if mask is None else to_xp(xp, mask)
    return to_np(normalize(to_xp(xp, np.asarray(scores, dtype=np.float64)), scheme, mask=m, **kwargs))


@pytest.mark.theorem("THM-DNAS-AS-BIASED-SOFTMAX")
def test_doubly_is_softmax_with_the_per_key_bias(xp):
    """rowsoftmax(S - c) with c the column logsumexp, c passed as a floating mask to softmax."""
    from scipy.special import logsumexp

    def check(data):
        scores, mask = data
        s = scores.astype(np.float64) / 100  # moderate magnitudes: compared to float64 rounding
        allowed = np.ones(s.shape, dtype=bool) if mask is None else mask
        c = logsumexp(np.where(allowed, s, -np.inf), axis=-2, keepdims=True)
        bias = np.where(allowed, -np.where(np.isfinite(c), c, 0.0), -np.inf)
        np.testing.assert_allclose(_w(xp, s, "doubly", mask), _w(xp, s, "softmax", bias), rtol=1e-12, atol=1e-15)

    check_property(xp, scores_and_masks(), check)


@pytest.mark.theorem("THM-MASS-BOUND-TIGHT")
def test_one_query_gets_exactly_uniform_weights(xp):
    s = RNG.normal(size=(3, 1, 6)) * 50
    np.testing.assert_allclose(_w(xp, s), 1 / 6, rtol=1e-14)


@pytest.mark.theorem("THM-MASS-BOUND-TIGHT")
@pytest.mark.parametrize(("t", "k"), [(2, 2), (5, 3), (8, 8)])
def test_the_bound_is_approached(xp, t, k):
    big = 2 * np.log(t) + 30.0
    s = np.full((t, k), big / 2)
    s[0, :] = big
    s[:, 0] = 0.0
    s[0, 0] = big
    mass = received_mass(_w(xp, s))
    assert 1 / k <= mass[0] * (1 + 1e-12)
    assert mass[0] <= 1 / k + 3 * (t - 1) * np.exp(-big / 2)


@pytest.mark.theorem("THM-SOFTMAX-EXPLAINS-AWAY")
def test_softmax_explains_a_key_away_and_doubly_does_not(xp):
    q, k, v = np.array([[1.0], [1.0]]), np.array([[0.0], [20.0]]), np.eye(2)
    args = [to_xp(xp, a) for a in (q, k, v)]
    soft = to_np(attention(*args, "softmax")).sum(axis=0)  # with v = I, output columns are masses
    np.testing.assert_allclose(soft[0], 2 / (1 + np.exp(20.0)), rtol=1e-10)
    assert soft[0] < 1e-6
    np.testing.assert_allclose(to_np(attention(*args, "doubly")).sum(axis=0), [1.0, 1.0], rtol=1e-12)
    assert to_np(attention(*args, "hybrid", alpha=0.5)).sum(axis=0)[0] > 0.5


@pytest.mark.theorem("THM-SOFTMAX-EXPLAINS-AWAY")
@pytest.mark.parametrize(("t", "k"), [(1, 2), (4, 3), (16, 16)])
def test_softmax_mass_below_any_epsilon(xp, t, k):
    eps = 1e-6
    big = np.log(t / eps) + 1
    s = np.full((t, k), big)
    s[:, 0] = 0.0
    soft = received_mass(_w(xp, s, "softmax"))
    np.testing.assert_allclose(soft[0], t / (1 + (k - 1) * np.exp(big)), rtol=1e-10)
    assert soft[0] < eps
    # the weaker scheme violates the bound that doubly and hybrid keep
    assert received_mass(_w(xp, s, "doubly"))[0] >= 1 / k
    assert received_mass(_w(xp, s, "hybrid", alpha=0.25))[0] >= 0.25 / k


@pytest.mark.theorem("THM-HYBRID-MASS-BOUND")
def test_hybrid_bound_is_alpha_over_k_and_no_more(xp):
    """One query: doubly is uniform, softmax explains key 0 away, so hybrid gives it just over alpha / K."""
    s = np.array([[0.0, 40.0, 40.0]])
    mass = received_mass(_w(xp, s, "hybrid", alpha=0.25))
    assert 0.25 / 3 <= mass[0] < 0.25 / 3 + 1e-15 + 1e-16
    assert mass[0] < 1 / 3


@pytest.mark.theorem("THM-SHIFT-INVARIANCE")
def test_softmax_ignores_row_shifts_and_doubly_column_shifts(xp):
    def check(args):
        (scores, mask), seed = args
        gen = np.random.default_rng(seed)
        s = scores.astype(np.float64) / 100
        rows, cols = gen.normal(size=(*s.shape[:-1], 1)) * 10, gen.normal(size=(*s.shape[:-2], 1, s.shape[-1])) * 10
        np.testing.assert_allclose(_w(xp, s + rows, "softmax", mask), _w(xp, s, "softmax", mask), atol=1e-12)
        for scheme, kwargs in [("doubly", {}), ("sinkhorn", {"n_iter": 4}), ("doubly", {"causal": "top-left"})]:
            np.testing.assert_allclose(
                _w(xp, s + cols, scheme, mask, **kwargs), _w(xp, s, scheme, mask, **kwargs), atol=1e-12
            )

    check_property(xp, st.tuples(scores_and_masks(), st.integers(0, 2**32 - 1)), check)


@pytest.mark.theorem("THM-SHIFT-INVARIANCE")
def test_neither_invariance_extends_to_the_other_shift(xp):
    s = np.array([[np.log(3.0), 0.0], [0.0, 0.0]])
    row_shift = s + np.array([[np.log(3.0)], [0.0]])
    np.testing.assert_allclose(_w(xp, s)[0], [3 / 5, 2 / 5], rtol=1e-12)
    np.testing.assert_allclose(_w(xp, row_shift)[0], [6 / 11, 5 / 11], rtol=1e-12)
    col_shift = s + np.array([[0.0, 5.0]])
    assert not np.allclose(_w(xp, col_shift, "softmax"), _w(xp, s, "softmax"))


@pytest.mark.theorem("THM-PERMUTATION-EQUIVARIANCE")
@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid", "sinkhorn"])
def test_permuting_queries_and_keys(xp, scheme):
    t, k, d = 6, 5, 3
    q, kk, v = RNG.normal(size=(t, d)), RNG.normal(size=(k, d)), RNG.normal(size=(k, 2))
    allowed = RNG.random((t, k)) < 0.7
    pi, tau = RNG.permutation(t), RNG.permutation(k)
    base = to_np(attention(*(to_xp(xp, a) for a in (q, kk, v)), scheme, mask=to_xp(xp, allowed)))
    moved = attention(*(to_xp(xp, a) for a in (q[pi], kk[tau], v[tau])), scheme, mask=to_xp(xp, allowed[pi][:, tau]))
    np.testing.assert_allclose(to_np(moved), base[pi], rtol=1e-12, atol=1e-14)
    s = q @ kk.T
    w, w_moved = _w(xp, s, scheme, allowed), _w(xp, s[pi][:, tau], scheme, allowed[pi][:, tau])
    np.testing.assert_allclose(w_moved, w[pi][:, tau], rtol=1e-12, atol=1e-14)


@pytest.mark.theorem("THM-SINKHORN-CONVERGENCE")
@pytest.mark.parametrize(("t", "k"), [(4, 4), (6, 3), (3, 7)])
def test_sinkhorn_converges_to_pots_plan(xp, t, k):
    """POT's solver, with marginals 1 per query and T/K per key, gives the limit of dnorm's rounds."""
    ot = pytest.importorskip("ot", reason="POT is not installed")
    s = RNG.normal(size=(t, k)) * 0.5  # spread 0.5: the contraction of THM-SINKHORN-CONVERGENCE is fast
    plan = ot.sinkhorn(np.ones(t), np.full(k, t / k), -s, reg=1.0, numItermax=100_000, stopThr=1e-14)
    w = _w(xp, s, "sinkhorn", n_iter=30)
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(w.sum(axis=-2), t / k, rtol=1e-9)
    np.testing.assert_allclose(w, plan, rtol=1e-8, atol=1e-12)


@pytest.mark.theorem("THM-SINKHORN-CONVERGENCE")
def test_sinkhorn_column_spread_shrinks_with_rounds(xp):
    s = np.random.default_rng(0).normal(size=(5, 4))
    spreads = []
    for n in (1, 2, 4, 8, 16, 32):
        log_mass = np.log(received_mass(_w(xp, s, "sinkhorn", n_iter=n)))
        spreads.append(log_mass.max() - log_mass.min())
    assert all(b <= a for a, b in itertools.pairwise(spreads))
    assert spreads[-1] < 1e-6 * spreads[0]


@pytest.mark.theorem("THM-EM-STEP")
def test_one_doubly_layer_is_one_em_step(xp):
    """E-step and M-step computed from scipy.stats Gaussian log densities, against attention()."""
    from scipy.special import softmax
    from scipy.stats import multivariate_normal

    t, k, d = 3, 12, 2
    means, points = RNG.normal(size=(t, d)) * 2, RNG.normal(size=(k, d)) * 2
    log_density = np.array([multivariate_normal(mean=m, cov=np.eye(d)).logpdf(points) for m in means])
    responsibility = softmax(log_density, axis=0)  # E-step: p(component i | x_j), uniform priors
    new_means = responsibility @ points / responsibility.sum(axis=1, keepdims=True)  # M-step
    q = np.hstack([means, -0.5 * (means**2).sum(axis=1, keepdims=True)])
    kk = np.hstack([points, np.ones((k, 1))])
    out = to_np(attention(to_xp(xp, q), to_xp(xp, kk), to_xp(xp, points), "doubly", scale=1.0))
    np.testing.assert_allclose(out, new_means, rtol=1e-10, atol=1e-12)
    # softmax attention is the reverse assignment, not the EM step
    soft = to_np(attention(to_xp(xp, q), to_xp(xp, kk), to_xp(xp, points), "softmax", scale=1.0))
    assert not np.allclose(soft, new_means, atol=1e-3)
