"""The routing layer: ``kernel=`` forces an implementation, ``"auto"`` chooses, a forced one that cannot serve says why.

Every implementation is checked against the array-API kernels on the same
inputs; the errors name the implementation and the reason, and nothing falls
back silently to another implementation.
"""

from __future__ import annotations

import numpy as np
import pytest

import dnorm
from dnorm import _validate as check
from dnorm._kernels import attention as kernels
from dnorm._routing import IMPLEMENTATIONS

torch = pytest.importorskip("torch", reason="the fused path needs torch")
da = pytest.importorskip("dask.array", reason="the chunk-by-chunk path needs dask")

from dnorm._fastpath import torch as fused  # noqa: E402

RNG = np.random.default_rng(7)


def _qkv(*lead: int, t: int = 9, k: int = 11, d: int = 4) -> tuple[np.ndarray, ...]:
    return RNG.normal(size=(*lead, t, d)), RNG.normal(size=(*lead, k, d)), RNG.normal(size=(*lead, k, d))


def _spy(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **kw: calls.append(1) or original(*a, **kw))
    return calls


def test_every_kernel_name_has_an_implementation():
    assert set(IMPLEMENTATIONS) == set(check.KERNELS) - {"auto"}
    assert all(impl.name == name for name, impl in IMPLEMENTATIONS.items())
    assert list(IMPLEMENTATIONS)[-1] == "array-api"  # offered last: it serves every call


@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
@pytest.mark.parametrize("grad", [False, True])
def test_torch_and_array_api_agree_and_each_is_the_one_that_runs(scheme, grad, monkeypatch):
    q, k, v = (torch.from_numpy(a).requires_grad_(grad) for a in _qkv(2, 3))
    alpha = torch.tensor([0.1, 0.5, 0.8], dtype=torch.float64)
    results = {}
    for name in ("auto", "torch", "array-api"):
        fast = _spy(monkeypatch, fused, "forward" if grad else "infer")
        slow = _spy(monkeypatch, kernels, "forward" if grad else "infer")
        inputs = [t.detach().clone().requires_grad_(grad) for t in (q, k, v)]
        out = dnorm.attention(*inputs, scheme, alpha=alpha, kernel=name)
        if grad:
            (out * torch.linspace(-1, 1, 4, dtype=torch.float64)).sum().backward()
        results[name] = [out, *(t.grad for t in inputs if grad)]
        assert (bool(fast), bool(slow)) == ((False, True) if name == "array-api" else (True, False)), name
        monkeypatch.undo()
    for name in ("torch", "auto"):
        for got, want in zip(results[name], results["array-api"], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_dask_chunks_and_the_kernels_on_dask_arrays_agree(causal, monkeypatch):
    qn, kn, vn = _qkv(4, t=11)
    q, k, v = (da.from_array(a, chunks=(2, -1, -1)) for a in (qn, kn, vn))
    expected = dnorm.attention(qn, kn, vn, "hybrid", causal=causal)
    whole = dnorm.attention(q, k, v, "hybrid", causal=causal, kernel="dask")
    calls = _spy(monkeypatch, kernels, "infer")  # each chunk runs the NumPy kernels' inference at compute time
    np.testing.assert_allclose(whole.compute(), expected, rtol=1e-12, atol=1e-12)
    assert len(calls) == 2  # one per chunk of the batch
    monkeypatch.undo()
    on_dask = dnorm.attention(q, k, v, "hybrid", causal=causal, kernel="array-api")
    assert len(dict(on_dask.__dask_graph__())) > len(dict(whole.__dask_graph__()))  # blocks of rows as tasks
    np.testing.assert_allclose(on_dask.compute(), expected, rtol=1e-12, atol=1e-12)
    auto = dnorm.attention(q, k, v, "hybrid", causal=causal)
    assert len(dict(auto.__dask_graph__())) == len(dict(whole.__dask_graph__()))


def test_numpy_takes_the_kernels_under_every_name_that_serves_it(monkeypatch):
    q, k, v = _qkv(2)
    calls = _spy(monkeypatch, kernels, "infer")
    auto, forced = (dnorm.attention(q, k, v, kernel=name) for name in ("auto", "array-api"))
    assert len(calls) == 2
    np.testing.assert_array_equal(auto, forced)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda q, k, v: dnorm.attention(q.numpy(), k.numpy(), v.numpy(), kernel="torch"), "takes torch tensors"),
        (lambda q, k, v: dnorm.attention(q, k, v, "sinkhorn", kernel="torch"), "sinkhorn"),
        (lambda q, k, v: dnorm.attention(q, k, v, causal="top-left", kernel="torch"), "causal"),
        (lambda q, k, v: dnorm.attention(q, k, v, block_size=4, kernel="torch"), "block_size"),
        (lambda q, k, v: dnorm.attention(q, k, v, softcap=5.0, kernel="torch"), "softcap"),
        (lambda q, k, v: dnorm.attention(q, k, v, dropout_p=0.1, kernel="torch"), "dropout"),
        (lambda q, k, v: dnorm.attention(q, k, v, mask=_float_mask(True), kernel="torch"), "requires a gradient"),
        (lambda q, k, v: dnorm.attention(q, k, v, kernel="dask"), "takes Dask arrays"),
        (lambda q, k, v: dnorm.decode(q[..., :1, :], k, v, _state(k), kernel="torch"), "decoding"),
        (lambda q, k, v: dnorm.scaled_dot_product_attention(q, k, v, is_causal=True, kernel="torch"), "causal"),
        (lambda q, k, v: dnorm.varlen_attention(q, k, v, [0, 9], cu_seqlens_k=[0, 11], kernel="dask"), "Dask arrays"),
    ],
)
def test_a_forced_implementation_that_cannot_serve_says_why(call, match):
    q, k, v = (torch.from_numpy(a) for a in _qkv(2))
    with pytest.raises(ValueError, match=rf"kernel='(torch|dask)' cannot serve this call: .*{match}"):
        call(q, k, v)


