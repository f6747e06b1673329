"""Gradients of the normalization family against torch float64 autograd of the definitions written out
(family_gradient_oracles.py): through torch's autograd and JAX's ``grad``, the sink's, the length scale's and the
sigmoid's bias included (spec THM-SINK-GRADIENT, THM-STICK-BREAKING-GRADIENT, DEF-LENGTH-SCALE, DEF-SIGMOID)."""

from __future__ import annotations

import numpy as np
import pytest
from family_gradient_oracles import reference

import dnorm

torch = pytest.importorskip("torch", reason="torch gives the reference gradients")

RNG = np.random.default_rng(24)
H, T, D = 2, 7, 3
#: (scheme, causal, options): every form, each on the path its backward pass takes.
FORMS = [
    pytest.param("softmax", False, {"sink": [0.3, -1.2]}, marks=pytest.mark.theorem("THM-SINK-GRADIENT"), id="softmax"),
    pytest.param("hybrid", True, {"sink": [0.3, 1.0], "alpha": [0.25, 0.8]}, id="hybrid-causal"),
    pytest.param("doubly", False, {"sink": [0.5, 0.5], "length_scale": [0.7, 1.3]}, id="doubly-ssmax"),
    pytest.param("sinkhorn", False, {"sink": [-0.4, 2.0]}, id="sinkhorn"),
    pytest.param("softmax", True, {"length_scale": [0.9, 0.4]}, id="softmax-causal-ssmax"),
    pytest.param("sigmoid", True, {"bias": [-0.5, 0.5]}, id="sigmoid"),
    pytest.param("stick-breaking", True, {}, marks=pytest.mark.theorem("THM-STICK-BREAKING-GRADIENT"), id="sticks"),
    pytest.param("stick-breaking", True, {"attend_current": True, "length_scale": [1.1, 0.6]}, id="sticks-current"),
]


def _problem():
    q, k, v, d_out = (RNG.normal(size=(H, T, D)) for _ in range(4))
    mask = RNG.random((T, T)) < 0.8
    mask[2] = False  # a query that sees no key
    return q, k, v, d_out, mask


def _split(options):
    numbers = {n: np.asarray(x, dtype=np.float64) for n, x in options.items() if n != "attend_current"}
    return numbers, {n: x for n, x in options.items() if n == "attend_current"}


@pytest.mark.parametrize(("scheme", "causal", "options"), FORMS)
def test_torch_gradients_equal_the_definitions(scheme, causal, options):
    q, k, v, d_out, mask = _problem()
    want_out, want = reference(q, k, v, d_out, scheme=scheme, mask=mask, causal=causal, **options)
    numbers, flags = _split(options)
    leaves = {n: torch.tensor(x, requires_grad=True) for n, x in {"query": q, "key": k, "value": v, **numbers}.items()}
    given = {n: leaves[n] for n in numbers}
    out = dnorm.attention(
        leaves["query"], leaves["key"], leaves["value"], scheme, mask=torch.from_numpy(mask), causal=causal,
        block_size=3, **given, **flags,
    )  # fmt: skip
    (out * torch.from_numpy(d_out)).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), want_out, rtol=1e-12, atol=1e-12)
    names = {"query": "q", "key": "k", "value": "v"}
    for name, leaf in leaves.items():
        got = np.zeros(leaf.shape) if leaf.grad is None else leaf.grad.numpy()  # doubly's sink: no gradient
        np.testing.assert_allclose(got, want[names.get(name, name)], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(("scheme", "causal", "options"), [FORMS[1], FORMS[5], FORMS[6]])
def test_jax_gradients_equal_the_definitions(scheme, causal, options):
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    jax.config.update("jax_enable_x64", True)
    q, k, v, d_out, mask = _problem()
    _, want = reference(q, k, v, d_out, scheme=scheme, mask=mask, causal=causal, **options)
    numbers, flags = _split(options)

    def loss(arrays):
        out = dnorm.attention(
            arrays["q"], arrays["k"], arrays["v"], scheme, mask=jnp.asarray(mask), causal=causal,
            **{n: arrays[n] for n in numbers}, **flags,
        )  # fmt: skip
        return (out * d_out).sum()

    got = jax.grad(loss)({"q": q, "k": k, "v": v, **numbers})
    for name, array in got.items():
        expected = want.get(name, np.zeros(array.shape))
        np.testing.assert_allclose(np.asarray(array), expected, rtol=1e-10, atol=1e-12, err_msg=name)
