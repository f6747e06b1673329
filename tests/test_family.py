"""The normalization family (spec family.md) against its float64 definitions written out (family_oracles.py), on
every backend: sinks, scalable softmax, sigmoid and stick-breaking attention; their theorems and counterexamples;
decoding in random splits; the packed and torch-signature entry points; the errors that name what to use."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _arrays import to_np, to_xp
from family_oracles import length_scaled, sigmoid_weights, sink_weights, stick_breaking_weights
from oracles import oracle

import dnorm
import dnorm.distributed

RNG = np.random.default_rng(2024)


def _scores(t, k):
    return RNG.normal(size=(t, k)) * 2.0


@pytest.mark.theorem("THM-SINK-IN-EVERY-ROUND")
def test_a_sink_is_one_more_key_in_every_normalized_scheme(xp):
    """normalize and attention (blocked, with a mask that hides a whole row) against the definition, causal too."""
    s, allowed = _scores(7, 5), RNG.random((7, 5)) < 0.8
    allowed[2] = False
    v = RNG.normal(size=(5, 3))
    for scheme in ("softmax", "doubly", "hybrid", "sinkhorn"):
        want = sink_weights(scheme, s, 0.7, allowed=allowed, alpha=0.3)
        got = dnorm.normalize(to_xp(xp, s), scheme, mask=to_xp(xp, allowed), sink=0.7, alpha=0.3)
        np.testing.assert_allclose(to_np(got), want, rtol=1e-12, atol=1e-14, err_msg=scheme)
    square = _scores(6, 6)
    for scheme in ("softmax", "doubly", "hybrid"):  # the blocked attention path: scores = square @ I
        want = sink_weights(scheme, square, -0.4, causal=True, alpha=0.3) @ v[:, :1].repeat(6, 0)[:6]
        out = dnorm.attention(
            square, np.eye(6), v[:, :1].repeat(6, 0)[:6], scheme, causal=True, scale=1.0, sink=-0.4, alpha=0.3,
            block_size=4,
        )  # fmt: skip
        np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-14, err_msg=scheme)


def test_doubly_does_not_depend_on_the_sink_softmax_does():
    """THM-SINK-IN-EVERY-ROUND: under column normalization the sink's logit is -log T whatever it is; the
    off-by-one softmax is the sink at 0."""
    s = _scores(5, 4)
    for scheme in ("doubly", "sinkhorn"):
        np.testing.assert_allclose(dnorm.normalize(s, scheme, sink=-3.0), dnorm.normalize(s, scheme, sink=5.0))
    off_by_one = np.exp(s) / (1 + np.exp(s).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(dnorm.normalize(s, "softmax", sink=0.0), off_by_one, rtol=1e-13)


@pytest.mark.theorem("THM-SINK-MASS-BOUND")
def test_every_real_key_keeps_one_over_k_plus_one():
    """Scores up to 1e4 and masks: doubly, Sinkhorn, causal doubly and the hybrid keep their bound; tight at T = 1."""
    for _ in range(20):
        t, k = RNG.integers(1, 8, size=2)
        s = RNG.uniform(-1e4, 1e4, size=(t, k))
        allowed = RNG.random((t, k)) < 0.7
        seen = allowed.any(axis=0)
        widest = np.array([allowed[allowed[:, j]].sum(axis=1).max() if seen[j] else 0 for j in range(k)])
        bound = np.where(seen, 1 / (widest + 1), 0)
        for scheme, factor in (("doubly", 1.0), ("sinkhorn", 1.0), ("hybrid", 0.3)):
            mass = dnorm.received_mass(dnorm.normalize(s, scheme, mask=allowed, sink=50.0, alpha=0.3))
            assert np.all(mass >= factor * bound * (1 - 1e-9)), scheme
    one = dnorm.received_mass(dnorm.normalize(_scores(1, 6), "doubly", sink=3.0))
    np.testing.assert_allclose(one, 1 / 7)
    s = RNG.uniform(-30, 30, size=(8, 8))
    mass = dnorm.received_mass(dnorm.normalize(s, "doubly", causal=True, sink=30.0))
    first_row = np.arange(8) + 1  # the first query seeing key j sees j + 1 keys
    assert np.all(mass >= 1 / (first_row + 1) * (1 - 1e-12))


def test_received_mass_reports_the_sinks_share():
    s = _scores(6, 4)
    w = dnorm.normalize(s, "softmax", sink=1.5)
    mass = dnorm.received_mass(w, sink=True)
    assert mass.shape == (5,)
    np.testing.assert_allclose(mass.sum(), 6.0)
    np.testing.assert_allclose(mass[-1], (1 - sink_weights("softmax", s, 1.5).sum(axis=1)).sum())


@pytest.mark.theorem("THM-LENGTH-SCALE-KEEPS-BOUNDS")
def test_the_length_scale_multiplies_each_rows_scores_by_log_n(xp):
    """Every scheme on the scaled scores; doubly's bound and causality kept (a later row changes no earlier one)."""
    s, allowed = _scores(6, 5), RNG.random((6, 5)) < 0.7
    for scheme in ("softmax", "doubly", "sinkhorn"):
        want = oracle(scheme, length_scaled(s, 0.8, allowed=allowed), allowed=allowed)
        got = dnorm.normalize(to_xp(xp, s), scheme, mask=to_xp(xp, allowed), length_scale=0.8)
        np.testing.assert_allclose(to_np(got), want, rtol=1e-12, atol=1e-14, err_msg=scheme)
    big = RNG.uniform(-1e3, 1e3, size=(6, 5))
    mass = dnorm.received_mass(dnorm.normalize(big, "doubly", length_scale=5.0))
    assert np.all(mass >= 1 / 5 * (1 - 1e-9))
    square = _scores(6, 6)
    changed = square.copy()
    changed[4:] = 100.0
    for scheme in ("doubly", "stick-breaking"):
        rows = [dnorm.normalize(x, scheme, causal=True, length_scale=1.5)[:4] for x in (square, changed)]
        assert np.array_equal(*rows), scheme


