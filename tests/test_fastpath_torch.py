"""The torch fast path (dnorm._fastpath.torch) against float64 materialized references."""

from __future__ import annotations

import numpy as np
import pytest
from oracles import doubly_weights

torch = pytest.importorskip("torch")
import dnorm  # noqa: E402
from dnorm._fastpath import torch as fastpath  # noqa: E402
from dnorm._kernels import budget  # noqa: E402

RNG = np.random.default_rng(11)
SCALE = 0.4
SHAPES = [(1, 1), (1, 5), (6, 1), (37, 23)]  # (T, K)


def _qkv(n_q: int, n_k: int, *, batch: tuple[int, ...] = (2, 3), d: int = 4) -> tuple[np.ndarray, ...]:
    return (
        RNG.normal(size=(*batch, n_q, d)),
        RNG.normal(size=(*batch, n_k, d)),
        RNG.normal(size=(*batch, n_k, 3)),
    )


def _bool_mask(n_q: int, n_k: int) -> np.ndarray:
    """Random mask with a key no query sees and a query that sees no key (when there is room)."""
    mask = RNG.random((n_q, n_k)) < 0.7
    if n_k > 1:
        mask[:, -1] = False
    if n_q > 1:
        mask[1] = False
    return mask


def _masks(n_q: int, n_k: int) -> dict[str, np.ndarray | None]:
    allowed = _bool_mask(n_q, n_k)
    return {
        "none": None,
        "bool": allowed,
        "float": np.where(allowed, RNG.normal(size=(n_q, n_k)), -np.inf),
    }


