"""The compiled CPU kernels (``kernel="numba"``): against the array-API kernels and the float64 definitions.

Through the public functions, on NumPy arrays and torch CPU tensors: every normalized scheme, causal or not,
forward, gradients (queries, keys, values, ``alpha``, a learned ``length_scale``) and decoding equal the array-API
kernels to 1e-12 in float64; the family's rows that are not a softmax (sigmoid, stick-breaking) and a sink are
refused by name, and ``"auto"`` gives them to the array-API kernels.
Shapes are small and few, T differs from K, heads are grouped and the mask hides a whole row and a whole column.
Compilation is what costs here (8-10 s per pass and dtype on a loaded 2-core machine, once per machine with
numba's cache): the module compiles three passes, the forward and backward ones in float64 and the forward one in
float32, and the last test checks that no call compiled a second specialization of a pass.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from oracles import oracle

import dnorm

pytest.importorskip("numba", reason="the compiled CPU kernels need numba: pip install -e '.[numba]'")
torch = pytest.importorskip("torch", reason="gradients are checked through torch's autograd")

from dnorm._cpu import implementation, launch  # noqa: E402
from dnorm._kernels.schemes import SCHEMES  # noqa: E402

#: Every scheme whose rows are a softmax, in each form it has.
COMPILED = [name for name, scheme in SCHEMES.items() if scheme.rows == "normalized"]
CASES = [(s, c) for s in COMPILED for c in (False, True) if not c or SCHEMES[s].causal is not None]
RNG = np.random.default_rng(25)


def _problem(causal, *, t=19, k=13, d=6, dv=5, dtype=np.float64, float_mask=False):
    """3 query heads over 1 key head, a mask with a query that sees no key and a key no query sees."""
    k = t if causal else k
    q, keys, values = RNG.normal(size=(2, 3, t, d)), RNG.normal(size=(2, 1, k, d)), RNG.normal(size=(2, 1, k, dv))
    allowed = RNG.random((2, 1, t, k)) < 0.8
    allowed[0, 0, 3] = False
    allowed[1, 0, :, 2] = False
    mask = np.where(allowed, RNG.normal(size=allowed.shape), -np.inf) if float_mask else allowed
    alpha = np.linspace(0.1, 0.9, 3)
    return [x.astype(dtype) for x in (q, keys, values)] + [mask, alpha]


@pytest.mark.theorem("THM-CHUNKED-EQUALS-DENSE")
@pytest.mark.parametrize(("scheme", "causal"), CASES)
def test_forward_equals_the_kernels_and_the_definitions(scheme, causal):
    q, k, v, mask, alpha = _problem(causal)
    got, want = (
        dnorm.attention(q, k, v, scheme, mask=mask, alpha=alpha, causal=causal, kernel=name)
        for name in ("numba", "array-api")
    )
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    scores = q @ np.swapaxes(k, -1, -2) * q.shape[-1] ** -0.5
    for b, h in np.ndindex(2, 3):
        w = oracle(scheme, scores[b, h], allowed=mask[b, 0], alpha=float(alpha[h]), causal=causal)
        np.testing.assert_allclose(got[b, h], w @ v[b, 0], rtol=1e-12, atol=1e-12)
    assert (got[0, :, 3] == 0).all()  # the query that sees no key: an exact zero row


@pytest.mark.theorem("THM-GRADIENT-AS-ATTENTION")
@pytest.mark.theorem("THM-BACKWARD-FINITE")
@pytest.mark.parametrize(("scheme", "causal"), CASES)
def test_gradients_equal_the_kernels(scheme, causal):
    """dQ, dK, dV and alpha's through torch's autograd, with an additive mask, to 1e-12 in float64; the causal
    cases with a learned ``length_scale`` per head (spec DEF-LENGTH-SCALE: the routing layer scales the queries,
    and its gradient flows through torch around the compiled passes)."""
    q, k, v, mask, alpha = (torch.from_numpy(x) for x in _problem(causal, float_mask=True, t=17, k=11))
    scales = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    results = []
    for kernel in ("numba", "array-api"):
        leaves = [x.clone().requires_grad_() for x in (q, k, v, alpha, scales)]
        family = {"length_scale": leaves[4]} if causal else {}
        out = dnorm.attention(*leaves[:3], scheme, mask=mask, alpha=leaves[3], causal=causal, kernel=kernel, **family)
        (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum().backward()
        results.append([out, *(x.grad for x in leaves if x.grad is not None)])
    assert len(results[0]) == len(results[1]) == 4 + SCHEMES[scheme].mixed + causal
    for got, want in zip(*results, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.theorem("THM-DECODE-EQUALS-FULL")
@pytest.mark.parametrize("scheme", ["doubly", "hybrid", "softmax"])
def test_decoding_in_random_splits_equals_the_full_causal_rows(scheme):
    q, k, v = (RNG.normal(size=(1, h, 23, 6)) for h in (4, 2, 2))  # 4 query heads over 2
    alpha = np.array([0.3, 0.8, 0.5, 0.1])
    full = dnorm.attention(q, k, v, scheme, causal=True, alpha=alpha, kernel="array-api")
    cuts = sorted({0, 23, *RNG.integers(1, 23, size=4).tolist()})
    outs, state = [], None
    for a, b in itertools.pairwise(cuts):
        out, state = dnorm.decode(q[..., a:b, :], k[..., :b, :], v[..., :b, :], state, scheme, alpha=alpha,
                                  kernel="numba")  # fmt: skip
        outs.append(out)
    np.testing.assert_allclose(np.concatenate(outs, axis=-2), full, rtol=1e-12, atol=1e-12)
    steps = [dnorm.decode(q[..., :20, :], k[..., :20, :], v[..., :20, :], None, scheme, alpha=alpha, kernel=name)[1]
             for name in ("numba", "array-api")]  # fmt: skip
    if scheme != "softmax":
        for got, want in zip(*steps, strict=True):  # the same state
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("scheme", "causal"), [("doubly", False), ("hybrid", True), ("sinkhorn", False)])
def test_float32_within_rounding_on_large_scores(scheme, causal):
    """float32 in and out, against float64, with scores of magnitude about 1e3 (the exponentials' reductions)."""
    q, k, v, mask, alpha = _problem(causal, dtype=np.float32)
    q = q * np.float32(300.0)
    got = dnorm.attention(q, k, v, scheme, mask=mask, alpha=alpha, causal=causal, kernel="numba")
    assert got.dtype == np.float32
    exact = dnorm.attention(*(x.astype(np.float64) for x in (q, k, v)), scheme, mask=mask, alpha=alpha, causal=causal)
    np.testing.assert_allclose(got, exact, rtol=2e-4, atol=2e-4)


def test_auto_takes_it_from_its_size_and_a_forced_call_it_cannot_serve_says_why(monkeypatch):
    calls = []
    original = launch.forward
    monkeypatch.setattr(launch, "forward", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    small = _problem(False)[:3]
    dnorm.attention(*small)
    assert not calls  # below AUTO_SCORES the array-API kernels run
    n = int(np.sqrt(implementation.AUTO_SCORES)) + 1
    large = [RNG.normal(size=(1, n, 4)) for _ in range(3)]
    got = dnorm.attention(*large)
    assert calls
    np.testing.assert_allclose(got, dnorm.attention(*large, kernel="array-api"), rtol=1e-12, atol=1e-12)
    calls.clear()  # a decoding step (one query) from AUTO_DECODE_SCORES keys
    keys = implementation.AUTO_DECODE_SCORES
    one, cache, values = RNG.normal(size=(1, 1, 4)), RNG.normal(size=(1, keys, 4)), RNG.normal(size=(1, keys, 4))
    dnorm.decode(one, cache[:, : keys - 1], values[:, : keys - 1], None, "softmax")
    assert not calls
    got = dnorm.decode(one, cache, values, None, "softmax")[0]
    assert calls
    want = dnorm.decode(one, cache, values, None, "softmax", kernel="array-api")[0]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    q, k, v = small
    with pytest.raises(ValueError, match=r"kernel='numba' cannot serve this call: it takes no softcap"):
        dnorm.attention(q, k, v, softcap=5.0, kernel="numba")
    with pytest.raises(ValueError, match=r"kernel='numba' cannot serve this call: block_size asks for"):
        dnorm.attention(q, k, v, block_size=4, kernel="numba")
    calls.clear()
    dnorm.attention(*large, block_size=64)  # auto: an explicit block_size takes the array-API kernels
    assert not calls
    with pytest.raises(ValueError, match="kernel='numba' cannot serve this call: dropout"):
        dnorm.attention(*(torch.from_numpy(x) for x in small), dropout_p=0.5, kernel="numba")
    learned = torch.zeros(19, 13, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="a floating mask's gradient"):
        dnorm.attention(*(torch.from_numpy(x) for x in small), mask=learned, kernel="numba")


@pytest.mark.parametrize(
    ("scheme", "family", "refusal"),
    [
        ("sigmoid", {}, "which scheme='sigmoid' does not"),
        ("stick-breaking", {"causal": True}, "which scheme='stick-breaking' does not"),
        ("doubly", {"sink": 0.5}, "it takes no sink"),
        ("sinkhorn", {"sink": 0.5}, "it takes no sink"),
    ],
)
def test_the_family_it_does_not_compute_is_refused_and_auto_takes_the_kernels(monkeypatch, scheme, family, refusal):
    """A forced kernel='numba' names what it does not compute; 'auto' gives a call above its size to the array-API
    kernels, whose answer it returns (no compiled pass runs)."""
    n = int(np.sqrt(implementation.AUTO_SCORES)) + 1
    q, k, v = (RNG.normal(size=(1, n, 4)) for _ in range(3))
    with pytest.raises(ValueError, match=rf"kernel='numba' cannot serve this call: .*{refusal}"):
        dnorm.attention(q, k, v, scheme, kernel="numba", **family)
    monkeypatch.setattr(launch, "forward", lambda *a, **kw: pytest.fail("the compiled kernels ran"))
    got = dnorm.attention(q, k, v, scheme, **family)
    np.testing.assert_array_equal(got, dnorm.attention(q, k, v, scheme, kernel="array-api", **family))
    if family.get("sink") is not None:  # decoding: the sink's running statistic is refused too
        with pytest.raises(ValueError, match=rf"kernel='numba' cannot serve this call: .*{refusal}"):
            dnorm.decode(q, k, v, None, "doubly", kernel="numba", **family)


def test_one_compiled_specialization_per_pass_and_dtype():
    """Read-only operands, a carry, torch tensors and masks reuse the pass compiled for the dtype (numba types
    writability: a read-only carry used to compile the forward pass a second time)."""
    from dnorm._cpu import backward, forward

    q, k, v, mask = _problem(True)[:4]
    for x in (q, k, v):
        x.flags.writeable = False
    _, state = dnorm.decode(q[..., :-1, :], k[..., :-1, :], v[..., :-1, :], None, kernel="numba")
    dnorm.decode(q[..., -1:, :], k, v, state, mask=mask[..., -1:, :], kernel="numba")
    for compiled in (forward.forward, backward.backward):
        dtypes = [signature[0].dtype for signature in compiled.signatures]
        assert len(dtypes) == len(set(dtypes)), compiled.signatures