@pytest.mark.theorem("THM-SIGMOID-EXPLAINS-AWAY")
def test_sigmoid_weighs_each_key_alone_and_bounds_nothing(xp):
    s, allowed = _scores(6, 5), RNG.random((6, 5)) < 0.7
    np.testing.assert_allclose(
        to_np(dnorm.normalize(to_xp(xp, s), "sigmoid", mask=to_xp(xp, allowed))),
        sigmoid_weights(s, allowed=allowed), rtol=1e-12, atol=1e-15,
    )  # fmt: skip
    np.testing.assert_allclose(dnorm.normalize(s, "sigmoid", bias=0.5), sigmoid_weights(s, bias=0.5), rtol=1e-12)
    w = dnorm.normalize(np.array([[0.0, -20.0], [0.0, -20.0]]), "sigmoid")
    assert dnorm.received_mass(w)[1] < 1e-8
    np.testing.assert_allclose(w.sum(axis=1), 1 / 3, rtol=1e-8)
    assert np.all(dnorm.normalize(np.full((3, 4), 20.0), "sigmoid").sum(axis=1) > 4 - 1e-7)


@pytest.mark.theorem("THM-STICK-BREAKING-REMAINDER")
@pytest.mark.theorem("THM-STICK-BREAKING-EXPLAINS-AWAY")
def test_stick_breaking_breaks_from_the_nearest_key_back(xp):
    square, allowed = _scores(7, 7), RNG.random((7, 7)) < 0.8
    for current in (False, True):
        want = stick_breaking_weights(square, allowed=allowed, attend_current=current)
        got = dnorm.normalize(to_xp(xp, square), "stick-breaking", causal=True, mask=to_xp(xp, allowed),
                              attend_current=current)  # fmt: skip
        np.testing.assert_allclose(to_np(got), want, rtol=1e-12, atol=1e-15)
    beta = 1 / (1 + np.exp(-square))
    rows = dnorm.normalize(square, "stick-breaking", causal=True).sum(axis=1)
    left = np.array([np.prod(1 - beta[i, :i]) for i in range(7)])  # the strict triangle: keys before i
    np.testing.assert_allclose(rows, 1 - left, rtol=1e-12, atol=1e-15)
    s = np.zeros((4, 4))
    s[:, 0] = -20.0
    assert dnorm.received_mass(dnorm.normalize(s, "stick-breaking", causal=True))[0] < 1e-8
    assert dnorm.received_mass(dnorm.normalize(s, "doubly", causal=True))[0] >= 1 / 4


@pytest.mark.theorem("THM-DECODE-EQUALS-FULL")
def test_decoding_in_random_splits_equals_the_full_rows():
    """Each form, a cache cut at random places: the rows of the full causal computation to 1e-12."""
    q, k, v = (RNG.normal(size=(2, 3, 13, 4)) for _ in range(3))
    forms = [
        ("doubly", {"sink": 0.3}), ("hybrid", {"sink": np.array([0.1, -1.0, 2.0]), "alpha": 0.4}),
        ("softmax", {"sink": 1.0}), ("doubly", {"length_scale": 0.6}), ("sigmoid", {"bias": -1.0}),
        ("stick-breaking", {}), ("stick-breaking", {"attend_current": True, "length_scale": 0.5}),
    ]  # fmt: skip
    for scheme, options in forms:
        full = dnorm.attention(q, k, v, scheme, causal=True, **options)
        cuts = [0, *sorted(RNG.choice(np.arange(1, 13), 4, replace=False).tolist()), 13]
        state, parts = None, []
        for a, b in itertools.pairwise(cuts):
            out, state = dnorm.decode(q[..., a:b, :], k[..., :b, :], v[..., :b, :], state, scheme, **options)
            parts.append(out)
        np.testing.assert_allclose(np.concatenate(parts, axis=-2), full, rtol=1e-12, atol=1e-12, err_msg=scheme)


