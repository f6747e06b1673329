"""The two forms of the scan's second step (spec DEF-TWO-LEVEL-SCAN): the walk and the doubling scan agree."""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp

from dnorm._kernels import logsumexp as lse
from dnorm._kernels.backward import _compose
from dnorm._kernels.bias import _merge
from dnorm._kernels.scan import scan

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
