"""What the benchmark modules share: sizes, inputs, backends, timing and the anchor implementations.

``DNORM_BENCH_QUICK=1`` shrinks every size so that one quick run of the suite takes a minute or two:
the benchmarks still run every code path, the figures mean nothing.
"""

import contextlib
import importlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import THREADS

QUICK = os.environ.get("DNORM_BENCH_QUICK") == "1"
HEADS, DIM = 4, 64
SCHEMES = ("softmax", "doubly", "hybrid", "sinkhorn")
BACKENDS = ("numpy", "torch", "cupy")
#: T = K of the per-scheme timings, of the ratio benchmarks, of the chunked throughput and of the memory benchmarks.
SIZES = (256,) if QUICK else (256, 1024, 4096)
RATIO_SIZE = 256 if QUICK else 2048
CHUNKED_SIZE = 1024 if QUICK else 8192
LARGE_SIZE = 1024 if QUICK else 16384
#: Query rows per block of the chunked path: None is dnorm's automatic choice, which blocks at the full sizes.
CHUNK_ROWS = 128 if QUICK else None
#: Timed pairs of a ratio, and untimed calls of each side before them (the first call of the compiled CPU kernels
#: in a process loads or compiles their machine code).
REPEATS = 1 if QUICK else 15
WARMUP = 1 if QUICK else 2

with contextlib.suppress(ImportError):
    from threadpoolctl import threadpool_limits

    threadpool_limits(THREADS)


def qkv(size: int) -> tuple[np.ndarray, ...]:
    """Query, key and value of shape (1, HEADS, size, DIM), float32."""
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal((1, HEADS, size, DIM), dtype=np.float32) for _ in range(3))


@dataclass(frozen=True)
class Backend:
    """An array library: how to move NumPy inputs to it and how to wait for its results."""

    asarray: Callable[[np.ndarray], Any]
    sync: Callable[[], None]

    def inputs(self, size: int) -> tuple[Any, ...]:
        return tuple(self.asarray(x) for x in qkv(size))


def backend(name: str) -> Backend:
    """The backend ``name``; NotImplementedError (asv's skip) when it cannot run here."""
    if name == "numpy":
        return Backend(np.asarray, lambda: None)
    if name == "torch":
        torch = _import_or_skip("torch")
        torch.set_num_threads(THREADS)
        if torch.cuda.is_available():
            return Backend(lambda x: torch.from_numpy(x).cuda(), torch.cuda.synchronize)
        return Backend(torch.from_numpy, lambda: None)
    cupy = _import_or_skip("cupy")
    if not cupy.cuda.is_available():
        msg = "no CUDA device"
        raise NotImplementedError(msg)
    return Backend(cupy.asarray, cupy.cuda.Device().synchronize)


def _import_or_skip(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise NotImplementedError(str(exc)) from None


def median_ratio(numerator: Callable[[], object], denominator: Callable[[], object]) -> float:
    """The median over ``REPEATS`` pairs of ``numerator``'s time over ``denominator``'s, the two timed back to back.

    Each pair's ratio is taken from calls a few milliseconds apart, so a load that comes and goes on a shared
    machine slows both of them; the median drops the pairs it hit halfway. Which side goes first alternates from
    pair to pair (neither always finds the caches as the other left them). ``WARMUP`` untimed calls of each first.
    """
    for _ in range(WARMUP):
        numerator()
        denominator()
    sides, ratios = (numerator, denominator), []
    for repeat in range(REPEATS):
        seconds = [0.0, 0.0]
        for side in (0, 1) if repeat % 2 == 0 else (1, 0):
            start = time.perf_counter()
            sides[side]()
            seconds[side] = time.perf_counter() - start
        ratios.append(seconds[0] / seconds[1])
    return statistics.median(ratios)


def numpy_softmax_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Plain materialized softmax attention in NumPy, as one writes it by hand."""
    s = q @ np.swapaxes(k, -1, -2) * q.dtype.type(q.shape[-1] ** -0.5)
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return s @ v


def torch_materialized_dnas(q: Any, k: Any, v: Any) -> Any:
    """Doubly-normalized attention as research code writes it: softmax over the queries, then l1 over the keys."""
    import torch

    b = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-2)
    return (b / b.sum(dim=-1, keepdim=True)) @ v
