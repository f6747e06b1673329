"""Instructions per call of dnorm's own code, counted by valgrind's callgrind: a signal that load does not move.

Each case runs twice under ``valgrind --tool=callgrind`` in a fresh interpreter (imports, one untimed call, then
``--calls`` more or none); the difference of the two totals over ``--calls`` is one call's instructions. One
thread everywhere, ``PYTHONHASHSEED=0`` and the garbage collector off after the first call (a collection runs at
a different call in each tree), so a count repeats closely whatever the machine is doing (measured: within 0.05%
for three cases, 1.7% for the array-API attention, before the collector was turned off); a change of dnorm's
Python layers or kernels moves it. It counts instructions, not time: a change that trades instructions for memory
traffic (or the reverse) shows here differently than in asv.

The compiled CPU kernels run in numba's build for valgrind's CPU: valgrind does not run AVX-512, and without a
cache for that CPU a count compiled them under valgrind (847 s, measured). The ``numba`` cases set
``NUMBA_CPU_NAME=generic``, so a cache built outside valgrind by ``--prepare`` serves them; their counts are
those of that portable build, not of the code users run.

Give source trees (folders holding ``dnorm/``: a worktree, or ``git archive <commit> dnorm | tar -x -C DIR``) to
count each side by side, one column per tree (``PYTHONPATH`` set to it) and the last over the first; without, the
tree of this checkout. A case a tree cannot run (the compiled kernels before they existed) shows ``n/a``.

    python scripts/instruction_counts.py [TREE ...] [--calls 4] [--only NAME ...] [--prepare]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

#: name: (kernel, scheme, entry, size); entry "attention" is (1, 4, size, size), "decode" one query over size keys,
#: 8 query heads over 2, NumPy float32, D = 64; "train" ("train-causal") a (causal) training step on torch,
#: (1, 2, size, 32).
CASES = {
    "causal training step doubly, torch, array-API, 2 x 128 x 128": ("array-api", "doubly", "train-causal", 128),
    "training step hybrid, torch, array-API, 2 x 128 x 128": ("array-api", "hybrid", "train", 128),
    "attention doubly, array-API kernels, 4 x 128 x 128": ("array-api", "doubly", "attention", 128),
    "decode step doubly, array-API kernels, K = 512": ("array-api", "doubly", "decode", 512),
    "attention doubly, compiled kernels (generic CPU), 4 x 128 x 128": ("numba", "doubly", "attention", 128),
    "decode step doubly, compiled kernels (generic CPU), K = 512": ("numba", "doubly", "decode", 512),
}

WORKLOAD = """
import gc, sys
import numpy as np
import dnorm
calls, kernel, scheme, entry, size = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
rng = np.random.default_rng(0)
if entry.startswith("train"):
    import torch
    torch.set_num_threads(1)
    q, k, v = (torch.from_numpy(rng.standard_normal((1, 2, size, 32), dtype=np.float32)).requires_grad_()
               for _ in range(3))
    causal = entry == "train-causal"
    run = lambda: dnorm.attention(q, k, v, scheme, causal=causal, kernel=kernel).sum().backward()
elif entry == "attention":
    q, k, v = (rng.standard_normal((1, 4, size, 64), dtype=np.float32) for _ in range(3))
    run = lambda: dnorm.attention(q, k, v, scheme, kernel=kernel)
else:
    q = rng.standard_normal((1, 8, 1, 64), dtype=np.float32)
    k, v = (rng.standard_normal((1, 2, size, 64), dtype=np.float32) for _ in range(2))
    state = (rng.standard_normal((1, 8, size - 1), dtype=np.float32), np.ones((1, 8, size - 1), np.float32))
    run = lambda: dnorm.decode(q, k, v, state, scheme, kernel=kernel)
run()
gc.disable()  # a collection runs when allocations cross a threshold: at a different call in each tree
for _ in range(calls):
    run()
"""


def environment(kernel: str, tree: str) -> dict[str, str]:
    threads = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"), "1")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), PYTHONHASHSEED="0", **threads)
    if kernel == "numba":
        env["NUMBA_CPU_NAME"] = "generic"
    return env


def instructions(calls: int, case: tuple[str, str, str, int], script: str, tree: str) -> int:
    """Total instructions of one run of the workload on ``tree`` under callgrind."""
    with tempfile.TemporaryDirectory() as out:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out", sys.executable,
                   "-P", script, str(calls), *map(str, case)]  # fmt: skip
        run = subprocess.run(command, env=environment(case[0], tree), capture_output=True, text=True, check=True)
    match = re.search(r"Collected : (\d+)", run.stderr)
    if match is None:
        raise RuntimeError(run.stderr[-2000:])
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("trees", nargs="*", default=[os.path.dirname(os.path.dirname(os.path.abspath(__file__)))])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--prepare", action="store_true", help="build the numba cases' cache outside valgrind")
    args = parser.parse_args()
    # -P and a directory of its own: with a busy directory such as /tmp on sys.path, the import system lists it
    # again whenever its mtime changed, and the count followed what other processes did there (800 000 apart)
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "workload.py")
        with open(script, "w") as file:
            file.write(WORKLOAD)
        table(args, script)


def table(args: argparse.Namespace, script: str) -> None:
    ratio = len(args.trees) > 1
    print(f"| case | {' | '.join(args.trees)} |{' last / first |' * ratio}", flush=True)
    print("| --- " * (len(args.trees) + 1 + ratio) + "|", flush=True)
    for name, case in CASES.items():
        if args.only and not any(o in name for o in args.only):
            continue
        counts = [per_call(args, case, script, tree) for tree in args.trees]
        cells = [f"{n:,.0f}" if n else "n/a" for n in counts]
        if ratio:
            cells.append(f"{counts[-1] / counts[0]:.4f}" if counts[0] and counts[-1] else "n/a")
        print(f"| {name} | {' | '.join(cells)} |", flush=True)


def per_call(args: argparse.Namespace, case: tuple[str, str, str, int], script: str, tree: str) -> float | None:
    """One call's instructions on ``tree`` (None where the tree cannot run the case)."""
    try:
        if args.prepare and case[0] == "numba":
            prepare = [sys.executable, "-P", script, "0", *map(str, case)]
            subprocess.run(prepare, env=environment("numba", tree), capture_output=True, text=True, check=True)
        return (instructions(args.calls, case, script, tree) - instructions(0, case, script, tree)) / args.calls
    except subprocess.CalledProcessError as failed:
        last = (failed.stderr or "").strip().splitlines()[-1:]
        print(f"{tree}: {case} failed: {last}", file=sys.stderr, flush=True)
        return None


if __name__ == "__main__":
    main()
