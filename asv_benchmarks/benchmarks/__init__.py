"""dnorm's asv benchmarks. Two threads everywhere, set here before any module of the suite imports numpy or numba."""

import os

THREADS = 2

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_name] = str(THREADS)
