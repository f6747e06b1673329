"""The figures of issue 25 (CPU speed), before and after, side by side in one process.

"before" runs what ``"auto"`` chose before the compiled kernels (torch's fused path where it serves, else the
array-API kernels: ``kernel="torch"`` or ``"array-api"``); "after" runs ``"auto"`` now (``kernel="numba"``
where it serves). Every figure is a ratio of medians of ``--repeats`` runs, the calls of one figure timed
alternately after one warm-up each; float32, B = 1, H = 4, D = 64, two threads, as in the issue. A ratio of two
dnorm calls (doubly / softmax) takes both from the same implementation.

    python scripts/cpu_figures.py [--repeats 7] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import dnorm

F = torch.nn.functional
Call = Callable[[], object]


def timed(calls: list[Call], repeats: int) -> list[float]:
    """Median seconds of each call, the calls alternating, after one warm-up each."""
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats + 1):
        for call, seconds in zip(calls, times, strict=True):
            start = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - start)
    return [statistics.median(t[1:]) for t in times]


def step(run: Callable[..., torch.Tensor], *args: torch.Tensor) -> Call:
    """One training step: forward and ``sum(out).backward()`` on fresh leaves."""

    def go() -> None:
        leaves = [a.detach().requires_grad_() for a in args]
        run(*leaves).sum().backward()

    return go


def figure(name: str, target: str, ours: Callable[[str], Call], anchor: Callable[[str], Call], repeats: int) -> None:
    """One row: ``ours(variant) / anchor(variant)`` for the variants "before" and "after", timed alternately."""
    calls = [ours("before"), ours("after"), anchor("before"), anchor("after")]
    before, after, base_before, base_after = timed(calls, repeats)
    print(
        f"| {name} | {before / base_before:.2f} | {after / base_after:.2f} | {target} | {before * 1e3:.1f} | "
        f"{after * 1e3:.1f} | {base_before * 1e3:.1f} / {base_after * 1e3:.1f} |",
        flush=True,
    )


def figures(repeats: int, only: list[str]) -> None:
    gen = torch.Generator().manual_seed(0)

    def qkv(t: int, heads: tuple[int, int] = (4, 4)) -> list[torch.Tensor]:
        return [torch.randn(1, h, t, 64, generator=gen) for h in (heads[0], heads[1], heads[1])]

    def wanted(name: str) -> bool:
        return not only or any(o in name for o in only)

    print("| figure | before | after | target | before (ms) | after (ms) | anchor before / after (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    q, k, v = qkv(2048)
    fused = {"before": "torch", "after": "auto"}
    kernels = {"before": "array-api", "after": "auto"}
    name = "torch doubly forward / SDPA forward, 2048"
    if wanted(name):
        figure(name, "<= 1.6", lambda w: lambda: dnorm.attention(q, k, v, kernel=fused[w]),
               lambda w: lambda: F.scaled_dot_product_attention(q, k, v), repeats)  # fmt: skip
    name = "torch doubly fwd+bwd / SDPA fwd+bwd, 4096"
    if wanted(name):
        q4, k4, v4 = qkv(4096)
        figure(name, "<= 1.5", lambda w: step(lambda *a: dnorm.attention(*a, kernel=fused[w]), q4, k4, v4),
               lambda w: step(F.scaled_dot_product_attention, q4, k4, v4), repeats)  # fmt: skip
    name = "torch causal doubly fwd+bwd / SDPA causal fwd+bwd, 2048"
    if wanted(name):
        causal = {w: lambda *a, w=w: dnorm.attention(*a, causal=True, kernel=kernels[w]) for w in kernels}
        figure(name, "<= 3.0", lambda w: step(causal[w], q, k, v),
               lambda w: step(lambda *a: F.scaled_dot_product_attention(*a, is_causal=True), q, k, v),
               repeats)  # fmt: skip
    name = "NumPy chunked doubly at 8192, fraction of the matmul rate"
    if wanted(name):
        qn, kn, vn = (x.numpy() for x in qkv(8192))
        out = np.empty((1, 4, 8192, 8192), np.float32)
        kt = np.swapaxes(kn, -1, -2)
        b, a, m = timed([lambda: dnorm.attention(qn, kn, vn, block_size=1024, kernel="array-api"),
                         lambda: dnorm.attention(qn, kn, vn), lambda: np.matmul(qn, kt, out=out)], repeats)  # fmt: skip
        del out
        print(
            f"| {name} | {3 * m / b:.3f} | {3 * m / a:.3f} | >= 0.5 | {b * 1e3:.0f} | {a * 1e3:.0f} | {m * 1e3:.0f} |"
        )
    name = "NumPy doubly / NumPy softmax, 2048"
    if wanted(name):
        qs, ks, vs = (x.numpy() for x in qkv(2048))
        figure(name, "<= 1.3", lambda w: lambda: dnorm.attention(qs, ks, vs, kernel=kernels[w]),
               lambda w: lambda: dnorm.attention(qs, ks, vs, "softmax", kernel=kernels[w]), repeats)  # fmt: skip
    for n_keys in (4096, 32768):
        name = f"torch decode step doubly / softmax step, K = {n_keys}, 8 query heads over 2"
        if not wanted(name):
            continue
        qd, kd, vd = qkv(n_keys, heads=(8, 2))
        _, state = dnorm.decode(qd[..., :-1, :], kd[..., :-1, :], vd[..., :-1, :], None, "doubly", kernel="array-api")
        last = [qd[..., -1:, :], kd, vd]

        def decode(scheme: str, last: list[Any] = last, state: Any = state) -> Callable[[str], Call]:
            carry = state if scheme == "doubly" else None
            return lambda w: lambda: dnorm.decode(*last, carry, scheme, kernel=kernels[w])

        figure(name, "<= 1.3", decode("doubly"), decode("softmax"), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", nargs="*", default=[])
    args = parser.parse_args()
    torch.set_num_threads(2)
    with threadpool_limits(2):
        figures(args.repeats, args.only)


if __name__ == "__main__":
    main()
