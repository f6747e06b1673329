"""Compute dtypes and the byte budgets of blocks of scores, defined once for the kernels and the fast paths."""

from __future__ import annotations

from typing import Any

Array = Any

#: Scores up to this many bytes are materialized; larger ones are processed in blocks.
MATERIALIZE_BYTES = 256 * 2**20
#: Materialized scores are still normalized in blocks of rows of about this many bytes, to stay in cache.
CACHE_BYTES = 2**20
#: The chunked path keeps one block of scores near this many bytes.
BLOCK_BYTES = 16 * 2**20
#: The causal path streams blocks of about this many bytes (each needs only the keys up to its last row).
CAUSAL_BYTES = 2 * 2**20
#: The backward pass recomputes blocks of about this many bytes, several of them alive at once.
BACKWARD_BYTES = 2 * 2**20
#: The torch fast path finds the column statistic in blocks of keys of about this many bytes (float32).
KEY_BLOCK_BYTES = 8 * 2**20
#: Streamed blocks (causal, backward) have at least this many rows: fewer would cost more in per-block overhead.
MIN_ROWS = 64
#: On an accelerator every budget above is this many times larger: kernel launches, not caches, set the block size.
ACCELERATOR_SCALE = 64
#: Under Dask the budgets apply to one task (a chunk of the leading axes), and a materialized block holds this many
#: bytes of a chunk's scores, not ``CACHE_BYTES``: every block costs a few tasks per chunk, whose scheduling
#: overhead a cache cannot repay.
TASK_BYTES = BLOCK_BYTES
#: Under Dask a causal block has at most this many rows. The two-level scan (:mod:`.scan`) cuts ``n`` rows into
#: groups of ``s ~ sqrt(n)`` (a power of two) and leaves them in chunks of one row, ``s`` times the chunks they came
#: in: Dask warns (PerformanceWarning) from 10 times on, that is from ``s = 16``, 256 rows.
DASK_CAUSAL_ROWS = 255


def compute_dtype(dtype: Any, /, *, xp: Any) -> tuple[Any, Any]:
    """(dtype to compute in, dtype to return): float32 and float64 compute in themselves, half precision in float32."""
    if dtype == xp.float64 or dtype == xp.float32:
        return dtype, dtype
    return xp.float32, dtype


def cast(x: Array, dtype: Any, /, *, xp: Any) -> Array:
    """``x`` in ``dtype`` (``x`` itself when it already is)."""
    return x if x.dtype == dtype else xp.astype(x, dtype)


def rows_within(budget: int, row_bytes: int) -> int:
    """The number of query rows whose scores take at most ``budget`` bytes (at least one)."""
    return max(1, budget // max(row_bytes, 1))
