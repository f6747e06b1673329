"""Time the forms of the running statistic side by side: the two-level array-API scan against each fused scan.

Run from the repository root: ``python scripts/scan_forms.py [--rows 256] [--keys 2048]``. For one float32 block
of ``(1, 4, rows, keys)`` scores it times the biased scores ``S - C`` of the strictly causal statistic (spec
DEF-TWO-LEVEL-SCAN, DEF-FUSED-SCAN) by the two-level scan and by the namespace's own scan in float64 (NumPy's
``logaddexp.accumulate``, ``torch.logcumsumexp``, JAX's ``lax.cumlogsumexp`` under ``jit``), then the whole causal
forward pass of torch at ``T = K = keys`` with either form. Medians of interleaved runs, two threads. It decides
where ``dnorm._kernels._delegation.native_scan`` delegates: only where the fused scan is faster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np


def _median_ms(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median milliseconds of each function, the functions alternating, after one warm-up run each."""
    for f in functions.values():
        f()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, f in functions.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def _row(label: str, result: dict[str, float]) -> None:
    two_level, fused = result["two-level"], result["fused"]
    print(f"| {label} | {two_level:.1f} | {fused:.1f} | {fused / two_level:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--keys", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import array_api_compat.numpy as np_xp

    from dnorm._kernels.bias import running

    block = np.random.default_rng(0).standard_normal((1, 4, args.rows, args.keys), dtype=np.float32)

    def numpy_fused() -> object:
        wide = block.astype(np.float64)
        return (wide - np.logaddexp.accumulate(wide, axis=-2)).astype(np.float32)

    print(f"block (1, 4, {args.rows}, {args.keys}) float32, ms | two-level | fused (float64) | fused / two-level")
    print("| --- | --- | --- | --- |")
    numpy_forms = {"two-level": lambda: running(block, None, xp=np_xp), "fused": numpy_fused}
    _row("NumPy", _median_ms(numpy_forms, args.repeats))
    try:
        import array_api_compat.torch as torch_xp
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(2)
        t = torch.from_numpy(block)
        torch_forms = {
            "two-level": lambda: running(t, None, xp=torch_xp),
            "fused": lambda: running(t, None, native=True, xp=torch_xp),
        }
        _row("torch, CPU", _median_ms(torch_forms, args.repeats))
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        jax = None
    if jax is not None:
        jax.config.update("jax_enable_x64", True)
        j = jnp.asarray(block)
        pairs = jax.jit(lambda a: running(a, None, xp=jnp)[0])
        fused = jax.jit(
            lambda a: (a.astype(jnp.float64) - jax.lax.cumlogsumexp(a.astype(jnp.float64), axis=a.ndim - 2)).astype(
                a.dtype
            )
        )
        jax_forms = {"two-level": lambda: pairs(j).block_until_ready(), "fused": lambda: fused(j).block_until_ready()}
        _row("JAX, jit, CPU", _median_ms(jax_forms, args.repeats))
    if torch is not None:
        _causal_forward(torch, torch_xp, args.keys, args.repeats)


def _causal_forward(torch: object, torch_xp: object, n: int, repeats: int) -> None:
    """The whole strictly causal doubly forward pass (the kernels' blocks), with either form of the statistic."""
    from dnorm._kernels import attention as kernels
    from dnorm._kernels.budget import CAUSAL_BYTES, MIN_ROWS, rows_within
    from dnorm._kernels.scores import block_bounds

    gen = torch.Generator().manual_seed(0)  # type: ignore[attr-defined]
    q, k, v = (torch.randn(1, 4, n, 64, generator=gen) for _ in range(3))  # type: ignore[attr-defined]
    alpha = torch.tensor(0.5)  # type: ignore[attr-defined]
    rows = block_bounds(n, max(MIN_ROWS, rows_within(CAUSAL_BYTES, 4 * n * 4)))

    def forward(native: bool) -> Callable[[], object]:
        options = kernels.BlockedOptions("doubly", True, 1, 0.125, rows, False, rows, native_scan=native)
        return lambda: kernels.infer(q, k, v, None, alpha, None, options=options, xp=torch_xp)

    result = _median_ms({"two-level": forward(False), "fused": forward(True)}, repeats)
    _row(f"torch causal doubly forward, T = K = {n}", result)


if __name__ == "__main__":
    main()
