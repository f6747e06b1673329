"""The forms of the running statistic's scan: the two-level scan's walk and doubling, and the fused scan.

spec DEF-TWO-LEVEL-SCAN, DEF-FUSED-SCAN and THM-SCAN-FORMS-AGREE: every form
computes the running log-sum-exp (and its gradient's recurrence) to rounding,
and row ``i`` reads no later row, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp

from dnorm._kernels import attention as kernels
from dnorm._kernels import logsumexp as lse
from dnorm._kernels._delegation import native_scan
from dnorm._kernels.backward_causal import compose as _compose
from dnorm._kernels.bias import _merge, running
from dnorm._kernels.scan import scan
from dnorm._kernels.scores import block_bounds

RNG = np.random.default_rng(11)
LENGTHS = [3, 45]


def _log_sum_exp(xp, x, carry):
    stats = tuple(lse.pointwise(to_xp(xp, x), xp=xp))
    start = None if carry is None else tuple(lse.reduce(to_xp(xp, carry), axis=-2, xp=xp))
    return stats, start


def _affine(xp, n, with_carry):
    a, b = RNG.uniform(0.0, 1.0, size=(2, 3, n, 5)), RNG.normal(size=(2, 3, n, 5))
    carry = (to_xp(xp, np.zeros((2, 3, 1, 5))), to_xp(xp, RNG.normal(size=(2, 3, 1, 5)))) if with_carry else None
    return (to_xp(xp, a), to_xp(xp, b)), carry


@pytest.mark.theorem("DEF-TWO-LEVEL-SCAN")
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("with_carry", [False, True])
def test_doubling_equals_walk_and_the_running_log_sum_exp(xp, n, with_carry):
    x = RNG.normal(size=(2, 3, n, 5)) * 4
    carry_rows = RNG.normal(size=(2, 3, 4, 5)) if with_carry else None
    stats, start = _log_sum_exp(xp, x, carry_rows)
    results = [
        scan(stats, _merge, identity=(-np.inf, 0.0), carry=start, reverse=False, doubling=doubling, xp=xp)
        for doubling in (False, True)
    ]
    full = x if carry_rows is None else np.concatenate((carry_rows, x), axis=-2)
    expected = np.logaddexp.accumulate(full, axis=-2)[..., full.shape[-2] - n :, :]
    for m, s in results:
        np.testing.assert_allclose(to_np(m) + np.log(to_np(s)), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.theorem("DEF-TWO-LEVEL-SCAN")
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("with_carry", [False, True])
def test_doubling_equals_walk_in_reverse(xp, n, with_carry):
    """The gradient's recurrence ``h_i = b_i + a_i h_(i+1)`` up the rows, from the carry after the block."""
    elements, carry = _affine(xp, n, with_carry)
    a, b = (to_np(e) for e in elements)
    h = np.zeros_like(b[..., :1, :]) if carry is None else to_np(carry[1])
    expected = np.empty_like(b)
    for i in range(n - 1, -1, -1):
        h = b[..., i : i + 1, :] + a[..., i : i + 1, :] * h
        expected[..., i : i + 1, :] = h
    for doubling in (False, True):
        _, got = scan(elements, _compose, identity=(1.0, 0.0), carry=carry, reverse=True, doubling=doubling, xp=xp)
        np.testing.assert_allclose(to_np(got), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.theorem("THM-STRICT-CAUSALITY")
@pytest.mark.parametrize("reverse", [False, True])
def test_doubling_rows_read_no_later_row_bit_for_bit(xp, reverse):
    """Row ``i`` of the doubling form is combined from rows up to ``i`` (from ``i`` on, in reverse) only."""
    n = 21
    elements, carry = _affine(xp, n, True)
    base = to_np(scan(elements, _compose, identity=(1.0, 0.0), carry=carry, reverse=reverse, doubling=True, xp=xp)[1])
    for i in (0, 5, 19):
        a, b = (to_np(e).copy() for e in elements)
        later = slice(None, i) if reverse else slice(i + 1, None)
        b[..., later, :] = RNG.normal(size=b[..., later, :].shape) * 7
        changed = (to_xp(xp, a), to_xp(xp, b))
        out = to_np(scan(changed, _compose, identity=(1.0, 0.0), carry=carry, reverse=reverse, doubling=True, xp=xp)[1])
        kept = slice(i, None) if reverse else slice(None, i + 1)
        np.testing.assert_array_equal(out[..., kept, :], base[..., kept, :])


def _running(xp, x, carry_rows, *, native):
    """``Y = S - C`` and the carry after the rows, by one form of the running statistic."""
    start = None if carry_rows is None else lse.reduce(to_xp(xp, carry_rows), axis=-2, xp=xp)
    y, last = running(to_xp(xp, x), start, native=native, xp=xp)
    return to_np(y), to_np(last.max) + np.log(to_np(last.sum))


@pytest.mark.theorem("THM-SCAN-FORMS-AGREE")
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("with_carry", [False, True])
def test_fused_scan_equals_the_two_level_scan_and_the_running_log_sum_exp(fused_xp, n, with_carry):
    """Both forms of DEF-CAUSAL-STATISTIC, from a carry or not, against NumPy's own scan in float64."""
    x = RNG.normal(size=(2, 3, n, 5)) * 4
    x[0, 1, : n // 2, 2] = -np.inf  # a key unseen by the first rows
    carry_rows = RNG.normal(size=(2, 3, 4, 5)) * 4 if with_carry else None
    full = x if carry_rows is None else np.concatenate((carry_rows, x), axis=-2)
    expected = np.logaddexp.accumulate(full, axis=-2)[..., full.shape[-2] - n :, :]
    with np.errstate(invalid="ignore"):
        y_expected = np.where(np.isneginf(x), -np.inf, x - expected)
    for native in (False, True):
        y, last = _running(fused_xp, x, carry_rows, native=native)
        np.testing.assert_allclose(y, y_expected, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(last, expected[..., -1:, :], rtol=1e-13, atol=1e-13)


@pytest.mark.theorem("THM-STRICT-CAUSALITY")
def test_fused_scan_rows_read_no_later_row_bit_for_bit(fused_xp):
    n = 21
    x = RNG.normal(size=(2, 3, n, 5)) * 4
    base, _ = _running(fused_xp, x, None, native=True)
    for i in (0, 5, 19):
        changed = x.copy()
        changed[..., i + 1 :, :] = RNG.normal(size=changed[..., i + 1 :, :].shape) * 7
        out, _ = _running(fused_xp, changed, None, native=True)
        np.testing.assert_array_equal(out[..., : i + 1, :], base[..., : i + 1, :])


@pytest.mark.theorem("THM-SCAN-FORMS-AGREE")
@pytest.mark.parametrize("scheme", ["doubly", "hybrid"])
def test_attention_and_its_gradients_take_either_form(scheme):
    """The kernels' forward and backward passes with the running statistic by either form, blocks and a mask.

    On torch (the fused scan's namespace with autodiff; Dask's forward takes it in every causal test there).
    """
    pytest.importorskip("torch")
    import array_api_compat.torch as fused_xp

    t = 23
    q, k, v, grad = (to_xp(fused_xp, RNG.normal(size=(2, 3, t, 4))) for _ in range(4))
    mask = to_xp(fused_xp, RNG.random((1, 1, t, t)) < 0.8)
    alpha = fused_xp.asarray(0.3, dtype=fused_xp.float64)
    results = []
    for native in (False, True):
        rows = block_bounds(t, 7)
        options = kernels.BlockedOptions(scheme, True, 1, 0.5, rows, False, rows, native_scan=native)
        out, residuals = kernels.forward(q, k, v, mask, alpha, None, options=options, xp=fused_xp)
        grads = kernels.backward(
            q, k, v, mask, alpha, None, out, residuals, grad, options=options, mask_grad=False, xp=fused_xp
        )
        results.append([to_np(out), *(to_np(g) for g in grads if g is not None)])
    for two_level, fused in zip(*results, strict=True):
        np.testing.assert_allclose(fused, two_level, rtol=1e-12, atol=1e-12)


def test_the_kernels_delegate_where_the_fused_scan_pays():
    """torch on CUDA and Dask of NumPy chunks take the fused scan; on the CPU the two-level scan is faster."""
    import array_api_compat.numpy as np_xp

    assert not native_scan(np.zeros((2, 2)), xp=np_xp)
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as torch_xp

    assert not native_scan(torch.zeros(2, 2), xp=torch_xp)
    da = pytest.importorskip("dask.array")
    import array_api_compat.dask.array as dask_xp

    assert native_scan(da.zeros((2, 2)), xp=dask_xp)


def test_the_fused_scan_compiles_once_for_every_length():
    """Under ``torch.compile(dynamic=True)`` the fused scan is one operation: one graph, whatever the length."""
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as torch_xp
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()

    def biased(x):
        return running(x, None, native=True, xp=torch_xp)[0]

    compiled = torch.compile(biased, fullgraph=True, dynamic=True, backend="eager")
    for n in (17, 42, 101):
        x = torch.randn(2, n, 6, dtype=torch.float64)
        torch.testing.assert_close(compiled(x), biased(x), rtol=0, atol=0)
    assert counters["stats"]["unique_graphs"] == 1
