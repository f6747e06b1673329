"""Dask: the blocks of query rows follow the caller's chunks, so the graph grows with the chunks, not with T.

Every operation on a block of rows of a Dask array is a task per chunk: blocks
sized for a cache (about 1 MiB of the whole array's scores) made 17221 tasks
of a (16, 512, 64) array chunked along the batch, 27 times the time of NumPy.
The budgets now apply to one chunk (``dnorm._routing.plan.task_lead``), and a
materialized block holds ``TASK_BYTES`` of it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from array_api_compat import array_namespace
from oracles import NORMALIZED as SCHEMES

from dnorm import _validate as check
from dnorm import attention
from dnorm._kernels import attention as kernels
from dnorm._kernels import budget
from dnorm._kernels.scores import block_bounds
from dnorm._routing.contract import Call
from dnorm._routing.plan import kernel_options, task_lead

da = pytest.importorskip("dask.array", reason="dask is not installed")
dask = pytest.importorskip("dask")

RNG = np.random.default_rng(5)

#: At most this many tasks per chunk of the inputs (query, key, value, mask) and of the ``(..., T, K)`` scores
#: (chunks along both T and K multiply), plus ``CONST``. One block of rows costs 7 (softmax) to 31 (sinkhorn); for
#: (16, 512, 64) chunked along the batch, 17 for doubly per chunk of the inputs alone (blocks of 1 MiB cost 359).
PER_CHUNK = 40
CONST = 100


def _dask(*arrays, chunks):
    return tuple(da.from_array(a, chunks=chunks) for a in arrays)


def _qkv(shape, chunks, *, dv=None):
    q, k, v = (RNG.normal(size=shape) for _ in range(3))
    if dv is not None:
        v = RNG.normal(size=(*shape[:-1], dv))
    return (q, k, v), _dask(q, k, v, chunks=chunks)


def _options(scheme, offset, lead, n, block_size, q, k, *, xp):
    """The kernels' options for (T = K = n) float64 attention over ``lead``, as the routing layer plans them."""
    request = check.Request(scheme, offset, 1.0, lead, 1, block_size=block_size)
    call = Call("attention", "dask", request, lead, n, n, xp.float64, False, False, False, False)
    return kernel_options(call, q, k, None, xp=xp)


def _tasks(x) -> int:
    return len(x.__dask_graph__())


def _input_chunks(*arrays) -> int:
    return sum(a.npartitions for a in arrays if a is not None)


