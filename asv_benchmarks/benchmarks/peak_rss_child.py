"""Print the peak resident memory, in MiB, of chunked doubly on NumPy: a process that imports numpy and dnorm only.

Arguments: T = K, heads, D, and query rows per block (0 for dnorm's automatic choice).
"""

import resource
import sys

import numpy as np

import dnorm


def main(size: int, heads: int, dim: int, rows: int) -> None:
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, heads, size, dim), dtype=np.float32) for _ in range(3))
    dnorm.attention(q, k, v, "doubly", block_size=rows or None)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
