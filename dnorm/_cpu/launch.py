"""From arrays to the compiled passes and back: shapes, dtypes, broadcasting and the residuals.

Takes NumPy arrays and torch CPU tensors (viewed as NumPy arrays, no copy); returns arrays of the caller's
library. The leading axes of the queries, keys, values and mask broadcast against each other: each problem ``n``
of the broadcast shape reads its operands through an index (grouped-query heads share their key head, never
copied). Half precision arrives as float32 (the routing layer casts).
"""

from __future__ import annotations

import functools
import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .._kernels.schemes import Plan

Array = Any

#: Bytes of one ``(T, block)`` buffer of a block of scores: three of them stay in this CPU's 2 MiB L2 cache.
BLOCK_BYTES = 1 << 19
#: The fewest keys a block holds: BLAS products narrower than this lose more than the cache saves.
MIN_BLOCK = 128
#: Scores per thread: a call of fewer runs in the caller's thread alone.
THREAD_SCORES = 1 << 16
#: Row shifts above which ``exp(-shift)`` is finite: a weight is then a product of exponentials already at hand.
FAST = {np.dtype(np.float32): -60.0, np.dtype(np.float64): -600.0}


@dataclass(frozen=True)
class CompiledOptions:
    """The static options of a call: what the scheme computes (its :class:`dnorm._kernels.schemes.Plan`),
    causality (queries see ``j <= i + offset``) and the scale."""

    plan: Plan
    causal: bool
    scale: float
    offset: int = 0

    @property
    def rounds(self) -> int:
        """Column statistics of the key alone: 0 for softmax and the causal forms, 1 for doubly and hybrid, n for
        Sinkhorn."""
        return self.plan.rounds

    @property
    def running(self) -> bool:
        """The strictly causal running column statistic (causal doubly and hybrid)."""
        return self.plan.running

    @property
    def plain(self) -> bool:
        """The unbiased component (softmax, and hybrid's second one)."""
        return self.plan.plain


class Saved(NamedTuple):
    """What the forward pass keeps for the backward one: O(T + K) numbers per problem and round, and the outputs.

    ``columns``: each round's column maximum and sum ``(N, R, K)``; ``rows``: each round's row shift, row
    maximum and row sum ``(N, R, T)``; ``plain_rows``: the plain component's ``(N, T)``; ``components``: the
    biased and plain outputs of a hybrid (empty otherwise).
    """

    columns: tuple[Array, ...]
    rows: tuple[Array, ...]
    plain_rows: tuple[Array, ...]
    components: tuple[Array, ...]


class Problem(NamedTuple):
    """The operands flattened to ``(count, rows, cols)`` and, per problem of the broadcast leading shape, an index."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    bias: np.ndarray
    which: np.ndarray
    lead: tuple[int, ...]
    consts: np.ndarray
    block: int


def numpy_view(x: Array) -> np.ndarray:
    """A NumPy view of a NumPy array or a torch CPU tensor (no copy)."""
    if isinstance(x, np.ndarray):
        return x
    return x.detach().numpy()


def like(x: np.ndarray, template: Array) -> Array:
    """``x`` as an array of ``template``'s library (a torch tensor shares the memory)."""
    if isinstance(template, np.ndarray):
        return x
    import torch

    return torch.from_numpy(x)


