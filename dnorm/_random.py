"""Dropout's seed: one 32-bit integer drawn from the caller's random generator (spec DEF-DROPOUT).

The mask itself is a hash of the seed and the positions (:mod:`dnorm._kernels.dropout`);
only the seed comes from a generator, and only these libraries have one that dnorm can use:

* torch: its default generator (so ``torch.manual_seed`` reproduces a run), or a ``torch.Generator`` passed as the key;
* JAX: an explicit key (``jax.random.key`` or ``PRNGKey``), as JAX's random functions take;
* NumPy: a ``numpy.random.Generator`` passed as the key.
"""

from __future__ import annotations

from typing import Any

from . import _validate as check

Array = Any

#: Seeds are drawn from [0, SEEDS).
SEEDS = 2**31 - 1


def seed(key: Any, like: Array, /, *, xp: Any) -> Array:
    """A 32-bit integer array on ``like``'s device, drawn from ``key`` (or torch's default generator)."""
    library = check.library(xp)
    if library == "torch":
        import torch

        if key is not None and not isinstance(key, torch.Generator):
            msg = f"dropout_key for torch tensors must be None or a torch.Generator, got {type(key).__name__}"
            raise TypeError(msg)
        return torch.randint(0, SEEDS, (), generator=key, dtype=torch.int32, device=like.device)
    if library == "jax":
        import jax

        if key is None or not _is_jax_key(key):
            msg = f"dropout_p > 0 with JAX arrays needs dropout_key=jax.random.key(...), got {type(key).__name__}"
            raise TypeError(msg)
        return jax.random.randint(key, (), 0, SEEDS, dtype=xp.int32)
    if library == "numpy":
        import numpy as np

        if not isinstance(key, np.random.Generator):
            msg = (
                "dropout_p > 0 with NumPy arrays needs dropout_key=numpy.random.default_rng(...), "
                f"got {type(key).__name__}"
            )
            raise TypeError(msg)
        return xp.asarray(key.integers(0, SEEDS), dtype=xp.int32)
    msg = (
        f"dropout_p > 0 needs a random generator, which dnorm takes from torch, JAX and NumPy only; "
        f"got {type(like).__module__}.{type(like).__name__}"
    )
    raise TypeError(msg)


def keys(key: Any, n: int, /, *, xp: Any) -> list[object]:
    """``n`` keys for ``n`` calls that each draw a seed: JAX keys split, generators (stateful) shared."""
    if check.library(xp) == "jax" and key is not None and _is_jax_key(key):
        import jax

        return list(jax.random.split(key, n)) if n else []
    return [key] * n


def _is_jax_key(key: object, /) -> bool:
    import jax

    if not isinstance(key, jax.Array):
        return False
    return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == "uint32" and key.shape == (2,))
