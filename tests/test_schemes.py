"""Every scheme against the plain-loop float64 oracles, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from _strategies import SCHEME_CAUSAL
from array_api_extra.testing import lazy_xp_function
from oracles import NORMALIZED as SCHEMES
from oracles import oracle

from dnorm import normalize, received_mass

lazy_xp_function(normalize)
lazy_xp_function(received_mass)

RNG = np.random.default_rng(20201006)


def _scores(*shape: int, scale: float = 2.0) -> np.ndarray:
    return RNG.normal(size=shape) * scale


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 6, 4), (1, 1), (1, 6), (6, 1)])
def test_matches_oracle(xp, scheme, shape):
    s = _scores(*shape)
    got = to_np(normalize(to_xp(xp, s), scheme))
    np.testing.assert_allclose(got, oracle(scheme, s), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_matches_oracle_with_boolean_mask(xp, scheme):
    s = _scores(2, 6, 5)
    allowed = RNG.random((6, 5)) < 0.6
    allowed[0] = False  # a query with no key
    allowed[:, 1] = False  # a key no query sees
    got = to_np(normalize(to_xp(xp, s), scheme, mask=to_xp(xp, allowed)))
    np.testing.assert_allclose(got, oracle(scheme, s, allowed=allowed), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_float_mask_is_added(xp, scheme):
    s = _scores(6, 5)
    bias = RNG.normal(size=(6, 5))
    bias[2, 3] = -np.inf
    got = to_np(normalize(to_xp(xp, s), scheme, mask=to_xp(xp, bias)))
    np.testing.assert_allclose(got, oracle(scheme, s + bias), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
def test_causal_matches_oracle(xp, scheme):
    s = _scores(2, 7, 7)
    got = to_np(normalize(to_xp(xp, s), scheme, causal=True))
    np.testing.assert_allclose(got, oracle(scheme, s, causal=True), rtol=1e-10, atol=1e-13)


def test_causal_with_mask_needs_both(xp):
    s = _scores(6, 6)
    allowed = RNG.random((6, 6)) < 0.7
    got = to_np(normalize(to_xp(xp, s), mask=to_xp(xp, allowed), causal=True))
    np.testing.assert_allclose(got, oracle("doubly", s, allowed=allowed, causal=True), rtol=1e-10, atol=1e-13)


def test_hybrid_alpha_per_head(xp):
    s = _scores(2, 3, 5, 4)
    alpha = np.array([0.0, 0.3, 1.0])
    got = to_np(normalize(to_xp(xp, s), "hybrid", alpha=to_xp(xp, alpha)))
    np.testing.assert_allclose(got, oracle("hybrid", s, alpha=alpha), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got[:, 0], oracle("softmax", s[:, 0]), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got[:, 2], oracle("doubly", s[:, 2]), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("n_iter", [1, 2, 5])
def test_sinkhorn_rounds_match_oracle(xp, n_iter):
    s = _scores(6, 4)
    got = to_np(normalize(to_xp(xp, s), "sinkhorn", n_iter=n_iter))
    np.testing.assert_allclose(got, oracle("sinkhorn", s, n_iter=n_iter), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(("scheme", "causal"), SCHEME_CAUSAL)
def test_log_weights_are_the_log_of_weights(xp, scheme, causal):
    s = _scores(2, 6, 6)
    allowed = RNG.random((6, 6)) < 0.7
    allowed[1] = False
    kwargs = {"mask": to_xp(xp, allowed), "causal": causal}
    w = to_np(normalize(to_xp(xp, s), scheme, **kwargs))
    log_w = to_np(normalize(to_xp(xp, s), scheme, log=True, **kwargs))
    assert np.all(np.isneginf(log_w) == (w == 0))
    np.testing.assert_allclose(np.exp(log_w), w, rtol=1e-12, atol=0)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_hybrid_log_weights_at_alpha_bounds_do_not_underflow(xp, alpha):
    """At alpha 0 or 1 the log-mixture equals one scheme's log-weights even where the other's dominate."""
    s = np.array([[800.0, 0.0], [0.0, 0.0]])
    got = to_np(normalize(to_xp(xp, s), "hybrid", alpha=alpha, log=True))
    expected = to_np(normalize(to_xp(xp, s), "doubly" if alpha == 1.0 else "softmax", log=True))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert np.isfinite(got).all()


def test_received_mass_sums_columns(xp):
    w = RNG.random((2, 5, 3))
    np.testing.assert_allclose(to_np(received_mass(to_xp(xp, w))), w.sum(axis=-2), rtol=1e-12)


def test_received_mass_mask_leaves_out_entries(xp):
    w = RNG.random((5, 3))
    counted = RNG.random((5, 1)) < 0.5
    got = to_np(received_mass(to_xp(xp, w), mask=to_xp(xp, counted)))
    np.testing.assert_allclose(got, (w * counted).sum(axis=0), rtol=1e-12)
    additive = np.where(counted, 0.0, -np.inf)
    np.testing.assert_allclose(to_np(received_mass(to_xp(xp, w), mask=to_xp(xp, additive))), got, rtol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_scheme_home_describes_what_each_scheme_computes(scheme):
    """dnorm._kernels.schemes, which every path reads, against what the public functions compute."""
    from dnorm._kernels.schemes import SCHEMES as DESCRIBED
    from dnorm.diagnostics import mass_lower_bound

    described = DESCRIBED[scheme]
    s = _scores(6, 4)
    bound = np.asarray(mass_lower_bound(scheme, shape=(6, 4), alpha=0.25))
    expected = {None: 0.0, "one": 1 / 4, "alpha": 0.25 / 4}[described.bound]
    np.testing.assert_allclose(bound, expected)
    mixes = not np.allclose(normalize(s, scheme, alpha=0.2), normalize(s, scheme, alpha=0.7))
    assert mixes == described.mixed
    unbiased = np.allclose(normalize(s, scheme, alpha=0.0), normalize(s, "softmax"))  # the plain component alone
    assert unbiased == described.plain
    if described.causal is None:
        with pytest.raises(NotImplementedError, match="no strictly causal definition"):
            normalize(s[:4], scheme, causal=True)
    else:
        running = not np.allclose(normalize(s[:4], scheme, causal=True), normalize(s[:4], "softmax", causal=True))
        assert running == (described.causal == "running")
