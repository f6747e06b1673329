"""The figures of issue 25 (CPU speed), before and after, side by side in one process.

"before" runs what ``"auto"`` chose before the compiled kernels (torch's fused path where it serves, else the
array-API kernels: ``kernel="torch"`` or ``"array-api"``); "after" runs ``"auto"`` now (``kernel="numba"``
where it serves). Each of ``--repeats`` rounds times the four calls of a row back to back (ours and the anchor,
before and after; the order rotates from round to round) after two untimed calls of each; a ratio is the median
of the rounds' ratios, a time the median of the rounds' times. float32, B = 1, H = 4, D = 64, two threads, as in
the issue. A ratio of two dnorm calls (doubly / softmax) takes both from the same implementation.

    PYTHONPATH=. python scripts/cpu_figures.py [--repeats 7] [--only NAME ...]

(``PYTHONPATH=.``: this checkout's ``dnorm``, whatever an editable install points at; the first line printed
names the tree measured.)
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


def timed(calls: list[Call], repeats: int) -> list[list[float]]:
    """Seconds of each call in each round: two untimed calls first, then ``repeats`` rounds, the order rotating."""
    for _ in range(2):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in calls]
    for round_ in range(repeats):
        for i in range(len(calls)):
            side = (i + round_) % len(calls)
            start = time.perf_counter()
            calls[side]()
            times[side].append(time.perf_counter() - start)
    return times


def ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over the rounds of one call's time over another's, both taken in the same round."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def step(run: Callable[..., torch.Tensor], *args: torch.Tensor) -> Call:
    """One training step: forward and ``sum(out).backward()`` on fresh leaves."""

    def go() -> None:
        leaves = [a.detach().requires_grad_() for a in args]
        run(*leaves).sum().backward()

    return go


def figure(name: str, target: str, ours: Callable[[str], Call], anchor: Callable[[str], Call], repeats: int) -> None:
    """One row: ``ours(variant) / anchor(variant)`` for the variants "before" and "after", timed in rounds."""
    before, after, base_before, base_after = timed([ours("before"), ours("after"), anchor("before"), anchor("after")],
                                                   repeats)  # fmt: skip
    ms = [statistics.median(t) * 1e3 for t in (before, after, base_before, base_after)]
    print(
        f"| {name} | {ratio(before, base_before):.2f} | {ratio(after, base_after):.2f} | {target} | {ms[0]:.1f} | "
        f"{ms[1]:.1f} | {ms[2]:.1f} / {ms[3]:.1f} |",
        flush=True,
    )


def figures(repeats: int, only: list[str]) -> None:
    gen = torch.Generator().manual_seed(0)

    def qkv(t: int, heads: tuple[int, int] = (4, 4)) -> list[torch.Tensor]:
        return [torch.randn(1, h, t, 64, generator=gen) for h in (heads[0], heads[1], heads[1])]

    def wanted(name: str) -> bool:
        return not only or any(o in name for o in only)

    print(f"dnorm from {dnorm.__file__.rsplit('/', 2)[0]}\n")
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
        ms = [statistics.median(t) * 1e3 for t in (b, a, m)]
        print(
            f"| {name} | {3 * ratio(m, b):.3f} | {3 * ratio(m, a):.3f} | >= 0.5 | {ms[0]:.0f} | {ms[1]:.0f} | "
            f"{ms[2]:.0f} |"
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
        # the state of the earlier keys, as the asv benchmark draws it (a step's time does not depend on its values)
        state = dnorm.DecodeState(torch.randn(1, 8, n_keys - 1, generator=gen), torch.ones(1, 8, n_keys - 1))
        last = [qd[..., -1:, :], kd, vd]

        def decode(scheme: str, last: list[Any] = last, state: Any = state) -> Callable[[str], Call]:
            carry = state if scheme == "doubly" else None
            return lambda w: lambda: dnorm.decode(*last, carry, scheme, kernel=kernels[w])

        figure(name, "<= 1.3", decode("doubly"), decode("softmax"), repeats)
    name = "JAX jit(grad) doubly / jax.nn.dot_product_attention, 4096"
    if wanted(name):
        jax_figure(name, repeats)


def jax_figure(name: str, repeats: int) -> None:
    """JAX takes no compiled CPU kernels: one ratio, the same code before and after."""
    import jax
    import jax.numpy as jnp

    q, k, v = (jnp.asarray(np.random.default_rng(i).standard_normal((1, 4, 4096, 64), dtype=np.float32))
               for i in range(3))  # fmt: skip

    def ours(q: Any, k: Any, v: Any) -> Any:
        return jnp.sum(dnorm.attention(q, k, v, "doubly"))

    def theirs(q: Any, k: Any, v: Any) -> Any:
        return jnp.sum(jax.nn.dot_product_attention(*(jnp.swapaxes(x, 1, 2) for x in (q, k, v))))

    steps = [jax.jit(jax.grad(f, argnums=(0, 1, 2))) for f in (ours, theirs)]
    a, b = timed([lambda s=s: jax.block_until_ready(s(q, k, v)) for s in steps], repeats)
    print(f"| {name} | same code | {ratio(a, b):.2f} | <= 1.1 | | {statistics.median(a) * 1e3:.0f} | "
          f"{statistics.median(b) * 1e3:.0f} |", flush=True)  # fmt: skip


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
