"""The backward kernels (spec gradients.md) on every backend, against autodiff of the plain definitions."""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from gradient_oracles import attention_and_grads
from oracles import NORMALIZED as SCHEMES

from dnorm._kernels import attention as kernels
from dnorm._kernels.scores import block_bounds

RNG = np.random.default_rng(29)
SEED = 20201001
CASES = [(s, c) for s in SCHEMES for c in (False, True) if not (c and s == "sinkhorn")]
THEOREM_CASES = [
    pytest.param("softmax", False, marks=pytest.mark.theorem("THM-ROW-SOFTMAX-GRADIENT")),
    pytest.param("softmax", True, marks=pytest.mark.theorem("THM-ROW-SOFTMAX-GRADIENT")),
    pytest.param("doubly", False, marks=pytest.mark.theorem("THM-DNAS-GRADIENT")),
    pytest.param("doubly", True, marks=pytest.mark.theorem("THM-CAUSAL-GRADIENT")),
    pytest.param("hybrid", False, marks=pytest.mark.theorem("THM-HYBRID-GRADIENT")),
    pytest.param(
        "hybrid", True, marks=[pytest.mark.theorem("THM-HYBRID-GRADIENT"), pytest.mark.theorem("THM-CAUSAL-GRADIENT")]
    ),
    pytest.param("sinkhorn", False, marks=pytest.mark.theorem("THM-SINKHORN-GRADIENT")),
]


def _problem(mask_kind, *, lead=(1, 3), t=7, k=6, d=4, dv=3, magnitude=1.0):
    q = RNG.normal(size=(*lead, t, d)) * magnitude
    arrays = {"q": q, "k": RNG.normal(size=(*lead, k, d)), "v": RNG.normal(size=(*lead, k, dv))}
    arrays["d_out"] = RNG.normal(size=(*lead, t, dv))
    allowed = RNG.random((lead[0], 1, t, k)) < 0.75
    allowed[0, 0, 2] = False  # a query that sees no key
    allowed[-1, 0, :, 4] = False  # a key that no query sees
    arrays["mask"] = {
        "none": None,
        "bool": allowed,
        "float": np.where(allowed, RNG.normal(size=allowed.shape), -np.inf),
    }[mask_kind]
    arrays["alpha"] = np.array([0.2, 0.5, 0.9])
    return arrays


def _run_kernels(xp, p, *, scheme, causal, block_size, n_iter=3, softcap=None, dropout=0.0):
    """The kernels' forward and backward pass on backend ``xp``, as NumPy (dropout's seed: ``SEED``).

    Dask arrays come in one chunk: Dask records no gradients, so its backward pass runs here only to show
    that the kernels are pure array-API code; the forward tests cover its chunks.
    """
    q, k, v, d_out = (to_xp(xp, p[name], chunked=False) for name in ("q", "k", "v", "d_out"))
    mask = None if p["mask"] is None else to_xp(xp, p["mask"], chunked=False)
    alpha = xp.reshape(to_xp(xp, p["alpha"], chunked=False), (3, 1, 1))
    t = p["q"].shape[-2]
    rows = block_bounds(t, block_size or t)
    options = kernels.BlockedOptions(
        scheme, causal, n_iter, p["q"].shape[-1] ** -0.5, rows, block_size is None, rows, 0, softcap, dropout
    )
    seed = xp.asarray(SEED, dtype=xp.int32) if dropout else None
    out, residuals = kernels.forward(q, k, v, mask, alpha, seed, options=options, xp=xp)
    floating = mask is not None and xp.isdtype(mask.dtype, "real floating")
    grads = kernels.backward(
        q, k, v, mask, alpha, seed, out, residuals, d_out, options=options, mask_grad=floating, xp=xp
    )
    names = ("query", "key", "value", "mask", "alpha")
    return to_np(out), {n: to_np(g) for n, g in zip(names, grads, strict=True) if g is not None}, residuals