def _float_mask(grad: bool) -> torch.Tensor:
    return torch.zeros(9, 11, dtype=torch.float64, requires_grad=grad)


def _state(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(2, k.shape[-2] - 1, dtype=k.dtype), torch.ones(2, k.shape[-2] - 1, dtype=k.dtype)


def test_the_chunk_path_says_how_to_rechunk():
    qn, kn, vn = _qkv(2)
    q, k, v = (da.from_array(a, chunks=(1, 5, -1)) for a in (qn, kn, vn))
    with pytest.raises(ValueError, match=r"kernel='dask' cannot serve .*query has the chunks .*rechunk"):
        dnorm.attention(q, k, v, kernel="dask")
    grouped = da.from_array(RNG.normal(size=(4, 9, 4)), chunks=-1)
    with pytest.raises(ValueError, match="grouped-query heads"):
        dnorm.attention(grouped, k.rechunk(-1), v.rechunk(-1), kernel="dask")
    with pytest.raises(ValueError, match="decoding runs the array-API kernels"):
        dnorm.decode(q[..., :1, :].rechunk(-1), k.rechunk(-1)[..., :1, :], v.rechunk(-1)[..., :1, :], kernel="dask")


@pytest.mark.parametrize("entry", ["attention", "sdpa", "varlen", "decode"])
def test_every_entry_point_takes_the_keyword(entry):
    q, k, v = _qkv(2, t=6, k=6)
    calls = {
        "attention": lambda name: dnorm.attention(q, k, v, kernel=name),
        "sdpa": lambda name: dnorm.scaled_dot_product_attention(q, k, v, kernel=name),
        "varlen": lambda name: dnorm.varlen_attention(q, k, v, [0, 2, 6], kernel=name),
        "decode": lambda name: dnorm.decode(q, k, v, kernel=name)[0],
    }
    np.testing.assert_array_equal(calls[entry]("auto"), calls[entry]("array-api"))
    names = r"\('auto', 'array-api', 'torch', 'dask', 'triton', 'numba'\)"
    with pytest.raises(ValueError, match=rf"kernel must be one of {names}, got 'cuda'"):
        calls[entry]("cuda")
    with pytest.raises(TypeError, match="kernel must be a string"):
        calls[entry](None)


def test_nested_tensors_pass_the_keyword_on():
    parts = [torch.from_numpy(RNG.normal(size=(n, 2, 4))) for n in (3, 5)]  # (j, H, D) per sequence
    q = torch.nested.as_nested_tensor([p.transpose(0, 1) for p in parts], layout=torch.jagged).transpose(1, 2)
    q = q.transpose(1, 2)  # (B, H, j, D), ragged along axis -2
    with pytest.raises(ValueError, match="kernel='dask' cannot serve"):
        dnorm.attention(q, q, q, kernel="dask")
