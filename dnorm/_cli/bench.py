"""``dnorm bench``: median time of ``attention`` per scheme on every installed backend."""

from __future__ import annotations

import statistics
import time
from typing import Any, TextIO

import numpy as np

from .. import SCHEMES, attention
from .. import _validate as check
from . import text
from .backends import installed


def run(*, size: int, repeat: int, heads: int, dim: int, stream: TextIO) -> dict[str, Any]:
    """Time ``attention(q, k, v, scheme)`` with ``T = K = size``; progress on ``stream``.

    Each scheme runs once to warm up (JAX and torch compile or cache kernels),
    then ``repeat`` timed runs; Dask graphs are computed and GPU work is waited
    for inside the timing.
    """
    found, skipped = installed()
    rng = np.random.default_rng(0)
    qkv = [rng.standard_normal((heads, size, dim), dtype=np.float32) for _ in range(3)]
    progress = text.Progress(len(found) * len(SCHEMES) * (repeat + 1), stream)
    medians: dict[str, dict[str, float]] = {}
    for backend in found:
        q, k, v = (backend.asarray(a) for a in qkv)
        medians[backend.name] = {}
        for scheme in SCHEMES:
            times = []
            for _ in range(repeat + 1):
                start = time.perf_counter()
                backend.wait(attention(q, k, v, scheme, causal=not check.described(scheme).bidirectional))
                times.append(time.perf_counter() - start)
                progress.advance(f"{backend.name} {scheme}")
            medians[backend.name][scheme] = 1e3 * statistics.median(times[1:])
    progress.close()
    return {
        "size": size,
        "heads": heads,
        "dim": dim,
        "repeat": repeat,
        "dtype": "float32",
        "median_ms": medians,
        "skipped": skipped,
    }


def render(summary: dict[str, Any], /) -> str:
    """Schemes as rows, backends as columns, median milliseconds in the cells."""
    medians = summary["median_ms"]
    rows = [[scheme] + [f"{medians[b][scheme]:.2f}" for b in medians] for scheme in SCHEMES]
    lines = [
        f"attention(q, k, v, scheme): {summary['heads']} heads, T = K = {summary['size']}, "
        f"D = {summary['dim']}, {summary['dtype']};",
        f"median of {summary['repeat']} runs after one warm-up, in milliseconds.",
        "",
        text.table(["scheme", *medians], rows),
    ]
    lines += [f"skipped {name}: {reason}" for name, reason in summary["skipped"].items()]
    return "\n".join(lines)