@pytest.mark.parametrize(("scheme", "causal"), THEOREM_CASES)
@pytest.mark.parametrize(("mask_kind", "block_size"), [("none", None), ("bool", 3), ("float", None), ("float", 4)])
def test_backward_kernels_match_autodiff_of_the_definitions(xp, scheme, causal, mask_kind, block_size):
    p = _problem(mask_kind)
    out, grads, _ = _run_kernels(xp, p, scheme=scheme, causal=causal, block_size=block_size)
    kwargs = {"scheme": scheme, "mask": p["mask"], "causal": causal, "alpha": np.reshape(p["alpha"], (3,))}
    expected_out, expected = attention_and_grads(p["q"], p["k"], p["v"], p["d_out"], **kwargs)
    np.testing.assert_allclose(out, expected_out, rtol=1e-12, atol=1e-13)
    assert set(grads) == set(expected)
    for name, want in expected.items():
        np.testing.assert_allclose(grads[name], np.reshape(want, grads[name].shape), rtol=1e-10, atol=1e-12)


@pytest.mark.theorem("THM-SOFTCAP-GRADIENT")
@pytest.mark.theorem("THM-DROPOUT-GRADIENT")
@pytest.mark.parametrize(("scheme", "causal"), CASES)
@pytest.mark.parametrize(
    ("softcap", "dropout", "mask_kind", "block_size"),
    [(1.5, 0.25, "float", None), (1.5, 0.25, "bool", 3), (None, 0.4, "bool", 3)],
)
def test_softcap_and_dropout_gradients_match_autodiff_of_the_definitions(
    xp, scheme, causal, softcap, dropout, mask_kind, block_size
):
    """Capped scores (``softcap * tanh(S / softcap)``) and dropped weights, against autograd with the same mask."""
    from dnorm._kernels.dropout import Dropout, factor

    p = _problem(mask_kind, magnitude=3.0)
    out, grads, _ = _run_kernels(
        xp, p, scheme=scheme, causal=causal, block_size=block_size, softcap=softcap, dropout=dropout
    )
    keep = None
    if dropout:  # the mask, as NumPy draws it from the seed (the same on every backend)
        like = np.zeros((), dtype=np.float64)
        keep = factor(Dropout(dropout, np.asarray(SEED, dtype=np.int32)), 0, 7, 6, (1, 3), xp=np, like=like)
        assert 0 < (keep == 0).mean() < 1
    kwargs = {"scheme": scheme, "mask": p["mask"], "causal": causal, "alpha": np.reshape(p["alpha"], (3,))}
    expected_out, expected = attention_and_grads(
        p["q"], p["k"], p["v"], p["d_out"], softcap=softcap, keep=keep, **kwargs
    )
    np.testing.assert_allclose(out, expected_out, rtol=1e-12, atol=1e-13)
    assert set(grads) == set(expected)
    for name, want in expected.items():
        np.testing.assert_allclose(grads[name], np.reshape(want, grads[name].shape), rtol=1e-10, atol=1e-12)


@pytest.mark.theorem("THM-MASK-GRADIENT")
@pytest.mark.parametrize(("scheme", "causal"), CASES)
def test_mask_gradient_sums_to_zero_along_the_invariant_axis(xp, scheme, causal):
    p = _problem("float")
    p["mask"] = np.where(RNG.random((1, 3, 7, 6)) < 0.8, RNG.normal(size=(1, 3, 7, 6)), -np.inf)
    _, grads, _ = _run_kernels(xp, p, scheme=scheme, causal=causal, block_size=3)
    d_mask = grads["mask"]
    assert d_mask.shape == p["mask"].shape
    assert (d_mask[np.isneginf(p["mask"])] == 0).all()
    if scheme == "softmax":
        np.testing.assert_allclose(d_mask.sum(axis=-1), 0.0, atol=1e-13)
    elif scheme != "hybrid":
        np.testing.assert_allclose(d_mask.sum(axis=-2), 0.0, atol=1e-13)


@pytest.mark.theorem("THM-BACKWARD-FINITE")
@pytest.mark.parametrize(("scheme", "causal"), CASES)
def test_overflow_prone_inputs_give_finite_gradients_and_zeros_where_nothing_flows(xp, scheme, causal):
    """Scores near 1e3 in float64, a query that dominates every column, an empty row and an unseen key."""
    p = _problem("bool", magnitude=300.0)
    p["q"][:, :, 5] = 1e3 * np.sign(p["k"].sum(axis=-2))  # query 5 dominates every column (r_i -> -1e3 elsewhere)
    _, grads, _ = _run_kernels(xp, p, scheme=scheme, causal=causal, block_size=4)
    kwargs = {"scheme": scheme, "mask": p["mask"], "causal": causal, "alpha": np.reshape(p["alpha"], (3,))}
    _, expected = attention_and_grads(p["q"], p["k"], p["v"], p["d_out"], **kwargs)
    for name, got in grads.items():
        assert np.isfinite(got).all(), name
        want = np.reshape(expected[name], got.shape)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(want).max()))
    assert (grads["query"][0, :, 2] == 0).all()  # the query that sees nothing
    assert (grads["key"][-1, :, 4] == 0).all()
    assert (grads["value"][-1, :, 4] == 0).all()


