"""The figures README.md gives for its training example: peak RSS of each step, and its time as a ratio to SDPA's.

    python scripts/readme_figures.py              # T = K = 16384, the README's shapes, 3 rounds (a few minutes)
    python scripts/readme_figures.py --size 2048  # a quick look

Each step (the forward pass and ``sum(out).backward()`` of ``(1, 4, T, 64)`` float32 torch tensors, two threads) runs
in a fresh interpreter (``asv_benchmarks/benchmarks/training_child.py``), so its peak RSS is that of the step with
torch's import (about 200 MiB). dnorm's step and torch's ``scaled_dot_product_attention`` step (the anchor, causal
against ``is_causal=True``) alternate, round after round, so both meet the same noise; a ratio is the median over
the rounds of dnorm's time over the anchor's in the same round. Absolute times are printed too: they describe this
machine, the ratios are the figures to compare. The causal step runs once more with
``MALLOC_MMAP_THRESHOLD_=1048576`` (glibc then returns freed large blocks, so the peak RSS follows live memory).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = Path(__file__).resolve().parent.parent / "asv_benchmarks" / "benchmarks" / "training_child.py"
HEADS, DIM = 4, 64
CASES = (("doubly", "torch-doubly", "torch-sdpa"), ("causal doubly", "torch-causal", "torch-sdpa-causal"))


def step(what: str, size: int, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one training step in a fresh interpreter."""
    argv = [sys.executable, str(CHILD), what, str(size), str(HEADS), str(DIM)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})})
    rss, seconds = out.stdout.split()
    return float(rss), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16384, help="T = K (default 16384, the README's)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = parser.parse_args()
    print(f"training step, (1, {HEADS}, {args.size}, {DIM}) float32, torch CPU, 2 threads; {args.rounds} rounds")
    print("| step | peak RSS (MiB) | anchor's peak RSS (MiB) | time / anchor's time | seconds, anchor's seconds |")
    print("| --- | --- | --- | --- | --- |")
    for name, ours, anchor in CASES:
        runs = [(step(ours, args.size), step(anchor, args.size)) for _ in range(args.rounds)]
        ratio = statistics.median(mine[1] / theirs[1] for mine, theirs in runs)
        rss, anchor_rss = max(m[0] for m, _ in runs), max(t[0] for _, t in runs)
        seconds = ", ".join(f"{m[1]:.1f} / {t[1]:.1f}" for m, t in runs)
        print(f"| {name} | {rss:.0f} | {anchor_rss:.0f} | {ratio:.2f} | {seconds} |")
    rss, _ = step("torch-causal", args.size, {"MALLOC_MMAP_THRESHOLD_": "1048576"})
    print(f"causal doubly with MALLOC_MMAP_THRESHOLD_=1048576: peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
