"""The device check's benchmarks: dnorm's Triton kernels against torch's SDPA (flash) and FlexAttention, on CUDA.

Prints Markdown tables with the targets of the GPU issue beside the figures: bf16, batch times length 32k tokens,
16 heads, D = 128, T = K from 1k to 32k; the forward, forward and backward, causal; FlexAttention composing doubly
as a swapped call whose log-sum-exp is ``c`` and a ``score_mod`` adding ``-c``; the peak GPU memory of a training
step at T = 32k; decoding steps (one query, 8 query heads over 2, D = 128) against caches of up to 128k keys; and
CuPy arrays through DLPack against torch tensors. Medians of a few timed calls after a warm-up, synchronized;
the Triton kernels autotune (dnorm._triton.configs) in the first warm-up of each kind, at its smallest T.
Without a CUDA device it runs every row once at tiny sizes on the CPU, the Triton kernels through Triton's
interpreter (a smoke run of this script: no figures), and says so.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

CUDA = torch.cuda.is_available()
if not CUDA:  # the smoke run: the same kernels through Triton's interpreter, set before they are imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F  # noqa: E402

import dnorm  # noqa: E402

DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.bfloat16 if CUDA else torch.float32
TOKENS, HEADS, DIM = (32768, 16, 128) if CUDA else (64, 2, 16)
LENGTHS = (1024, 4096, 8192, 32768) if CUDA else (32,)
FLEX_LENGTH = 8192 if CUDA else 32
CACHES = (8192, 32768, 131072) if CUDA else (48,)
REPEATS = 5 if CUDA else 1

TARGETS = {
    "fwd": ("doubly forward / SDPA flash forward, T = 8192", "<= 1.6"),
    "train": ("doubly fwd+bwd / SDPA flash fwd+bwd", "<= 1.8"),
    "causal": ("causal doubly fwd+bwd / SDPA causal fwd+bwd", "<= 2.0"),
    "decode": ("decode step doubly / SDPA decode step, K = 32k", "<= 1.2"),
    "flex": ("doubly / FlexAttention-composed doubly, fwd+bwd", "<= 0.8"),
    "memory": ("peak memory, doubly fwd+bwd / SDPA's, T = 32k", "<= 1.2"),
}


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def _time(step: Callable[[], object]) -> float:
    """Median seconds of ``step()`` after one warm-up call."""
    step()
    times = []
    for _ in range(REPEATS):
        _sync()
        start = time.perf_counter()
        step()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak(step: Callable[[], object]) -> float:
    """Peak GPU memory (GiB) of one ``step()``; NaN without CUDA."""
    if not CUDA:
        step()
        return float("nan")
    _sync()
    torch.cuda.reset_peak_memory_stats()
    step()
    _sync()
    return torch.cuda.max_memory_allocated() / 2**30


def _inputs(batch: int, length: int, grad: bool, *, kv_heads: int = HEADS, queries: int | None = None) -> list:
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    shapes = ((batch, HEADS, queries or length, DIM), (batch, kv_heads, length, DIM), (batch, kv_heads, length, DIM))
    return [torch.randn(s, generator=gen, device=DEVICE, dtype=DTYPE).requires_grad_(grad) for s in shapes]


def _flex() -> Callable[..., object] | None:
    """FlexAttention, compiled on CUDA (eager on the CPU); None where torch has none."""
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        return None
    return torch.compile(flex_attention, dynamic=False) if CUDA else flex_attention


def _flex_doubly(flex: Callable[..., object]) -> Callable[..., object]:
    """Doubly as FlexAttention composes it: ``c`` the swapped call's log-sum-exp, then a ``score_mod`` adding ``-c``."""

    def doubly(q, k, v):
        _, c = flex(k, q, q, return_lse=True)

        def minus_c(score, b, h, q_idx, kv_idx):
            return score - c[b, h, kv_idx]

        return flex(q, k, v, score_mod=minus_c)

    return doubly


def _step(attend: Callable[..., object], args: list, grad: bool) -> Callable[[], object]:
    if grad:
        return lambda: attend(*args).float().sum().backward()

    def forward() -> object:
        with torch.no_grad():
            return attend(*args)

    return forward