def _bound(q, k, v, mask=None) -> int:
    """``PER_CHUNK`` tasks per chunk of the inputs and of their scores (key heads repeated for grouped queries)."""
    keys = da.repeat(k, q.shape[-3] // k.shape[-3], axis=-3) if q.ndim > 3 and k.shape[-3] != q.shape[-3] else k
    scores = q @ da.swapaxes(keys, -1, -2)
    if mask is not None:
        scores = scores + da.where(mask, 0.0, -np.inf)
    return PER_CHUNK * (_input_chunks(q, k, v, mask) + scores.npartitions) + CONST


def _forbid_compute(dsk, keys, **kwargs):
    msg = "dnorm computed a Dask graph"
    raise AssertionError(msg)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_tasks_grow_with_the_chunks_along_the_batch(scheme):
    """(16, 512, 64) chunked along the batch: a few tasks per chunk and operation (17221 before, for doubly)."""
    q, k, v = (da.random.random((16, 512, 64), chunks=(1, 512, 64)) for _ in range(3))
    with dask.config.set(scheduler=_forbid_compute):
        out = attention(q, k, v, scheme)
    assert out.chunks == ((1,) * 16, (512,), (64,))
    assert _tasks(out) <= PER_CHUNK * _input_chunks(q, k, v) + CONST


@pytest.mark.parametrize("scheme", SCHEMES)
def test_tasks_do_not_depend_on_the_number_of_rows(scheme):
    """Whole (T, K) slabs per chunk are one block: 8 times the rows, the same graph."""
    counts = []
    for t in (64, 512):
        q, k, v = (da.zeros((16, t, 64), chunks=(1, t, 64)) for _ in range(3))
        counts.append(_tasks(attention(q, k, v, scheme)))
    assert counts[0] == counts[1]


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [
        ((8, 96, 16), (1, 96, 16)),  # along the batch: one task per chunk
        ((8, 96, 16), (3, 40, 16)),  # along the queries (and keys) too: Dask reduces the column statistic
        ((8, 96, 16), (8, 96, 5)),  # along the features: Dask sums the products
        ((2, 4, 64, 8), (1, 2, 64, 8)),  # two leading axes
    ],
)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_equals_numpy_and_stays_within_the_bound(scheme, shape, chunks):
    (qn, kn, vn), (q, k, v) = _qkv(shape, chunks)
    with dask.config.set(scheduler=_forbid_compute):
        out = attention(q, k, v, scheme)
    assert _tasks(out) <= _bound(q, k, v)
    want = attention(qn, kn, vn, scheme, kernel="array-api")  # what each chunk runs, whatever auto takes here
    np.testing.assert_allclose(out.compute(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_masks_broadcast_keys_and_grouped_heads(scheme):
    """A chunked boolean mask, keys broadcast over the batch, grouped-query heads: the same as NumPy."""
    qn = RNG.normal(size=(2, 4, 48, 8))
    kn, vn = RNG.normal(size=(2, 2, 48, 8)), RNG.normal(size=(1, 2, 48, 3))
    maskn = RNG.random((2, 1, 48, 48)) < 0.8
    q, k = da.from_array(qn, chunks=(1, 2, 48, 8)), da.from_array(kn, chunks=(1, 1, 48, 8))
    v, mask = da.from_array(vn, chunks=(1, 1, 48, 3)), da.from_array(maskn, chunks=(1, 1, 24, 48))
    with dask.config.set(scheduler=_forbid_compute):
        out = attention(q, k, v, scheme, mask=mask)
        floating = attention(q, k, v, scheme, mask=da.where(mask, 0.0, -np.inf))
    assert _tasks(out) <= _bound(q, k, v, mask)
    expected = attention(qn, kn, vn, scheme, mask=maskn)
    np.testing.assert_allclose(out.compute(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(floating.compute(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("materialize", [True, False])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_several_blocks_per_chunk(monkeypatch, scheme, materialize):
    """Chunks larger than the budgets: several blocks of rows per chunk, materialized or not, as NumPy."""
    monkeypatch.setattr(budget, "TASK_BYTES", 16 * 40 * 8)  # blocks of 16 rows of one (40-key) chunk
    if not materialize:
        monkeypatch.setattr(budget, "MATERIALIZE_BYTES", 0)
        monkeypatch.setattr(budget, "BLOCK_BYTES", 16 * 40 * 8)
    (qn, kn, vn), (q, k, v) = _qkv((4, 40, 8), (1, 40, 8))
    xp = array_namespace(q)
    options = _options(scheme, None, (4,), 40, None, q, k, xp=xp)
    assert (options.rows, options.materialize) == (block_bounds(40, 16), materialize)
    out = attention(q, k, v, scheme)
    np.testing.assert_allclose(out.compute(), attention(qn, kn, vn, scheme), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_explicit_block_size_is_honored(scheme, monkeypatch):
    """On the kernels' path (queries chunked along T) it sets the blocks; chunk by chunk, each chunk's call gets it."""
    (qn, kn, vn), (q, k, v) = _qkv((4, 64, 8), (1, 64, 8))
    xp = array_namespace(q)
    options = _options(scheme, None, (4,), 64, 16, q, k, xp=xp)
    assert (options.rows, options.materialize) == (block_bounds(64, 16), False)
    along_t = q.rechunk((1, 32, 8))  # not one chunk along T: the kernels on Dask arrays
    blocked, whole = attention(along_t, k, v, scheme, block_size=16), attention(along_t, k, v, scheme)
    assert _tasks(blocked) > _tasks(whole)  # two blocks per chunk of 32 rows: the caller asked for them
    np.testing.assert_allclose(blocked.compute(), attention(qn, kn, vn, scheme), rtol=1e-12, atol=1e-12)
    seen = []
    original = kernels.infer
    monkeypatch.setattr(kernels, "infer", lambda *a, **kw: seen.append(kw["options"].rows) or original(*a, **kw))
    np.testing.assert_allclose(attention(q, k, v, scheme, block_size=16).compute(), blocked.compute(), rtol=1e-12)
    assert set(seen) == {block_bounds(64, 16)}  # every chunk's call


@pytest.mark.parametrize(("scheme", "causal"), [("doubly", False), ("hybrid", True), ("softmax", True)])
def test_whole_slabs_per_chunk_are_one_task_each(scheme, causal):
    """T, K and D in one chunk: each chunk of the leading axes is one call of the NumPy kernels (causal included)."""
    (qn, kn, vn), (q, k, v) = _qkv((8, 2, 300, 8), (1, 2, 300, 8))
    mask = da.from_array(RNG.random((8, 1, 300, 300)) < 0.9, chunks=(2, 1, 300, 300))
    alpha = da.from_array(np.array([0.2, 0.7]), chunks=2)
    with dask.config.set(scheduler=_forbid_compute):
        out = attention(q, k, v, scheme, causal=causal, mask=mask, alpha=alpha)
    assert _tasks(out) <= 2 * (_input_chunks(q, k, v, mask, alpha) + out.npartitions)
    expected = attention(qn, kn, vn, scheme, causal=causal, mask=mask.compute(), alpha=np.array([0.2, 0.7]),
                         kernel="array-api")  # fmt: skip
    np.testing.assert_allclose(out.compute(), expected, rtol=1e-12, atol=1e-12)


def test_causal_blocks_stay_below_the_dask_warning():
    """Causal blocks grow with the chunk's budget up to DASK_CAUSAL_ROWS: one block of 512 rows made Dask warn."""
    q, k, v = (da.zeros((1, 512, 8), chunks=(1, 512, 8)) for _ in range(3))
    xp = array_namespace(q)
    options = _options("doubly", 0, (1,), 512, None, q, k, xp=xp)
    assert options.rows == block_bounds(512, budget.DASK_CAUSAL_ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attention(q, k, v, "doubly", causal=True)


def test_causal_equals_numpy():
    (qn, kn, vn), (q, k, v) = _qkv((4, 24, 8), (1, 24, 8))
    with dask.config.set(scheduler=_forbid_compute):
        out = attention(q, k, v, "hybrid", causal=True)
    expected = attention(qn, kn, vn, "hybrid", causal=True)
    np.testing.assert_allclose(out.compute(), expected, rtol=1e-12, atol=1e-12)


def test_task_lead_reads_the_chunks():
    xp = array_namespace(da.zeros(1))
    q = da.zeros((6, 4, 32, 8), chunks=(2, 4, 32, 8))
    k = da.zeros((4, 32, 8), chunks=(1, 32, 8))  # broadcast over axis 0: it does not bound that axis
    assert task_lead((6, 4), q, k, None, xp=xp) == (2, 1)
    mask = da.zeros((6, 1, 32, 32), chunks=(1, 1, 32, 32))  # extent 1 along axis 1: no bound there
    assert task_lead((6, 4), q, None, mask, xp=xp) == (1, 4)
    unknown = q[da.from_array(np.arange(6) < 4)]  # boolean indexing: chunks of unknown size
    assert math.isnan(unknown.chunks[0][0])
    assert task_lead((6, 4), unknown, xp=xp) == (6, 4)


def test_task_lead_leaves_other_libraries_alone():
    q = np.zeros((6, 4, 32, 8))
    assert task_lead((6, 4), q, q, None, xp=array_namespace(q)) == (6, 4)
