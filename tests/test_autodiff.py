"""Gradients: checked against finite differences, and never NaN (masked rows and keys included)."""

from __future__ import annotations

import numpy as np
import pytest
from oracles import NORMALIZED

import dnorm

torch = pytest.importorskip("torch", reason="torch is not installed")

RNG = np.random.default_rng(13)
MASK = np.array(
    [
        [True, False, True, True, False],
        [False, False, False, False, False],  # a query with no key
        [True, False, True, False, True],
        [True, False, False, True, True],
    ]
)  # key 1 is seen by no query
CASES = [(s, m) for s in NORMALIZED for m in (None, MASK)]


def _t(a: np.ndarray, grad: bool = True):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize(("scheme", "mask"), CASES)
def test_torch_gradcheck_normalize(scheme, mask):
    s = _t(RNG.normal(size=(2, 4, 5)))
    alpha = _t(np.array([0.3, 0.8]))
    m = None if mask is None else torch.tensor(mask)
    assert torch.autograd.gradcheck(lambda s, a: dnorm.normalize(s, scheme, mask=m, alpha=a), (s, alpha))
    assert torch.autograd.gradcheck(lambda s: dnorm.normalize(s, scheme, mask=m, log=True).clamp(min=-1e3), (s,))


@pytest.mark.parametrize(("scheme", "mask"), CASES)
@pytest.mark.parametrize("block_size", [None, 3])
def test_torch_gradcheck_attention(scheme, mask, block_size):
    q, k, v = _t(RNG.normal(size=(4, 3))), _t(RNG.normal(size=(5, 3))), _t(RNG.normal(size=(5, 2)))
    m = None if mask is None else torch.tensor(mask)

    def f(q, k, v):
        return dnorm.attention(q, k, v, scheme, mask=m, block_size=block_size)

    assert torch.autograd.gradcheck(f, (q, k, v))


@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
def test_torch_gradcheck_causal(scheme):
    q, k, v = (_t(RNG.normal(size=(6, 3))) for _ in range(3))
    for block_size in (None, 4):
        assert torch.autograd.gradcheck(
            lambda q, k, v, b=block_size: dnorm.attention(q, k, v, scheme, causal=True, block_size=b), (q, k, v)
        )


@pytest.mark.parametrize("scheme", NORMALIZED)
def test_gradients_are_finite_and_zero_where_nothing_flows(scheme):
    s = _t(RNG.normal(size=(4, 5)) * 30)
    w = dnorm.normalize(s, scheme, mask=torch.tensor(MASK))
    (w * _t(RNG.normal(size=(4, 5)), grad=False)).sum().backward()
    assert torch.isfinite(s.grad).all()
    assert (s.grad[1] == 0).all()
    assert (s.grad[:, 1] == 0).all()


def test_gradient_reaches_alpha_per_head():
    s = _t(RNG.normal(size=(3, 4, 4)), grad=False)
    alpha = _t(np.array([0.0, 0.5, 1.0]))
    dnorm.normalize(s, "hybrid", alpha=alpha)[..., 0].sum().backward()
    doubly, softmax = dnorm.normalize(s, "doubly"), dnorm.normalize(s, "softmax")
    expected = (doubly - softmax)[..., 0].sum(dim=(-1,))
    torch.testing.assert_close(alpha.grad, expected)


jax = pytest.importorskip("jax", reason="jax is not installed")


@pytest.mark.parametrize(("scheme", "mask"), CASES)
def test_jax_grad_matches_finite_differences(scheme, mask):
    from jax.test_util import check_grads

    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    s = jnp.asarray(RNG.normal(size=(4, 5)))
    weights = jnp.asarray(RNG.normal(size=(4, 5)))
    m = None if mask is None else jnp.asarray(mask)

    def loss(s):  # check_grads may pass NumPy arrays
        return jnp.sum(dnorm.normalize(jnp.asarray(s), scheme, mask=m) * weights)

    check_grads(loss, (s,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
    grad = jax.grad(loss)(s)
    assert bool(jnp.all(jnp.isfinite(grad)))
    if mask is not None:
        assert bool(jnp.all(grad[1] == 0))
        assert bool(jnp.all(grad[:, 1] == 0))


def test_jax_grad_through_jit_and_chunks():
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    q, k, v = (jnp.asarray(RNG.normal(size=(7, 3))) for _ in range(3))

    def loss(q, block_size):
        return jnp.sum(dnorm.attention(q, k, v, "hybrid", causal=True, block_size=block_size) ** 2)

    dense = jax.jit(jax.grad(loss), static_argnums=1)(q, None)
    chunked = jax.jit(jax.grad(loss), static_argnums=1)(q, 3)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(dense), rtol=1e-12, atol=1e-14)


@pytest.mark.theorem("THM-BACKWARD-FINITE")
@pytest.mark.parametrize(
    ("scheme", "causal"), [(s, c) for s in NORMALIZED for c in (False, True) if s != "sinkhorn" or not c]
)
@pytest.mark.parametrize("block_size", [None, 16])
def test_autograd_saves_nothing_of_the_size_of_the_scores(scheme, causal, block_size):
    """Every tensor autograd keeps for the backward pass is O(T + K) per head (spec DEF-BLOCKED-BACKWARD)."""
    t = k = 96
    q, key, v = (torch.randn(2, 3, n, 8, dtype=torch.float64, requires_grad=True) for n in (t, k, k))
    alpha = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x.numel()) or x, lambda x: x):
        out = dnorm.attention(q, key, v, scheme, causal=causal, alpha=alpha, block_size=block_size)
    out.sum().backward()
    assert saved
    assert max(saved) <= 2 * 3 * max(t, k) * 8  # the inputs and the output; the scores would be 2 * 3 * t * k
    assert all(torch.isfinite(x.grad).all() for x in (q, key, v))


def test_second_derivatives_raise_instead_of_being_wrong():
    q, k, v = (_t(RNG.normal(size=(5, 3))) for _ in range(3))
    for kwargs in ({}, {"causal": True}, {"block_size": 2}):
        (grad,) = torch.autograd.grad(dnorm.attention(q, k, v, **kwargs).sum(), q)  # first order: fine
        assert torch.isfinite(grad).all()
        with pytest.raises(RuntimeError, match="first order only"):
            torch.autograd.grad(dnorm.attention(q, k, v, **kwargs).sum(), q, create_graph=True)


@pytest.mark.parametrize(("scheme", "causal"), [("doubly", True), ("sinkhorn", False)])
def test_jax_second_derivatives_are_exact(scheme, causal):
    from jax.test_util import check_grads

    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    q, k, v = (jnp.asarray(RNG.normal(size=(4, 2))) for _ in range(3))

    @jax.jit  # compiled once: check_grads evaluates it many times
    def loss(q):
        return jnp.sum(jnp.sin(dnorm.attention(jnp.asarray(q), k, v, scheme, causal=causal, block_size=2)))

    check_grads(loss, (q,), order=2, modes=["rev"], atol=1e-6, rtol=1e-6)