def attention_rows():
    """(case, triton s, sdpa s) for the forward, the training step and causal training at every length."""
    for length in LENGTHS:
        batch = max(1, TOKENS // length)
        for case, causal, grad in (("fwd", False, False), ("train", False, True), ("causal", True, True)):
            args = _inputs(batch, length, grad)

            def ours(q, k, v, causal=causal):
                return dnorm.attention(q, k, v, "doubly", causal=causal, kernel="triton")

            def theirs(q, k, v, causal=causal):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

            times = [_time(_step(f, args, grad)) for f in (ours, theirs)]
            yield case, f"T = K = {length}, B = {batch}", *times
            del args


def memory_row():
    length = LENGTHS[-1]
    args = _inputs(max(1, TOKENS // length), length, True)
    ours = _peak(_step(lambda q, k, v: dnorm.attention(q, k, v, "doubly", kernel="triton"), args, True))
    theirs = _peak(_step(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), args, True))
    return f"T = K = {length}", ours, theirs


def flex_row():
    flex = _flex()
    if flex is None:
        return None
    args = _inputs(max(1, TOKENS // FLEX_LENGTH), FLEX_LENGTH, True)
    try:
        theirs = _time(_step(_flex_doubly(flex), args, True))
    except Exception as error:  # FlexAttention missing a feature on this build: said, not fatal
        return f"T = K = {FLEX_LENGTH}: FlexAttention failed ({type(error).__name__})", float("nan"), float("nan")
    ours = _time(_step(lambda q, k, v: dnorm.attention(q, k, v, "doubly", kernel="triton"), args, True))
    return f"T = K = {FLEX_LENGTH}", ours, theirs


def decode_rows():
    for size in CACHES:
        q, k, v = _inputs(1, size, False, kv_heads=2, queries=1)
        state = dnorm.DecodeState(*(torch.zeros(1, HEADS, size - 1, device=DEVICE) for _ in range(2)))
        state = dnorm.DecodeState(state.max, state.sum + 1)
        with torch.no_grad():
            ours = _time(lambda q=q, k=k, v=v, s=state: dnorm.decode(q, k, v, s, kernel="triton"))
            theirs = _time(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
        yield f"K = {size}", ours, theirs


def cupy_row():
    try:
        import cupy
    except ImportError:
        return "cupy not installed", None, None
    if not CUDA:
        return "no CUDA device", None, None
    args = _inputs(max(1, TOKENS // 8192), 8192, False)
    arrays = [cupy.from_dlpack(x.detach()) for x in args]
    ours = _time(lambda a=arrays: (dnorm.attention(*a, "doubly"), cupy.cuda.Device().synchronize()))
    theirs = _time(_step(lambda q, k, v: dnorm.attention(q, k, v, "doubly"), args, False))
    return "T = K = 8192", ours, theirs


def _ratio_row(target: str, case: str, ours: float, theirs: float) -> str:
    what, bound = TARGETS[target]
    return f"| {what} | {case} | {ours * 1e3:.2f} | {theirs * 1e3:.2f} | {ours / theirs:.2f} | {bound} |"


def main() -> None:
    where = torch.cuda.get_device_name() if CUDA else "no CUDA device: a smoke run on the CPU (interpreter), no figures"
    print(f"# dnorm device check: {where}; torch {torch.__version__}; {str(DTYPE)[6:]}, {HEADS} heads, D = {DIM}\n")
    print("| figure | case | dnorm triton (ms) | anchor (ms) | ratio | target |\n| --- | --- | --- | --- | --- | --- |")
    for case, label, ours, theirs in attention_rows():
        print(_ratio_row(case, label, ours, theirs))
        sys.stdout.flush()
    flex = flex_row()
    if flex is not None:
        print(_ratio_row("flex", *flex))
    for label, ours, theirs in decode_rows():
        print(_ratio_row("decode", label, ours, theirs))
    label, ours, theirs = memory_row()
    what, bound = TARGETS["memory"]
    print(f"| {what} | {label} | {ours:.2f} GiB | {theirs:.2f} GiB | {ours / theirs:.2f} | {bound} |")
    label, ours, theirs = cupy_row()
    if ours is None:
        print(f"| CuPy doubly / torch doubly (DLPack) | {label} | | | | |")
    else:
        print(f"| CuPy doubly / torch doubly (DLPack) | {label} | {ours * 1e3:.2f} | {theirs * 1e3:.2f} "
              f"| {ours / theirs:.2f} | |")  # fmt: skip


if __name__ == "__main__":
    main()
