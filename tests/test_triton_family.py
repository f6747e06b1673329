"""The Triton kernels compute the normalization family (spec family.md) as the array-API kernels do, in float64:
sinks in every normalized scheme (Sinkhorn's rounds, the running statistic), sigmoid attention, forward, backward
(the sink's and the bias's gradients), decoding and packed batches; under Triton's interpreter without a GPU."""

from __future__ import annotations

import pytest

import dnorm

torch = pytest.importorskip("torch", reason="the Triton kernels take torch tensors")
pytest.importorskip("triton", reason="triton is not installed: pip install -e '.[triton]'")

from dnorm._triton import configs  # noqa: E402

DEVICE = "cpu" if configs.interpreted() else "cuda"
GEN = torch.Generator().manual_seed(24)


def _normal(*shape):
    return torch.randn(*shape, generator=GEN, dtype=torch.float64).to(DEVICE)


def _both(scheme, causal, *, t, k, float_mask=False, **options):
    """Outputs and gradients (query, key, value, the family's arrays, a floating mask) of both kernels."""
    q, keys, values = _normal(2, 2, t, 5), _normal(2, 1, k, 5), _normal(2, 1, k, 3)
    allowed = torch.rand(2, 1, t, k, generator=GEN).to(DEVICE) < 0.8
    allowed[0, 0, 1] = False  # a query that sees no key: all its weight on the sink
    mask = torch.where(allowed, _normal(*allowed.shape), -torch.inf) if float_mask else allowed
    results = []
    for kernel in ("triton", "array-api"):
        leaves = [x.clone().requires_grad_() for x in (q, keys, values, *options.values())]
        given = dict(zip(options, leaves[3:], strict=True))
        m = mask.clone().requires_grad_() if float_mask else mask
        out = dnorm.attention(*leaves[:3], scheme, mask=m, causal=causal, kernel=kernel, **given)
        (out * torch.linspace(-1, 1, 3, dtype=out.dtype, device=out.device)).sum().backward()
        results.append([out, *(x.grad for x in leaves), *([m.grad] if float_mask else [])])
    return results


@pytest.mark.theorem("THM-SINK-GRADIENT")
@pytest.mark.parametrize(
    ("scheme", "causal", "t", "k"),
    [("softmax", False, 19, 13), ("doubly", False, 19, 13), ("sinkhorn", False, 11, 9), ("hybrid", True, 9, 9)],
)
def test_a_sink_equals_the_array_api_kernels(scheme, causal, t, k):
    """Forward and every gradient, the sink's (one per head) included, to 1e-12."""
    options = {"sink": _normal(2), "alpha": torch.tensor([0.3, 0.7], dtype=torch.float64, device=DEVICE)}
    fused, kernels = _both(scheme, causal, t=t, k=k, float_mask=scheme == "sinkhorn", **options)
    for got, want in zip(fused, kernels, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_sigmoid_equals_the_array_api_kernels():
    """Causal sigmoid attention with a bias per head (its gradient) and a floating mask (the bias rides on it)."""
    fused, kernels = _both("sigmoid", True, t=9, k=9, float_mask=True, bias=_normal(2), length_scale=_normal(2))
    for got, want in zip(fused, kernels, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.theorem("THM-DECODE-EQUALS-FULL")
@pytest.mark.parametrize(("scheme", "options"), [("hybrid", {"sink": 0.7, "alpha": 0.4}), ("sigmoid", {})])
def test_decoding_and_packed_batches(scheme, options):
    """The split-key step and the chunk continuing the carry, against the full causal rows; a packed batch."""
    q, k, v = _normal(2, 2, 24, 4), _normal(2, 1, 24, 4), _normal(2, 1, 24, 3)
    full = dnorm.attention(q, k, v, scheme, causal=True, **options)
    state, parts = None, []
    for a, b in ((0, 3), (3, 4), (4, 24)):  # prefill, a step, a chunk of more than 16 rows (the forward pass)
        out, state = dnorm.decode(
            q[..., a:b, :], k[..., :b, :], v[..., :b, :], state, scheme, kernel="triton", **options
        )
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, dim=-2), full, rtol=1e-12, atol=1e-12)
    starts = [0, 11, 11, 24]
    packed = dnorm.varlen_attention(q, k, v, starts, scheme, causal=True, kernel="triton", **options)
    alone = [dnorm.attention(q[..., a:b, :], k[..., a:b, :], v[..., a:b, :], scheme, causal=True, **options)
             for a, b in ((0, 11), (11, 24))]  # fmt: skip
    torch.testing.assert_close(packed, torch.cat(alone, dim=-2), rtol=1e-12, atol=1e-12)


def test_stick_breaking_names_the_kernels_that_compute_it():
    q = _normal(1, 5, 4)
    with pytest.raises(ValueError, match="kernel='array-api' computes scheme='stick-breaking'"):
        dnorm.attention(q, q, q, "stick-breaking", causal=True, kernel="triton")