def test_a_sliding_cache_counts_the_dropped_positions_for_the_sink():
    """decode(position=...): the sink's running statistic counts the positions a window dropped from the cache."""
    q, k, v = (RNG.normal(size=(1, 9, 4)) for _ in range(3))
    window = np.tril(np.ones((9, 9), dtype=bool)) & ~np.tril(np.ones((9, 9), dtype=bool), -4)  # the last 4 keys
    full = dnorm.attention(q, k, v, "doubly", causal=True, mask=window, sink=0.5)
    _, state = dnorm.decode(q[:, :6], k[:, :6], v[:, :6], None, "doubly", mask=window[:6, :6], sink=0.5)
    kept = slice(3, 7)  # the cache keeps the last three keys and appends the new one
    step, _ = dnorm.decode(
        q[:, 6:7], k[:, kept], v[:, kept], tuple(x[..., 3:] for x in state), "doubly", sink=0.5, position=6
    )
    np.testing.assert_allclose(step, full[:, 6:7], rtol=1e-12)


def test_packed_and_torch_signatures_take_the_family():
    torch = pytest.importorskip("torch")
    q, k, v = (RNG.normal(size=(2, 9, 4)) for _ in range(3))
    options = {"sink": np.array([0.5, -0.5]), "length_scale": 0.8}
    packed = dnorm.varlen_attention(q, k, v, [0, 4, 9], "hybrid", causal=True, **options)
    for a, b in ((0, 4), (4, 9)):
        alone = dnorm.attention(q[:, a:b], k[:, a:b], v[:, a:b], "hybrid", causal=True, **options)
        np.testing.assert_allclose(packed[:, a:b], alone, rtol=1e-12)
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    sdpa = dnorm.scaled_dot_product_attention(tq, tk, tv, is_causal=True, scheme="stick-breaking", attend_current=True)
    want = dnorm.attention(q, k, v, "stick-breaking", causal=True, attend_current=True)
    np.testing.assert_allclose(sdpa.numpy(), want, rtol=1e-12)


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda s: dnorm.normalize(s, "sigmoid", sink=0.0), ValueError, "sink= joins the normalized rows"),
        (lambda s: dnorm.normalize(s, "stick-breaking", causal=True, sink=1.0), ValueError, "leave sink out"),
        (lambda s: dnorm.normalize(s, "doubly", bias=1.0), ValueError, "floating mask="),
        (lambda s: dnorm.normalize(s, "softmax", attend_current=True), ValueError, "attend_current"),
        (lambda s: dnorm.normalize(s, "stick-breaking"), NotImplementedError, "pass causal=True"),
        (lambda s: dnorm.normalize(s, "softmax", sink=float("inf")), ValueError, "sink must be finite"),
        (lambda s: dnorm.normalize(s, "softmax", sink="1"), TypeError, "sink must be"),
        (lambda s: dnorm.normalize(s, "softmax", length_scale=np.ones(3)), ValueError, "length_scale of shape"),
        (
            lambda s: dnorm.distributed.attention(s, s, s, "stick-breaking", causal=True),
            NotImplementedError,
            "not sharded",
        ),
        (lambda s: dnorm.distributed.attention(s, s, s, "sinkhorn", sink=1.0), NotImplementedError, "every round"),
    ],
)
def test_a_form_given_where_it_does_not_apply_is_an_error_naming_what_to_use(call, error, words):
    with pytest.raises(error, match=words):
        call(_scores(4, 4)[None].repeat(2, 0))


def test_empty_calls_and_the_fused_paths_refuse_what_they_do_not_compute():
    torch = pytest.importorskip("torch")
    q = torch.zeros(2, 0, 4, dtype=torch.float64)
    k = torch.zeros(2, 5, 4, dtype=torch.float64)
    assert dnorm.attention(q, k, k, "stick-breaking", causal="bottom-right", sink=None).shape == (2, 0, 4)
    assert dnorm.attention(k, k[:, :0], k[:, :0], "sigmoid").shape == (2, 5, 4)
    for scheme, options in (("doubly", {"sink": 0.5}), ("sigmoid", {})):
        with pytest.raises(ValueError, match="kernel='torch' cannot serve"):
            dnorm.attention(k, k, k, scheme, kernel="torch", **options)