@pytest.mark.theorem("THM-BACKWARD-FINITE")
@pytest.mark.parametrize("scheme", ["doubly", "hybrid"])
def test_large_float32_scores_keep_gradients_finite(xp, scheme):
    p = _problem("none")
    for name in ("q", "k", "v", "d_out", "alpha"):
        p[name] = p[name].astype(np.float32)
    p["q"] *= 3e3  # scores of magnitude 1e3 and more
    for causal in (False, True):
        _, grads, _ = _run_kernels(xp, p, scheme=scheme, causal=causal, block_size=4)
        assert all(np.isfinite(g).all() for g in grads.values())


@pytest.mark.theorem("DEF-BLOCKED-BACKWARD")
@pytest.mark.parametrize(("scheme", "causal"), CASES)
def test_residuals_hold_nothing_of_the_size_of_the_scores(xp, scheme, causal):
    """The forward pass keeps O(T + K) numbers per head (spec DEF-BLOCKED-BACKWARD), never the scores."""
    from dnorm._autodiff._tree import flatten

    p = _problem("bool", t=24, k=24, d=2, dv=2)
    q, k, v = (to_xp(xp, p[name]) for name in ("q", "k", "v"))
    alpha = xp.reshape(to_xp(xp, p["alpha"]), (3, 1, 1))
    rows = block_bounds(24, 12)
    options = kernels.BlockedOptions(scheme, causal, 3, 0.5, rows, False, rows)
    _, residuals = kernels.forward(q, k, v, to_xp(xp, p["mask"]), alpha, None, options=options, xp=xp)
    leaves, _ = flatten(residuals)  # shapes only: lazy backends compute nothing
    for leaf in leaves:
        assert int(np.prod(leaf.shape)) <= 3 * 24 * 2, leaf.shape  # one row per key or an output, not 24 x 24


@pytest.mark.theorem("THM-GRADIENT-AS-ATTENTION")
def test_gradient_terms_are_attention_products(xp):
    """Items 1-3: B^T Q and c, B (gamma K) and A^T delta are attentions with biases (checked through dnorm)."""
    from dnorm import attention

    t, k, d, scale = 6, 5, 3, 0.7
    q, key, v, d_out = (RNG.normal(size=shape) for shape in ((t, d), (k, d), (k, 2), (t, 2)))
    s = q @ key.T * scale
    c = np.log(np.exp(s).sum(axis=0))
    b = np.exp(s - c)
    r = np.log(b.sum(axis=1))
    a = b / np.exp(r)[:, None]
    delta = ((a @ v) * d_out).sum(axis=1)
    gamma = (a * (d_out @ v.T - delta[:, None])).sum(axis=0)

    def att(queries, keys, values, bias=None):
        mask = None if bias is None else to_xp(xp, np.broadcast_to(bias, (queries.shape[0], keys.shape[0])).copy())
        return to_np(
            attention(to_xp(xp, queries), to_xp(xp, keys), to_xp(xp, values), "softmax", scale=scale, mask=mask)
        )

    np.testing.assert_allclose(att(key, q, q), b.T @ q, rtol=1e-12)  # item 1
    np.testing.assert_allclose(
        np.exp(r)[:, None] * att(q, key, gamma[:, None] * key, -c), b @ (gamma[:, None] * key), rtol=1e-11
    )
    mass = a.sum(axis=0)
    np.testing.assert_allclose(mass * att(key, q, delta[:, None], -r)[:, 0], a.T @ delta, rtol=1e-11)  # item 3
    swapped_lse = np.log(np.exp(s.T - r).sum(axis=1))
    np.testing.assert_allclose(mass, np.exp(swapped_lse - c), rtol=1e-12)