def problem(query: Array, key: Array, value: Array, mask: Array | None, scale: float) -> Problem:
    """The flattened operands of a call; the queries scaled, a boolean mask as ``0`` and ``-inf``."""
    q, k, v = (numpy_view(x) for x in (query, key, value))
    dtype = q.dtype
    if mask is None:
        bias = np.zeros((1, 1, 1), dtype)
    else:
        m = numpy_view(mask)
        bias = np.where(m, dtype.type(0), dtype.type(-np.inf)) if m.dtype == np.bool_ else m.astype(dtype)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], bias.shape[:-2])
    fq, fk, fv, fb = (_flatten(x) for x in (q * dtype.type(scale), k, v, bias))
    index = _indices(tuple(x.shape[:-2] for x in (q, k, v, bias)), tuple(lead))
    consts = frozen(np.array([np.finfo(dtype).min, FAST[dtype]], dtype))
    block = max(MIN_BLOCK, min(512, BLOCK_BYTES // (q.shape[-2] * dtype.itemsize) // 16 * 16))
    return Problem(fq, fk, fv, fb, index, tuple(lead), consts, block)


def frozen(x: np.ndarray) -> np.ndarray:
    """A read-only view of ``x``: every array a pass reads is typed read-only, whether the caller's was or not.

    numba compiles one specialization per argument type, and writability is part of the type: a read-only
    carry or a user's read-only keys would otherwise cost a second compilation of a whole pass.
    """
    view = x.view()
    view.flags.writeable = False
    return view


def _flatten(x: np.ndarray) -> np.ndarray:
    return frozen(np.ascontiguousarray(x.reshape(math.prod(x.shape[:-2]), *x.shape[-2:])))


@functools.lru_cache(maxsize=64)
def _indices(shapes: tuple[tuple[int, ...], ...], lead: tuple[int, ...]) -> np.ndarray:
    """``(N, 4)``: for each problem of ``lead`` (row-major), the flat index of each operand of leading ``shapes``."""
    return frozen(np.stack([_index(shape, lead) for shape in shapes], axis=1))


def _index(shape: tuple[int, ...], lead: tuple[int, ...]) -> np.ndarray:
    """For each problem of ``lead`` (row-major), the flat index of the operand of leading shape ``shape``."""
    own = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
    return np.broadcast_to(own, lead).reshape(-1)


def forward(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    alpha: Array,
    carry: tuple[Array, Array] | None,
    /,
    *,
    options: CompiledOptions,
) -> tuple[Array, Saved, tuple[Array, Array] | None]:
    """The output, the residuals and (under the running statistic) the carry after the last query."""
    from .forward import forward as compiled

    p = problem(query, key, value, mask, options.scale)
    n, t, kk, dv = p.which.shape[0], p.q.shape[1], p.k.shape[1], p.v.shape[2]
    dtype = p.q.dtype
    passes = max(options.rounds, 1)
    biased = options.rounds > 0 or options.running
    if carry is None:
        carry_max, carry_sum = frozen(np.zeros((n, 0), dtype)), frozen(np.zeros((n, 0), dtype))
    else:
        carry_max, carry_sum = (_per_problem(numpy_view(c), p.lead) for c in carry)
    out_b = np.empty((n, t if biased else 0, dv), dtype)
    out_p = np.empty((n, t if options.plain else 0, dv), dtype)
    columns = tuple(np.empty((n, passes, kk), dtype) for _ in range(2))
    rows = tuple(np.empty((n, passes, t), dtype) for _ in range(3))
    plain_rows = tuple(np.empty((n, t), dtype) for _ in range(2))
    last = tuple(np.empty((n, kk if options.running else 0), dtype) for _ in range(2))
    shared = (p.q, p.k, p.v, p.bias, p.consts, mask is not None, options.rounds, options.running, options.plain,
              options.causal, options.offset, p.block)  # fmt: skip
    per_problem = (p.which, carry_max, carry_sum, out_b, out_p, *columns, *rows, *plain_rows, *last)
    in_threads(compiled, shared, per_problem, n * t * kk)
    shape = (*p.lead, t, dv)
    parts = [x.reshape(shape) for x, used in ((out_b, biased), (out_p, options.plain)) if used]
    a = numpy_view(alpha)
    out = a * parts[0] + (1 - a) * parts[1] if len(parts) == 2 else parts[0]
    saved = Saved(
        tuple(like(x, query) for x in columns),
        tuple(like(x, query) for x in rows),
        tuple(like(x, query) for x in plain_rows),
        tuple(like(x, query) for x in parts) if len(parts) == 2 else (),
    )
    state = None
    if options.running:
        width = max(1, min(kk, t + options.offset))
        state = tuple(like(np.ascontiguousarray(x[:, :width].reshape(*p.lead, 1, width)), query) for x in last)
    return like(np.ascontiguousarray(out, dtype=dtype), query), saved, state


def _per_problem(x: np.ndarray, lead: tuple[int, ...]) -> np.ndarray:
    """A carry ``(..., 1, Kc)`` as ``(N, Kc)``, one row per problem of ``lead``."""
    return frozen(np.ascontiguousarray(np.broadcast_to(x[..., 0, :], (*lead, x.shape[-1])).reshape(-1, x.shape[-1])))


def in_threads(compiled: Any, shared: tuple[Any, ...], per_problem: tuple[np.ndarray, ...], scores: int) -> None:
    """``compiled(*shared, *per_problem)``, the problems (axis 0 of ``per_problem``) shared among threads.

    The passes release the GIL (``nogil``); each thread runs its problems one after the other, and BLAS runs on
    one thread meanwhile. Threads: numba's ``NUMBA_NUM_THREADS`` (the CPU count unless set), at most one per
    :data:`THREAD_SCORES` of the call's ``scores`` (a decoding step over 4096 keys and 8 query heads runs in the
    caller's thread: handing it to another thread cost more than the pass, measured); the caller's thread runs
    the first share.
    """
    count = per_problem[0].shape[0]
    threads = max(1, min(count, _pool()[1], scores // THREAD_SCORES))
    cuts = [count * i // threads for i in range(threads + 1)]
    parts = [tuple(x[a:b] for x in per_problem) for a, b in itertools.pairwise(cuts)]
    with _blas_controller().limit(limits=1):
        others = [_pool()[0].submit(compiled, *shared, *part) for part in parts[1:]]
        compiled(*shared, *parts[0])
        for future in others:
            future.result()


@functools.cache
def _pool() -> tuple[ThreadPoolExecutor, int]:
    from numba import config

    threads = max(1, int(getattr(config, "NUMBA_NUM_THREADS", 1)))
    return ThreadPoolExecutor(threads, thread_name_prefix="dnorm-cpu"), threads


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's handle on the BLAS libraries (SciPy's, which the passes call, loaded first)."""
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def backward(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    alpha: Array,
    out: Array,
    saved: Saved,
    grad: Array,
    /,
    *,
    options: CompiledOptions,
) -> tuple[Array, Array, Array, Array | None]:
    """Gradients of ``query``, ``key``, ``value`` and (hybrid) ``alpha``, each in its input's shape."""
    from .backward import backward as compiled

    p = problem(query, key, value, mask, options.scale)
    n, t, kk = p.which.shape[0], p.q.shape[1], p.k.shape[1]
    dtype = p.q.dtype
    d_out = np.broadcast_to(numpy_view(grad), (*p.lead, t, p.v.shape[2]))
    a = numpy_view(alpha)
    biased = options.rounds > 0 or options.running
    outputs = [numpy_view(x) for x in saved.components] or [numpy_view(out)]
    weights = [a, 1 - a] if options.plain and biased else [np.ones((), dtype)]
    grads = [np.broadcast_to(w * d_out, d_out.shape).astype(dtype) for w in weights]
    deltas = [np.sum(g * np.broadcast_to(o, g.shape), axis=-1) for g, o in zip(grads, outputs, strict=True)]
    flat_g = [frozen(np.ascontiguousarray(g.reshape(n, t, -1))) for g in grads]
    flat_d = [frozen(np.ascontiguousarray(d.reshape(n, t))) for d in deltas]
    empty_g, empty_d = frozen(np.zeros((n, 0, p.v.shape[2]), dtype)), frozen(np.zeros((n, 0), dtype))
    go_b, delta_b = (flat_g[0], flat_d[0]) if biased else (empty_g, empty_d)
    go_p, delta_p = (flat_g[-1], flat_d[-1]) if options.plain else (empty_g, empty_d)
    dq = np.empty((n, t, p.q.shape[2]), dtype)
    dk = np.empty((n, kk, p.k.shape[2]), dtype)
    dv = np.empty((n, kk, p.v.shape[2]), dtype)
    residual = [frozen(numpy_view(x)) for x in (*saved.columns, *saved.rows, *saved.plain_rows)]
    shared = (p.q, p.k, p.v, p.bias, p.consts, mask is not None, options.rounds, options.running, options.plain,
              options.causal, options.offset, p.block)  # fmt: skip
    in_threads(compiled, shared, (p.which, *residual, go_b, go_p, delta_b, delta_p, dq, dk, dv), n * t * kk)
    shapes = [numpy_view(x).shape for x in (query, key, value)]
    d_q, d_k, d_v = (
        sum_to(x.reshape(*p.lead, *x.shape[1:]), shape).astype(dtype, copy=False)
        for x, shape in zip((dq * dtype.type(options.scale), dk, dv), shapes, strict=True)
    )
    d_alpha = None
    if options.plain and biased:
        mixed = np.sum(d_out * (outputs[0] - outputs[1]), axis=(-2, -1), keepdims=True)
        d_alpha = sum_to(mixed, a.shape).astype(dtype, copy=False)
    return tuple(like(np.ascontiguousarray(x), query) if x is not None else None for x in (d_q, d_k, d_v, d_alpha))  # type: ignore[return-value]


def sum_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` summed over the axes along which an array of ``shape`` was broadcast to it."""
    extra = x.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(extra + i for i, s in enumerate(shape) if s == 1 and x.shape[extra + i] != 1)
    return np.sum(x, axis=axes, keepdims=True).reshape(shape) if axes else x
