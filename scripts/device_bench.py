"""The device check's benchmarks: dnorm against torch's scaled_dot_product_attention on the same CUDA tensors.

Prints one Markdown table: forward, forward and backward, and peak GPU memory of doubly, causal doubly and
softmax at T = K = 8192 and 32768 (batch 1, 16 heads, D = 128; bf16 and fp32), one decoding step against a cache
of the same length (8 query heads over 2 key heads, D = 64), and CuPy's doubly (the array-API kernels) against
torch's on the same data. Without a CUDA device it runs every row once at T = K = 256 on the CPU (a smoke run of
this script, no figures) and says so. Medians of a few timed calls after a warm-up, events synchronized.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F

import dnorm

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
SIZES = (8192, 32768) if CUDA else (256,)
HEADS, DIM = (16, 128) if CUDA else (2, 16)
REPEATS = 5 if CUDA else 1


def _time(step) -> float:
    """Median seconds of ``step()`` after one warm-up call."""
    step()
    times = []
    for _ in range(REPEATS):
        if CUDA:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if CUDA:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak(step) -> float:
    """Peak GPU memory (GiB) of one ``step()``; NaN without CUDA."""
    if not CUDA:
        step()
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def _inputs(size: int, dtype: torch.dtype, grad: bool):
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    shape = (1, HEADS, size, DIM)
    return [torch.randn(shape, generator=gen, device=DEVICE, dtype=dtype).requires_grad_(grad) for _ in range(3)]


def attention_rows():
    for size in SIZES:
        for dtype in (torch.bfloat16, torch.float32):
            for name, scheme, causal in (("doubly", "doubly", False), ("causal doubly", "doubly", True),
                                         ("softmax", "softmax", False)):  # fmt: skip

                def ours(q, k, v, scheme=scheme, causal=causal):
                    return dnorm.attention(q, k, v, scheme, causal=causal)

                def theirs(q, k, v, causal=causal):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                with torch.no_grad():
                    args = _inputs(size, dtype, False)
                    fwd = [_time(lambda f=f, a=args: f(*a)) for f in (ours, theirs)]
                args = _inputs(size, dtype, True)
                steps = [lambda f=f, a=args: f(*a).float().sum().backward() for f in (ours, theirs)]
                train = [_time(s) for s in steps]
                memory = [_peak(s) for s in steps]
                yield (f"{name} T=K={size} {str(dtype)[6:]}", *fwd, *train, *memory)
                del args, steps


def decode_rows():
    for size in SIZES:
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        q = torch.randn(1, 8, 1, 64, generator=gen, device=DEVICE)
        k, v = (torch.randn(1, 2, size, 64, generator=gen, device=DEVICE) for _ in range(2))
        state = dnorm.DecodeState(torch.zeros(1, 8, size - 1, device=DEVICE), torch.ones(1, 8, size - 1, device=DEVICE))
        with torch.no_grad():
            ours = _time(lambda q=q, k=k, v=v, s=state: dnorm.decode(q, k, v, s))
            theirs = _time(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
        yield f"decode step, doubly, K={size}", ours, theirs


def cupy_rows():
    try:
        import cupy
    except ImportError:
        yield "cupy", "not installed"
        return
    if not CUDA or not cupy.cuda.is_available():
        yield "cupy", "no CUDA device"
        return
    for size in SIZES:
        args = _inputs(size, torch.float32, False)
        arrays = [cupy.from_dlpack(x.detach()) for x in args]
        with torch.no_grad():
            ours = _time(lambda a=arrays: (dnorm.attention(*a, "doubly"), cupy.cuda.Device().synchronize()))
            torch_doubly = _time(lambda a=args: dnorm.attention(*a, "doubly"))
        yield f"cupy doubly / torch doubly, fp32, T=K={size}", ours, torch_doubly


def main() -> None:
    where = torch.cuda.get_device_name() if CUDA else "no CUDA device: a smoke run on the CPU at T = K = 256"
    print(f"# dnorm device check: {where}; torch {torch.__version__}\n")
    print("| case | dnorm fwd (ms) | SDPA fwd (ms) | ratio | dnorm fwd+bwd (ms) | SDPA fwd+bwd (ms) | ratio "
          "| dnorm peak (GiB) | SDPA peak (GiB) | ratio |")  # fmt: skip
    print("| --- |" + " --- |" * 9)
    for case, f1, f2, t1, t2, m1, m2 in attention_rows():
        print(f"| {case} | {f1 * 1e3:.2f} | {f2 * 1e3:.2f} | {f1 / f2:.2f} | {t1 * 1e3:.2f} | {t2 * 1e3:.2f} "
              f"| {t1 / t2:.2f} | {m1:.2f} | {m2:.2f} | {m1 / m2:.2f} |")  # fmt: skip
        sys.stdout.flush()
    print("\n| case | dnorm (ms) | anchor (ms) | ratio |\n| --- | --- | --- | --- |")
    for row in (*decode_rows(), *cupy_rows()):
        if len(row) == 2:
            print(f"| {row[0]} | {row[1]} | | |")
        else:
            print(f"| {row[0]} | {row[1] * 1e3:.3f} | {row[2] * 1e3:.3f} | {row[1] / row[2]:.2f} |")


if __name__ == "__main__":
    main()
