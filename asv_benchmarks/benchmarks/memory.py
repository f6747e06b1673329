"""Peak memory of doubly on NumPy at T = K = LARGE_SIZE, materialized against chunked.

``peakmem_`` measures the whole benchmark process (the interpreter, the suite's imports and the
inputs as well); ``track_chunked_peak_rss`` runs ``peak_rss_child.py`` in a fresh interpreter that
imports only numpy and dnorm, the process of the issue's target (below 400 MiB).
"""

import os
import subprocess
import sys
from pathlib import Path

import dnorm

from . import common

#: The materialized path holds about four (T, K) float32 matrices at its peak; ask for some margin.
MATERIALIZED_BYTES_PER_SCORE = 4 * 4 * 1.1


class DoublyPeakMemory:
    params = (["materialized", "chunked"],)
    param_names = ("path",)
    timeout = 900

    def setup(self, path: str) -> None:
        size = common.LARGE_SIZE
        self.rows = size if path == "materialized" else common.CHUNK_ROWS
        if path == "materialized":
            _skip_unless_free(MATERIALIZED_BYTES_PER_SCORE * common.HEADS * size * size)
        self.args = common.qkv(size)

    def peakmem_doubly(self, path: str) -> None:
        dnorm.attention(*self.args, "doubly", block_size=self.rows)


def _skip_unless_free(needed: float) -> None:
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if needed > free:
        msg = f"needs about {needed / 2**30:.1f} GiB of free memory, {free / 2**30:.1f} GiB free"
        raise NotImplementedError(msg)


def track_chunked_peak_rss() -> float:
    """Peak resident memory, MiB, of a fresh process running chunked doubly on NumPy."""
    child = Path(__file__).with_name("peak_rss_child.py")
    sizes = (common.LARGE_SIZE, common.HEADS, common.DIM, common.CHUNK_ROWS or 0)
    argv = [sys.executable, str(child), *map(str, sizes)]
    return float(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)


track_chunked_peak_rss.unit = "MiB"
track_chunked_peak_rss.timeout = 900