def _scores(q: np.ndarray, k: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    s = q @ np.swapaxes(k, -1, -2) * SCALE
    if mask is None:
        return s
    if mask.dtype == bool:
        return np.where(mask, s, -np.inf)
    return s + mask


def _logsumexp(s: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(s, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(top, axis) + np.log(np.sum(np.exp(s - top), axis=axis))


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row softmax; zero rows where every logit is -inf."""
    with np.errstate(invalid="ignore"):
        w = np.exp(logits - _logsumexp(logits, -1)[..., None])
    return np.where(np.isnan(w), 0.0, w)


def _t(a: np.ndarray | None, dtype: torch.dtype = torch.float64) -> torch.Tensor | None:
    if a is None:
        return None
    return torch.from_numpy(a) if a.dtype == bool else torch.from_numpy(a).to(dtype)


def _close(actual: torch.Tensor, desired: np.ndarray, rtol: float) -> None:
    np.testing.assert_allclose(actual.detach().double().numpy(), desired, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("keys_per_block", [1, 5, 1000])  # 5 does not divide K = 23
def test_column_logsumexp_matches_reference(monkeypatch, shape, mask_kind, dtype, keys_per_block):
    q, k, _ = _qkv(*shape)
    monkeypatch.setattr(budget, "KEY_BLOCK_BYTES", 4 * keys_per_block * 6 * shape[0])  # batch (2, 3): 6 * T rows
    mask = _masks(*shape)[mask_kind]
    c = fastpath.column_logsumexp(_t(q, dtype), _t(k, dtype), scale=SCALE, mask=_t(mask, dtype))
    expected = _logsumexp(_scores(q, k, mask), -2)
    assert c.dtype == dtype
    assert c.shape == expected.shape
    np.testing.assert_array_equal(np.isneginf(c.numpy()), np.isneginf(expected))
    finite = np.isfinite(expected)
    _close(c[torch.from_numpy(finite)], expected[finite], 1e-5 if dtype == torch.float32 else 1e-12)


def test_mask_with_more_batch_dims_than_the_arrays():
    q, k, v = _qkv(5, 4, batch=(3,))
    mask = RNG.random((2, 1, 5, 4)) < 0.6
    c = fastpath.column_logsumexp(_t(q), _t(k), scale=SCALE, mask=_t(mask))
    scores = _scores(q, k, mask)
    _close(c, _logsumexp(scores, -2), 1e-12)
    out = fastpath.biased_attention(_t(q), _t(k), _t(v), -c, scale=SCALE, mask=_t(mask))
    weights = np.stack([doubly_weights(s) for s in scores.reshape(-1, 5, 4)]).reshape(scores.shape)
    _close(out, weights @ v, 1e-12)


def test_column_logsumexp_large_scores_float32():
    q, k, _ = _qkv(64, 48, batch=(2,), d=8)
    q, k = (5000.0 * q).astype(np.float32), k.astype(np.float32)  # scores up to ~3e4
    expected = _logsumexp(_scores(q.astype(np.float64), k.astype(np.float64), None), -2)
    c = fastpath.column_logsumexp(torch.from_numpy(q), torch.from_numpy(k), scale=SCALE)
    assert np.abs(expected).max() > 1e4
    # a float32 score or c near 1e4 is only known to a few ulp (ulp(1e4) ~ 1e-3), whatever the algorithm
    np.testing.assert_allclose(c.numpy(), expected, rtol=3e-7, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computed_in_float32(dtype):
    q, k, v = _qkv(9, 7)
    qt, kt, vt = (_t(a, dtype) for a in (q, k, v))
    c = fastpath.column_logsumexp(qt, kt, scale=SCALE)
    assert c.dtype == torch.float32
    out = fastpath.biased_attention(qt, kt, vt, -c, scale=SCALE)
    assert out.dtype == dtype
    exact = fastpath.column_logsumexp(qt.double(), kt.double(), scale=SCALE)
    _close(c, exact.numpy(), 1e-5)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
@pytest.mark.parametrize("shape", SHAPES)
def test_biased_attention_matches_reference(shape, mask_kind):
    q, k, v = _qkv(*shape)
    mask = _masks(*shape)[mask_kind]
    bias = RNG.normal(size=(2, 3, shape[1]))
    bias[0, :, 0] = -np.inf
    out = fastpath.biased_attention(_t(q), _t(k), _t(v), _t(bias), scale=SCALE, mask=_t(mask))
    expected = _softmax_rows(_scores(q, k, mask) + bias[..., None, :]) @ v
    _close(out, expected, 1e-12)


def test_biased_attention_zero_rows_when_bias_masks_every_key():
    q, k, v = _qkv(4, 3)
    bias = np.zeros((2, 3, 3))
    bias[1] = -np.inf
    out = fastpath.biased_attention(_t(q), _t(k), _t(v), _t(bias), scale=SCALE)
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all()


def _doubly(q, k, v, mask, dtype=torch.float64):
    qt, kt, vt, mt = (_t(a, dtype) for a in (q, k, v, mask))
    c = fastpath.column_logsumexp(qt, kt, scale=SCALE, mask=mt)
    return fastpath.biased_attention(qt, kt, vt, -c, scale=SCALE, mask=mt)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
@pytest.mark.parametrize("shape", SHAPES)
def test_doubly_composition_matches_oracle(shape, mask_kind):
    q, k, v = _qkv(*shape)
    mask = _masks(*shape)[mask_kind]
    scores = _scores(q, k, mask)
    weights = np.stack([doubly_weights(s) for s in scores.reshape(-1, *shape)]).reshape(scores.shape)
    out = _doubly(q, k, v, mask)
    _close(out, weights @ v, 1e-12)
    _close(_doubly(q, k, v, mask, torch.float32), weights @ v, 1e-5)


def test_doubly_is_unchanged_by_grad_mode():
    """With a gradient asked for, the forward pass goes through the fused kernels' log-sum-exps instead."""
    q, k, v = _qkv(7, 5)
    mask = _t(_bool_mask(7, 5))
    qt, kt, vt = (_t(a).requires_grad_() for a in (q, k, v))
    with_grad = dnorm.attention(qt, kt, vt, "doubly", mask=mask, scale=SCALE)
    _close(with_grad, _doubly(q, k, v, mask.numpy()).numpy(), 1e-13)


@pytest.mark.theorem("THM-GRADIENT-AS-ATTENTION")
@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_fused_backward_passes_gradcheck_and_refuses_a_second_derivative(scheme, mask_kind, monkeypatch):
    calls = []
    original = fastpath.backward
    monkeypatch.setattr(fastpath, "backward", lambda *a, **k: calls.append(1) or original(*a, **k))
    q, k, v = _qkv(5, 4, batch=(2, 3))
    mask = _t(_masks(5, 4)[mask_kind])
    alpha = _t(np.array([0.2, 0.5, 0.9])).requires_grad_()
    inputs = (*(_t(a).requires_grad_() for a in (q, k, v)), alpha)

    def attend(query, key, value, a):
        return dnorm.attention(query, key, value, scheme, mask=mask, scale=SCALE, alpha=a)

    assert torch.autograd.gradcheck(attend, inputs)
    assert calls, "the fused backward pass was not taken"
    with pytest.raises(RuntimeError, match="first order only"):
        torch.autograd.gradgradcheck(attend, inputs)


@pytest.mark.theorem("THM-GRADIENT-AS-ATTENTION")
@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
def test_fused_backward_equals_the_kernels(scheme):
    """The fused pass (torch's kernels) and the array-API kernels' pass (block_size) on the same inputs."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 29, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(2, 1, 29, 29, generator=gen) < 0.8
    mask[0, 0, 4] = False
    grad = torch.randn(2, 3, 29, 8, generator=gen, dtype=torch.float64)
    alpha = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    results = []
    for block_size in (None, 7):
        inputs = [t.clone().requires_grad_() for t in (q, k, v, alpha)]
        out = dnorm.attention(*inputs[:3], scheme, mask=mask, alpha=inputs[3], block_size=block_size)
        (out * grad).sum().backward()
        results.append([t.grad for t in inputs[:3]] + ([inputs[3].grad] if scheme == "hybrid" else []))
    for fused, kernel in zip(*results, strict=True):
        torch.testing.assert_close(fused, kernel, rtol=1e-12, atol=1e-12)
    assert (results[0][0][0, :, 4] == 0).all()


def test_gradients_finite_and_zero_where_masked():
    """A query with no key and a key with no query: finite gradients, zero for the dead query."""
    q, k, v = _qkv(5, 4)
    mask = _bool_mask(5, 4)
    qt, kt, vt = (_t(a).requires_grad_() for a in (q, k, v))
    out = dnorm.attention(qt, kt, vt, "doubly", mask=_t(mask), scale=SCALE)
    out.sum().backward()
    for t in (qt, kt, vt):
        assert t.grad is not None
        assert torch.isfinite(t.grad).all()
    assert (qt.grad[..., 1, :] == 0).all()
    assert (kt.grad[..., -1, :] == 0).all()
    assert (vt.grad[..., -1, :] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_gradients_are_float32_gradients_rounded(dtype):
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, 17, 8, generator=gen) for _ in range(3))
    grads = []
    for dt in (dtype, torch.float32):
        inputs = [t.to(dt).requires_grad_() for t in (q, k, v)]
        dnorm.attention(*inputs, "doubly").float().sum().backward()
        assert all(t.grad.dtype == dt for t in inputs)
        grads.append([t.grad.float() for t in inputs])
    for low, high in zip(*grads, strict=True):
        torch.testing.assert_close(low, high, rtol=2e-2, atol=2e-2)


def _refused(reason: str | None) -> bool:
    """A refusal is a sentence that says why."""
    return isinstance(reason, str) and len(reason) > 10


def test_refuses_says_why_or_accepts():
    q, k, v = (_t(a, torch.float32) for a in _qkv(5, 4))
    mask = torch.ones(5, 4, dtype=torch.bool)
    assert fastpath.refuses(q, k, v, None) is None
    assert fastpath.refuses(q, k, v, mask) is None
    assert fastpath.refuses(q.detach().requires_grad_(), k, v, mask.double()) is None
    assert _refused(fastpath.refuses(q, k, v, mask.double().requires_grad_()))  # its gradient is dS itself
    assert fastpath.refuses(q[0, 0], k[0, 0], v[0, 0], None) is None
    assert _refused(fastpath.refuses(q.numpy(force=True), k, v, None))
    assert _refused(fastpath.refuses(q, k.double(), v, None))
    assert _refused(fastpath.refuses(q.int(), k.int(), v.int(), None))
    assert _refused(fastpath.refuses(q, k, v, mask.int()))
    assert _refused(fastpath.refuses(q, k, v, torch.ones(5, 3, dtype=torch.bool)))
    assert _refused(fastpath.refuses(q, k, v, torch.ones(4, 5, 4, dtype=torch.bool)))
    assert fastpath.refuses(q, k, v, torch.ones(7, 1, 1, 1, 4, dtype=torch.bool)) is None
    assert _refused(fastpath.refuses(q, k[..., :3, :], v, None))
    assert _refused(fastpath.refuses(q, k[..., :3], v, None))
    assert _refused(fastpath.refuses(q[..., :0, :], k, v, None))
    assert _refused(fastpath.refuses(q, k[:1, :2], v[:1, :2], None))
    assert _refused(fastpath.refuses(q, k, v, torch.ones(5, 4).to("meta")))
    assert _refused(fastpath.refuses(q[0, 0, 0], k, v, None))
    assert fastpath.refuses(q, k, v, mask, training=True) is None
    on_meta = (t.to("meta") for t in (q, k, v))
    assert _refused(fastpath.refuses(*on_meta, None))


CUDA = pytest.param("cuda", id="torch-cuda")  # the device check selects the GPU tests by this id


@pytest.mark.gpu("torch-cuda")
@pytest.mark.parametrize("device", [CUDA])
@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_inference_takes_the_fused_kernel_and_agrees_with_the_kernels(device, scheme, dtype, monkeypatch):
    """On CUDA, inference goes through scaled_dot_product_attention with the bias; training through the kernels."""
    calls = []
    original = fastpath.infer
    monkeypatch.setattr(fastpath, "infer", lambda *a, **k: calls.append(1) or original(*a, **k))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 70, 64, generator=gen, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(2, 1, 70, 70, generator=gen) < 0.8
    mask[0, 0, 5], mask[1, 0, :, 9] = False, False  # a query that sees no key, a key no query sees
    expected = dnorm.attention(q, k, v, scheme, mask=mask, block_size=70)
    on = [t.to(device) for t in (q, k, v)]
    out = dnorm.attention(*(t.to(dtype) for t in on), scheme, mask=mask.to(device))
    assert calls, "the fast path was not taken"
    assert out.dtype == dtype
    assert out.device.type == device
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.double().cpu(), expected, rtol=tol, atol=tol)
    assert (out[0, :, 5] == 0).all()
    calls.clear()
    train = [t.float().requires_grad_() for t in on]
    dnorm.attention(*train, scheme, mask=mask.to(device)).sum().backward()
    assert not calls
    reference = [t.clone().requires_grad_() for t in (q, k, v)]
    dnorm.attention(*reference, scheme, mask=mask).sum().backward()
    for got, want in zip(train, reference, strict=True):
        torch.testing.assert_close(got.grad.double().cpu(), want.grad, rtol=1e-4, atol=1e-4)


def test_single_query_with_huge_scores_gives_uniform_weights():
    """T = 1 is the tight case of the bound m_j >= 1/K; scores near 1e4 keep it to float32 rounding of c."""
    q, k, _ = _qkv(1, 12, batch=(), d=8)
    q *= 1e4 / np.abs(q @ k.T * SCALE).max()
    w = _doubly(q, k, np.eye(12), None, torch.float32)  # identity values: output = weights
    np.testing.assert_allclose(w.sum(-1).numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), 1 / 12, rtol=2e-3)


@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_dnorm_attention_takes_the_fast_path_and_agrees_with_the_kernels(scheme, dtype, monkeypatch):
    """dnorm.attention on CPU tensors goes through the fast path; the array-API kernels are the reference."""
    calls = []
    original = fastpath.infer
    monkeypatch.setattr(fastpath, "infer", lambda *a, **k: calls.append(1) or original(*a, **k))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 33, 8, generator=gen, dtype=torch.float64).to(dtype) for _ in range(3))
    mask = torch.rand(2, 1, 33, 33, generator=gen) < 0.8
    mask[0, 0, 5] = False
    alpha = torch.tensor([0.0, 0.4, 1.0], dtype=dtype)
    fast_out = dnorm.attention(q, k, v, scheme, mask=mask, alpha=alpha)
    assert calls, "the fast path was not taken"
    kernels = dnorm.attention(q, k, v, scheme, mask=mask, alpha=alpha, block_size=33)
    assert fast_out.dtype == dtype
    tol = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(fast_out, kernels, rtol=tol, atol=tol)
    assert (fast_out[0, :, 5] == 0).all()


@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
@pytest.mark.parametrize("grad", [False, True])
def test_grouped_heads_take_the_fast_path_and_equal_repeated_keys(scheme, grad, monkeypatch):
    """6 query heads over 2 key heads (5-D inside, 4-D for torch's fused kernels), with a per-query-head mask."""
    calls = []
    name = "forward" if grad else "infer"
    original = getattr(fastpath, name)
    monkeypatch.setattr(fastpath, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 6, 17, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 19, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    mask = torch.rand(2, 6, 17, 19, generator=gen) < 0.8
    results = []
    for repeat in (False, True):
        inputs = [t.clone().requires_grad_(grad) for t in (q, k, v)]
        keys, values = (x.repeat_interleave(3, dim=1) if repeat else x for x in inputs[1:])
        out = dnorm.attention(inputs[0], keys, values, scheme, mask=mask)
        if grad:
            (out * torch.linspace(-1, 1, 8, dtype=torch.float64)).sum().backward()
        results.append([out, *(t.grad for t in inputs if grad)])
    assert len(calls) == 2, "the fast path was not taken"
    for grouped, repeated in zip(*results, strict=True):
        torch.testing.assert_close(grouped, repeated, rtol=1e-12, atol=1e-12)
