"""Hypothesis strategies shared by the property and theorem tests."""

from __future__ import annotations

import numpy as np
from array_api_compat import is_dask_namespace, is_jax_namespace
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from oracles import NORMALIZED as SCHEMES

#: Every scheme with and without ``causal``, but Sinkhorn, which has no causal form (it raises, tested apart).
SCHEME_CAUSAL = [
    (scheme, causal) for scheme in SCHEMES for causal in (False, True) if not (causal and scheme == "sinkhorn")
]
MAGNITUDE = 1e4
# JAX compiles and Dask builds a graph for every example: fewer examples there
LAZY_EXAMPLES = 6


@st.composite
def scores_and_masks(draw, *, with_mask: bool = True):
    """float32 scores of shape (H, T, K), values up to 1e4 (ties allowed), and a sparse random mask."""
    h, t, k = draw(st.integers(1, 2)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    scale = draw(st.sampled_from([1.0, 30.0, MAGNITUDE]))
    unit = st.floats(-1.0, 1.0, width=32, allow_subnormal=False)
    scores = draw(hnp.arrays(np.float32, (h, t, k), elements=unit)) * np.float32(scale)
    mask = draw(hnp.arrays(np.bool_, (h, t, k))) if with_mask and draw(st.booleans()) else None
    return scores, mask


def check_property(xp, strategy, check) -> None:
    """Run ``check`` on examples drawn from ``strategy``; fewer examples on the lazy backends."""
    lazy = is_jax_namespace(xp) or is_dask_namespace(xp)
    examples = LAZY_EXAMPLES if lazy else settings().max_examples
    settings(max_examples=examples)(given(strategy)(check))()
