"""Dtypes: half precision computes in float32 and comes back in the input dtype."""

from __future__ import annotations

import numpy as np
import pytest
from _arrays import to_np, to_xp
from array_api_compat import is_dask_namespace
from array_api_extra.testing import lazy_xp_function
from oracles import NORMALIZED as SCHEMES

from dnorm import attention, normalize, received_mass

lazy_xp_function(normalize)
lazy_xp_function(attention)

RNG = np.random.default_rng(5)


def _half_dtypes(xp):
    """The half-precision dtypes of ``xp`` (Dask arrays take NumPy's float16)."""
    found = [getattr(xp, n) for n in ("float16", "bfloat16") if hasattr(xp, n)]
    return found or ([np.float16] if is_dask_namespace(xp) else [])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_float32_and_float64_stay(xp, scheme):
    s = RNG.normal(size=(4, 5))
    for dtype in (xp.float32, xp.float64):
        x = to_xp(xp, s, dtype=dtype)
        assert normalize(x, scheme).dtype == dtype
        assert attention(x, x, x, scheme).dtype == dtype


@pytest.mark.parametrize("scheme", SCHEMES)
def test_half_precision_is_computed_in_float32(xp, scheme):
    halves = _half_dtypes(xp)
    if not halves:
        pytest.skip(f"{xp.__name__} has no half-precision dtype")
    s = RNG.normal(size=(2, 6, 5)) * 4
    for dtype in halves:
        x = to_xp(xp, s, dtype=dtype)
        w = normalize(x, scheme)
        assert w.dtype == dtype
        rounded = to_np(xp.astype(x, xp.float32)).astype(np.float64)
        reference = to_np(normalize(to_xp(xp, rounded), scheme))
        # one rounding of the float32 result to the half format, nothing more
        eps = 2.0**-8 if "bfloat16" in str(dtype) else 2.0**-11
        np.testing.assert_allclose(to_np(w).astype(np.float64), reference, rtol=eps, atol=1e-7)
        out = attention(x, x, x, scheme)
        assert out.dtype == dtype


@pytest.mark.parametrize("dtype_name", ["int32", "int64", "bool", "complex64"])
def test_non_real_floating_scores_raise_type_error(xp, dtype_name):
    if not hasattr(xp, dtype_name):
        pytest.skip(f"{xp.__name__} has no {dtype_name}")
    x = to_xp(xp, np.ones((3, 3)), dtype=getattr(xp, dtype_name))
    with pytest.raises(TypeError, match="scores must have a real floating dtype"):
        normalize(x)
    with pytest.raises(TypeError, match="query must have a real floating dtype"):
        attention(x, x, x)
    with pytest.raises(TypeError, match="weights must have a real floating dtype"):
        received_mass(x)
